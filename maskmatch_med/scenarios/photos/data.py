"""Training batches of natural images: decode, random rescale / crop / flip on the device, normalise.

UniMatch's weak pipeline per sample: rescale by a factor uniform in `rescale_range` (0.5-2.0), pad to
the crop size (image with 0 = black, mask with 255 = ignore; right and bottom), random crop, horizontal
flip with probability 0.5, ImageNet normalisation. Datasets the size of VOC-aug (10582 images) or
Cityscapes (2975 at 2048x1024) are read from disk per batch, decoded by a small thread pool (PIL
releases the GIL while decoding); the resampling runs on the training device.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from maskmatch_med.data.natural import IGNORE_INDEX, Sample, read_image, read_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8-valued (B, 3, H, W) RGB -> ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """The inverse of normalise, to [0, 1] RGB (float)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images * std + mean


def rescale_crop_flip(
    image: torch.Tensor, mask: torch.Tensor, crop: int, scale: float, offset: tuple[float, float], flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: (3, H, W) float pixels and (H, W) long mask -> (3, crop, crop) and (crop, crop).

    `offset` in [0, 1)^2 picks the crop's top-left corner among the valid positions.
    """
    h, w = image.shape[1:]
    size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    if size != (h, w):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    h, w = image.shape[1:]
    top, left = int(offset[0] * (h - crop + 1)), int(offset[1] * (w - crop + 1))
    image, mask = image[:, top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]
    if flip:
        image, mask = image.flip(-1), mask.flip(-1)
    return image, mask


class NaturalImageSource:
    """A BatchSource (engine/training_data.py) over image files.

    Labeled: (images, masks) with 255 on ignored and padded pixels. Unlabeled: (images, ignore map)
    where the map is 255 on padding and 0 elsewhere, so that the step can leave padding out of the
    pseudo-label losses as UniMatch does.
    """

    def __init__(self, samples: list[Sample], with_labels: bool, crop: int, rescale_range: tuple[float, float],
                 num_classes: int, device: torch.device, threads: int | None = None):
        self.samples, self.with_labels, self.crop = samples, with_labels, crop
        self.rescale_range, self.num_classes, self.device = tuple(rescale_range), num_classes, device
        self.threads = threads or min(8, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        sample = self.samples[index]
        image = read_image(sample.image)
        mask = read_mask(sample.mask, self.num_classes) if self.with_labels else None
        return image, mask

    def _decode(self, indices: list[int]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if self.threads <= 1 or len(indices) == 1:
            return [self._load(i) for i in indices]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
        return list(self._pool.map(self._load, indices))

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        indices = [int(i) for i in index.tolist()]
        decoded = self._decode(indices)
        u = torch.rand((len(indices), 4), generator=generator, device=generator.device).cpu()
        lo, hi = self.rescale_range
        images, masks = [], []
        for (array, mask), draw in zip(decoded, u.tolist()):
            image = torch.from_numpy(array).to(self.device).permute(2, 0, 1).float()
            if mask is None:
                mask_t = torch.zeros(image.shape[1:], dtype=torch.long, device=self.device)
            else:
                mask_t = torch.from_numpy(mask).to(self.device).long()
            scale = lo + (hi - lo) * draw[0]
            image, mask_t = rescale_crop_flip(image, mask_t, self.crop, scale, (draw[1], draw[2]), draw[3] < 0.5)
            images.append(image)
            masks.append(mask_t)
        images_t = torch.stack(images)
        # Normalising after the zero padding makes padded pixels black, as in UniMatch.
        return normalise(images_t), torch.stack(masks)

    def __del__(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
