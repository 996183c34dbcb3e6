"""Volumes for 3D networks: intensity normalisation, the network's axis order and target spacing.

The network sees each volume in its stored voxel order with the coarsest-spacing axis moved last (the
slice axis of thick-slice MRI), resampled to `volume.spacing`. Per-axis settings (patch size, mask
patch size, ensemble scales, axis strides) therefore read (in-plane, in-plane, slice) for every file,
whatever its orientation. The mapping is a permutation plus an axis-wise resampling of the stored
grid, so it is inverted exactly: predictions go back to the stored shape and are written with the
input's own header (geometry is sacred; no world-space resampling that could shift a voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from maskmatch_med.config import VolumeConfig
from maskmatch_med.data.preprocess import normalise_intensity, slice_axis_of


@dataclass(frozen=True)
class Grid:
    """Where a stored volume lies on the network's grid."""

    order: tuple[int, int, int]  # stored axes in network order (coarsest last)
    stored_shape: tuple[int, int, int]
    shape: tuple[int, int, int]  # network-grid shape (network order, after resampling)

    @property
    def permuted_shape(self) -> tuple[int, int, int]:
        return tuple(self.stored_shape[a] for a in self.order)  # type: ignore[return-value]


def network_grid(stored_shape, spacing, target: list[float] | None) -> Grid:
    slice_axis = slice_axis_of(tuple(spacing))
    order = tuple([a for a in range(3) if a != slice_axis] + [slice_axis])
    permuted = [int(stored_shape[a]) for a in order]
    if target is None:
        shape = permuted
    else:
        shape = [max(1, int(round(n * float(spacing[a]) / t))) for n, a, t in zip(permuted, order, target)]
    return Grid(order, tuple(int(s) for s in stored_shape), tuple(shape))  # type: ignore[arg-type]


def normalise(array: np.ndarray, config: VolumeConfig) -> np.ndarray:
    """Intensities by `volume.intensity`; 0 is the normalised mean (percentile, zscore) or the window's
    centre (ct_window), the value masked patches and padding take."""
    array = np.asarray(array, dtype=np.float32)
    if config.intensity == "percentile":  # the 2D path's own normalisation: clip, then z-score
        return normalise_intensity(array, *config.percentiles)
    if config.intensity == "zscore":
        return np.asarray(NormalizeIntensity()(array), dtype=np.float32)
    low, high = config.ct_window
    return np.asarray(ScaleIntensityRange(a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True)(array), dtype=np.float32)


def _resize(x: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """(C, *spatial) -> (C, *size); 'trilinear' or 'nearest-exact'."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(x[None], size=tuple(size), mode=mode, **kwargs)[0]


def to_network(array: np.ndarray, grid: Grid, label: bool = False) -> torch.Tensor:
    """Stored (X, Y, Z) array -> (1, *grid.shape) float tensor (images trilinear, labels nearest)."""
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(array, grid.order))).float()[None]
    return _resize(x, grid.shape, "nearest-exact" if label else "trilinear")


def from_network(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(C, *grid.shape) probabilities -> (C, *stored_shape), trilinear: the inverse of to_network."""
    x = _resize(x, grid.permuted_shape, "trilinear")
    inverse = tuple(int(i) for i in np.argsort(grid.order))
    return x.permute(0, *(1 + a for a in inverse)).contiguous()


def prepare_image(array: np.ndarray, spacing, config: VolumeConfig) -> tuple[torch.Tensor, Grid]:
    """Raw stored intensities -> normalised (1, X', Y', Z') tensor on the network grid, and its Grid."""
    grid = network_grid(array.shape, spacing, config.spacing)
    return to_network(normalise(array, config), grid), grid
