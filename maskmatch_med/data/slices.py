"""2D training data: every slice of every volume, normalised and resized once, held as tensors.

ACDC-sized data (~1,900 slices of 256x256) is a few hundred MB, so the whole set lives in memory
(on the training device) and a batch is an index draw, not a DataLoader round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.data.preprocess import normalise_intensity, resize_slices, slice_axis_of, volume_to_slices


@dataclass
class SliceSet:
    images: torch.Tensor  # (N, 1, H, W) float32
    labels: torch.Tensor | None  # (N, H, W) uint8
    # Unlabeled sets: ground truth found on disk, 255 where a case has none (pseudo-label logs only).
    audit: torch.Tensor | None = None  # (N, H, W) uint8

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> SliceSet:
        move = lambda t: None if t is None else t.to(device)
        return SliceSet(self.images.to(device), move(self.labels), move(self.audit))

    def truth(self, index: torch.Tensor) -> torch.Tensor | None:
        """Ground truth of unlabeled slices for logging pseudo-label quality (None when none is known)."""
        return None if self.audit is None else self.audit[index.to(self.audit.device)].long()

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The slices at ``index``; deterministic, so ``generator`` is unused."""
        index = index.to(self.images.device)
        labels = None if self.labels is None else self.labels[index].long()
        return self.images[index], labels


def build_slice_set(
    cases: list[LoadedCase], input_size: tuple[int, int], with_labels: bool, audit: dict[str, np.ndarray] | None = None
) -> SliceSet:
    """Slices of every case. ``audit`` maps an unlabeled case's id to its ground-truth array, for the
    pseudo-label logs; slices of cases without one read 255 (unknown)."""
    images, labels, audits = [], [], []
    for loaded in cases:
        axis = slice_axis_of(loaded.image.spacing)
        volume = normalise_intensity(loaded.image.array)
        slices = resize_slices(volume_to_slices(volume, axis), input_size, "bilinear")
        images.append(slices)
        if with_labels:
            labels.append(_label_slices(loaded.label.array, axis, input_size))
        if audit:
            truth = audit.get(loaded.case.case_id)
            audits.append(_label_slices(truth, axis, input_size) if truth is not None else torch.full(slices[:, 0].shape, 255, dtype=torch.uint8))
    return SliceSet(torch.cat(images), torch.cat(labels) if with_labels else None, torch.cat(audits) if audits else None)


def _label_slices(label: np.ndarray, axis: int, input_size: tuple[int, int]) -> torch.Tensor:
    slices = volume_to_slices(label.astype("float32"), axis)
    return resize_slices(slices, input_size, "nearest")[:, 0].to(torch.uint8)
