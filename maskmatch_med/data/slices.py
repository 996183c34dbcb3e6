"""2D training data: every slice of every volume, normalised and resized once, held as tensors.

ACDC-sized data (~1,900 slices of 256x256) is a few hundred MB, so the whole set lives in memory
(on the training device) and a batch is an index draw, not a DataLoader round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.data.preprocess import normalise_intensity, resize_slices, slice_axis_of, volume_to_slices


@dataclass
class SliceSet:
    images: torch.Tensor  # (N, 1, H, W) float32
    labels: torch.Tensor | None  # (N, H, W) uint8

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> SliceSet:
        return SliceSet(self.images.to(device), None if self.labels is None else self.labels.to(device))

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The slices at ``index``; deterministic, so ``generator`` is unused."""
        index = index.to(self.images.device)
        labels = None if self.labels is None else self.labels[index].long()
        return self.images[index], labels


def build_slice_set(cases: list[LoadedCase], input_size: tuple[int, int], with_labels: bool) -> SliceSet:
    images, labels = [], []
    for loaded in cases:
        axis = slice_axis_of(loaded.image.spacing)
        volume = normalise_intensity(loaded.image.array)
        images.append(resize_slices(volume_to_slices(volume, axis), input_size, "bilinear"))
        if with_labels:
            label = volume_to_slices(loaded.label.array.astype("float32"), axis)
            labels.append(resize_slices(label, input_size, "nearest")[:, 0].to(torch.uint8))
    return SliceSet(torch.cat(images), torch.cat(labels) if with_labels else None)
