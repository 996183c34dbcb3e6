"""3D training data: whole volumes on the training device, one random patch per sample per batch.

Labeled patches are centred on a foreground voxel with probability pos / (pos + neg) and on a
background voxel otherwise, then shifted to lie inside the volume (MONAI RandCropByPosNegLabel's
rule); unlabeled patches are uniform. Volumes smaller than the patch are zero-padded once
(SpatialPad), so every crop has the patch size. Draws use the trainer's generator, so a resumed run
crops exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import torch
from monai.transforms import SpatialPad

from maskmatch_med.config import VolumeConfig
from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.scenarios.volumes.grid import prepare_image, to_network


class PatchSource:
    def __init__(self, images: list[torch.Tensor], labels: list[torch.Tensor] | None, patch_size, pos: float = 1.0, neg: float = 1.0):
        self.images, self.labels = images, labels
        self.patch = tuple(int(p) for p in patch_size)
        self.pos_prob = pos / (pos + neg)
        # Foreground voxel indices per volume (small); background centres are drawn by rejection.
        self.foreground = [torch.nonzero(label.flatten()).flatten() for label in labels] if labels is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def _centre(self, i: int, generator: torch.Generator) -> list[int]:
        shape = self.images[i].shape[1:]
        u = torch.rand(2, generator=generator)
        flat = None
        if self.foreground is not None:
            fg = self.foreground[i]
            if float(u[0]) < self.pos_prob and len(fg):
                flat = int(fg[int(u[1] * len(fg)) % len(fg)])
            else:
                label = self.labels[i].flatten()
                for _ in range(20):  # background is most of a volume: a few draws find one
                    candidate = int(torch.randint(label.numel(), (1,), generator=generator))
                    if int(label[candidate]) == 0:
                        flat = candidate
                        break
        if flat is None:
            return [int(torch.randint(s, (1,), generator=generator)) for s in shape]
        centre = []
        for s in reversed(shape):
            centre.append(flat % s)
            flat //= s
        return centre[::-1]

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        images, labels = [], []
        for i in index.tolist():
            centre = self._centre(i, generator)
            shape = self.images[i].shape[1:]
            start = [min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, self.patch, shape)]
            window = tuple(slice(b, b + p) for b, p in zip(start, self.patch))
            images.append(self.images[i][(slice(None),) + window])
            if self.labels is not None:
                labels.append(self.labels[i][window])
        return torch.stack(images), (torch.stack(labels).long() if self.labels is not None else None)


def _plain(x) -> torch.Tensor:
    """MONAI transforms return MetaTensors; the training loop wants plain tensors."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def build_patch_source(cases: list[LoadedCase], config: VolumeConfig, with_labels: bool, device: torch.device) -> PatchSource:
    """Normalise, reorder and resample every volume (and label) once, pad to the patch, keep on `device`."""
    pad = SpatialPad(spatial_size=config.patch_size, mode="constant")
    images, labels = [], []
    for loaded in cases:
        image, grid = prepare_image(loaded.image.array, loaded.image.spacing, config)
        images.append(_plain(pad(image)).to(device))
        if with_labels:
            label = to_network(loaded.label.array.astype("float32"), grid, label=True)
            labels.append(_plain(pad(label))[0].to(torch.uint8).to(device))
    return PatchSource(images, labels if with_labels else None, config.patch_size, config.pos, config.neg)
