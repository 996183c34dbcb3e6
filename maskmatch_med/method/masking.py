"""Patch masking for the masked-modeling proxy task.

The spatial grid is split into patches; each patch is dropped independently with probability
``ratio`` (a Bernoulli draw per patch, as in MIC) and dropped patches are filled with a constant
(0 = the mean of z-scored / normalised images). Works for any number of spatial dimensions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = ["patch_keep_mask", "apply_patch_mask"]


def _draw(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    normal: bool = False,
) -> torch.Tensor:
    """Random numbers of ``shape`` (uniform [0, 1) or standard normal), float32, on ``device``.

    They are drawn on the generator's own device (a CPU generator cannot sample on CUDA) and then moved;
    without a generator they are drawn from the global RNG directly on ``device``.
    """
    draw_device = generator.device if generator is not None else device
    fn = torch.randn if normal else torch.rand
    out = fn(tuple(shape), generator=generator, device=draw_device, dtype=torch.float32)
    return out if device is None else out.to(device)


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """An int (same on every axis) or a per-axis sequence of ints, validated to be >= 1."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        sizes = (int(value),) * ndim
    else:
        try:
            sizes = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except TypeError as exc:
            raise ValueError(f"{name} must be an int or a sequence of ints, got {value!r}") from exc
        if len(sizes) != ndim:
            raise ValueError(f"{name} has {len(sizes)} entries but the data has {ndim} spatial dims")
    if any(s < 1 for s in sizes):
        raise ValueError(f"{name} entries must be >= 1, got {value!r}")
    return sizes


def patch_keep_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    patch_size: int | Sequence[int],
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random patch-wise keep mask.

    Args:
        batch_size: number of samples B.
        spatial_shape: spatial size (H, W) or (D1, D2, D3) ...
        patch_size: patch edge length; an int for every axis or one value per axis (e.g. (16, 16, 2)).
        ratio: probability that a patch is dropped, in [0, 1]. 0 keeps everything, 1 drops everything.
        generator: optional generator for reproducible draws.
        device: device of the returned mask.

    Returns:
        bool tensor (B, 1, *spatial_shape), True where the pixel is visible. Every patch of the grid is
        either entirely kept or entirely dropped; when a size is not divisible by the patch size the
        grid is rounded up and the last (partial) patch is cropped.
    """
    spatial = tuple(int(s) for s in spatial_shape)
    if len(spatial) < 1 or any(s < 1 for s in spatial):
        raise ValueError(f"spatial_shape must be a non-empty sequence of positive ints, got {spatial_shape!r}")
    if int(batch_size) < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:  # also rejects NaN
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    patches = _per_axis(patch_size, len(spatial), "patch_size")

    grid = tuple(math.ceil(s / p) for s, p in zip(spatial, patches))
    # uniform [0, 1) >= ratio: ratio 0 keeps all, ratio 1 drops all, P(drop) = ratio otherwise.
    keep = _draw((int(batch_size), 1, *grid), generator, device) >= ratio
    for axis, p in enumerate(patches):
        if p > 1:
            keep = keep.repeat_interleave(p, dim=2 + axis)
    crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
    return keep[crop].contiguous()


def apply_patch_mask(images: torch.Tensor, keep: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Set the dropped pixels (``keep`` False) of every channel to ``fill``.

    Args:
        images: (B, C, *spatial).
        keep: bool (B, 1, *spatial) or (1, 1, *spatial), e.g. from :func:`patch_keep_mask`.
        fill: value for dropped pixels (0 = the normalised mean).

    Returns:
        A new tensor like ``images``; visible pixels unchanged.
    """
    if keep.ndim != images.ndim or keep.shape[2:] != images.shape[2:] or keep.shape[1] != 1:
        raise ValueError(f"keep mask {tuple(keep.shape)} does not fit images {tuple(images.shape)}")
    if keep.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"keep mask batch {keep.shape[0]} does not fit images batch {images.shape[0]}")
    if keep.dtype != torch.bool:
        keep = keep != 0
    fill_value = torch.tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(keep.to(images.device), images, fill_value)
