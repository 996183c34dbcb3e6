"""Per-volume preprocessing shared by training, validation and prediction, in 2D and 3D alike.

Training and inference must see identical intensities and slice geometry, so both call these
functions and nothing else (the 2D slicing itself: scenarios/slices/data.py).
"""

from __future__ import annotations

import numpy as np


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
