"""Per-volume preprocessing shared by training, validation and prediction.

Training and inference must see identical intensities and slice geometry, so both call these
functions and nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def normalise_intensity(volume: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the [lower, upper] percentiles, then z-score over the whole volume.

    Zero is the normalised mean, which is the value masked patches are filled with.
    """
    volume = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(volume, [lower, upper])
    clipped = np.clip(volume, lo, hi)
    std = float(clipped.std())
    return ((clipped - float(clipped.mean())) / max(std, 1e-6)).astype(np.float32)


def slice_axis_of(spacing: tuple[float, ...]) -> int:
    """The axis a 2D model slices along: the one with the coarsest spacing (the last on ties).

    For cine MRI such as ACDC this is the through-plane axis (5-10 mm against ~1.5 mm in-plane).
    """
    spacing = tuple(float(s) for s in spacing[:3])
    coarsest = max(spacing)
    return max(i for i, s in enumerate(spacing) if np.isclose(s, coarsest, rtol=1e-3))


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
