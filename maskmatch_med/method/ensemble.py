"""Multi-scale ensembled pseudo-labels.

The teacher predicts on the weak view resampled at each scale; each softmax is resampled back to the
view's grid and the probabilities are fused (mean, or max then renormalised). Pseudo-label = argmax,
confidence = max probability, valid where confidence >= threshold.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "scaled_size", "scale_probabilities", "fuse_probabilities", "multiscale_probabilities", "scale_disagreement", "pseudo_labels",
]

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _scale_tuple(scale: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    if isinstance(scale, numbers.Real):
        scales = (float(scale),) * ndim
    else:
        scales = tuple(float(s) for s in scale)
        if len(scales) != ndim:
            raise ValueError(f"scale {scale!r} has {len(scales)} entries but the data has {ndim} spatial dims")
    if not all(s > 0 and math.isfinite(s) for s in scales):
        raise ValueError(f"scales must be positive and finite, got {scale!r}")
    return scales


def scaled_size(
    spatial_shape: Sequence[int], scale: float | Sequence[float], size_divisor: int = 1
) -> tuple[int, ...]:
    """Spatial size after scaling: round(size * scale) per axis (half rounds up), then rounded to the
    nearest multiple of ``size_divisor`` and at least ``size_divisor``.

    ``scale`` is a float for every axis or one value per axis, e.g. (1.25, 1.25, 1.0) keeps a 3D
    volume's last (slice) axis.
    """
    spatial = tuple(int(s) for s in spatial_shape)
    if int(size_divisor) < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    div = int(size_divisor)
    scales = _scale_tuple(scale, len(spatial))
    out = []
    for size, s in zip(spatial, scales):
        n = max(1, _round_half_up(size * s))
        out.append(max(div, _round_half_up(n / div) * div))
    return tuple(out)


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[2:]) == size:
        return x
    mode = _LINEAR_MODES.get(x.ndim - 2)
    if mode is None:
        raise ValueError(f"expected 1 to 3 spatial dims, got tensor of shape {tuple(x.shape)}")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def scale_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float | Sequence[float]],
    size_divisor: int = 1,
    softmax: bool = True,
) -> list[torch.Tensor]:
    """Each scale's class probabilities, on the images' own grid.

    For each scale the images are resampled (bilinear / trilinear, align_corners=False; not at all when
    the size does not change), ``predict`` gives logits, and their softmax over channels is resampled back
    to the images' spatial size (``softmax=False``: ``predict`` gives probabilities already, resampled as
    they are). Runs under the caller's grad mode.
    """
    scales = list(scales)
    if not scales:
        raise ValueError("scales must not be empty")
    spatial = tuple(images.shape[2:])
    out = []
    for scale in scales:
        size = scaled_size(spatial, scale, size_divisor)
        logits = predict(_resize(images, size))
        if logits.ndim != images.ndim or logits.shape[0] != images.shape[0]:
            raise ValueError(f"predict returned shape {tuple(logits.shape)} for input {tuple(images.shape)}")
        out.append(_resize(torch.softmax(logits, dim=1) if softmax else logits, spatial))
    return out


def fuse_probabilities(per_scale: Sequence[torch.Tensor], fuse: str = "mean") -> torch.Tensor:
    """``"mean"`` (also the label source of ``"vote"`` and, where scales disagree, ``"agree"``) averages; ``"max"`` takes the elementwise maximum
    and renormalises to sum 1 over classes. One scale is returned as it is."""
    if fuse not in ("mean", "max", "vote", "agree"):
        raise ValueError(f"fuse must be 'mean', 'max', 'vote' or 'agree', got {fuse!r}")
    if len(per_scale) == 1:
        return per_scale[0]
    if fuse == "max":
        fused = torch.stack(list(per_scale)).amax(dim=0)
        return fused / fused.sum(dim=1, keepdim=True).clamp_min(torch.finfo(fused.dtype).tiny)
    return torch.stack(list(per_scale)).mean(dim=0)


def multiscale_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float | Sequence[float]],
    fuse: str = "mean",
    size_divisor: int = 1,
) -> torch.Tensor:
    """Class probabilities of ``predict`` fused over several input scales.

    :func:`scale_probabilities`, then :func:`fuse_probabilities`: ``"mean"`` averages, ``"max"`` takes the
    elementwise maximum and renormalises to sum 1 over classes (``"vote"`` fuses by the mean here; its
    validity rule is :func:`maskmatch_med.method.pseudo_labels.vote_valid`). ``scales == [1.0]`` returns
    exactly ``softmax(predict(images), dim=1)``. Runs under the caller's grad mode (wrap in
    ``torch.no_grad()`` for a teacher).

    Args:
        predict: maps (B, C_in, *spatial') to logits (B, K, *spatial''); the logits' spatial size may
            differ from the input's (it is resampled to the images' size anyway).
        images: (B, C_in, *spatial).
        scales: the scales; each a float or a per-axis sequence.
        fuse: "mean", "max" or "vote".
        size_divisor: resampled sizes are rounded to a multiple of this (e.g. the network's stride).

    Returns:
        (B, K, *spatial) probabilities.
    """
    if fuse not in ("mean", "max", "vote", "agree"):
        raise ValueError(f"fuse must be 'mean', 'max', 'vote' or 'agree', got {fuse!r}")
    return fuse_probabilities(scale_probabilities(predict, images, scales, size_divisor), fuse)


def scale_disagreement(per_scale: Sequence[torch.Tensor], fused: torch.Tensor, class_dim: int = 1) -> torch.Tensor:
    """How much the scales disagree, per pixel / voxel: the mean over scales of the total-variation
    distance between each scale's probabilities and the fused ones (0 when every scale agrees, at most 1).
    The class axis ``class_dim`` is reduced away."""
    return torch.stack([0.5 * (p - fused).abs().sum(dim=class_dim) for p in per_scale]).mean(dim=0)


def pseudo_labels(probs: torch.Tensor, conf_thresh: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels from class probabilities (B, K, *spatial).

    Returns:
        labels: long (B, *spatial), the argmax class.
        confidence: (B, *spatial), the maximum probability.
        valid: bool (B, *spatial), confidence >= conf_thresh.
    """
    confidence, labels = probs.max(dim=1)
    valid = confidence >= conf_thresh
    return labels.long(), confidence, valid
