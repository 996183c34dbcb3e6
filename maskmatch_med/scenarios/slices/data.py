"""2D training data: every slice of every volume, normalised and resized once, held as tensors; and
the slicing itself (volume <-> slices, resizing), which prediction undoes.

ACDC-sized data (~1,900 slices of 256x256) is a few hundred MB, so the whole set lives in memory
(on the training device) and a batch is an index draw, not a DataLoader round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.data.nifti import load_label
from maskmatch_med.data.preprocess import normalise_intensity, slice_axis_of
from maskmatch_med.errors import UserError


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


def audit_labels(cases: list[LoadedCase], num_classes: int) -> dict[str, np.ndarray]:
    """Ground truth that unlabeled cases happen to have on disk (the phantom writes it; a user's data may
    hold it), by case id, for the pseudo-label quality logs only. A file that does not load or does not
    fit its image is skipped: it is not training data, so it never stops a run."""
    found = {}
    for loaded in cases:
        path = loaded.case.audit_label
        if path is None:
            continue
        try:
            label = load_label(path, frame=loaded.case.frame, lut=loaded.case.label_lut).array
        except UserError:
            continue
        if label.shape == loaded.image.array.shape and 0 <= label.min() and label.max() < num_classes:
            found[loaded.case.case_id] = label
    return found


def volume_to_slices(volume: np.ndarray, slice_axis: int) -> torch.Tensor:
    """(X, Y, Z) array -> (N, 1, H, W) float tensor with the slice axis moved to the batch."""
    slices = np.moveaxis(np.asarray(volume), slice_axis, 0)
    return torch.from_numpy(np.ascontiguousarray(slices)).unsqueeze(1)


def slices_to_volume(slices: np.ndarray, slice_axis: int) -> np.ndarray:
    """Inverse of volume_to_slices for (N, H, W) arrays: put the slice axis back where it was."""
    return np.moveaxis(np.asarray(slices), 0, slice_axis)


def resize_slices(slices: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) slices to `size`; `mode` is "bilinear" for images and probabilities,
    "nearest" for label maps (which must be passed as float and cast back by the caller)."""
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    if mode == "nearest":
        return F.interpolate(slices, size=size, mode="nearest-exact")
    return F.interpolate(slices, size=size, mode=mode, align_corners=False)
