"""Losses of the method (DESIGN.md section 1, steps 1, 3 and 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss

__all__ = ["supervised_loss", "ohem_loss", "pseudo_label_loss"]

_KINDS = ("ce", "ce_dice")


def _check_target(logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Accept (B, *spatial) or (B, 1, *spatial) integer targets; return (B, *spatial) long."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(f"{name} {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    if target.is_floating_point():
        raise TypeError(f"{name} must be an integer tensor of class indices, got {target.dtype}")
    return target.long()


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "ce_dice", ignore_index: int | None = 255
) -> torch.Tensor:
    """Supervised segmentation loss.

    Args:
        logits: (B, K, *spatial) raw scores.
        target: long (B, *spatial) class indices (a singleton channel (B, 1, *spatial) is accepted).
        kind: ``"ce"`` -- cross-entropy; ``"ce_dice"`` -- (cross-entropy + soft Dice) / 2, the Dice over
            all classes including background, on softmax probabilities, pooled over the whole batch.
        ignore_index: label value excluded from both terms (None: nothing ignored).

    Returns:
        Scalar loss. The CE term is the mean over non-ignored pixels (0, not NaN, when all are ignored).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    target = _check_target(logits, target, "target")
    logits = logits.float()
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
        ce_ignore = -100  # PyTorch's default; class indices are never negative
    else:
        valid = target != ignore_index
        ce_ignore = int(ignore_index)
    n_valid = valid.sum().clamp_min(1)
    ce = F.cross_entropy(logits, target, ignore_index=ce_ignore, reduction="sum") / n_valid
    if kind == "ce":
        return ce

    dice_loss = MaskedDiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)
    dice_target = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
    dice = dice_loss(logits, dice_target, mask=valid.unsqueeze(1).to(logits.dtype))
    return (ce + dice) / 2


def ohem_loss(
    logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7, min_kept: int = 200000, ignore_index: int = 255
) -> torch.Tensor:
    """Online hard example mining cross-entropy (the ProbOhemCrossEntropy2d of TorchSemiSeg / UniMatch).

    Only the hard pixels count: those whose softmax probability of the true class is at most ``thresh``;
    when fewer than ``min_kept`` are that hard, the threshold rises to the ``min_kept``-th smallest such
    probability so that at least ``min_kept`` pixels are kept. With fewer than ``min_kept`` labeled
    pixels in the batch, every labeled pixel counts. Mean CE over the kept pixels (0 if none).
    """
    target = _check_target(logits, target, "target")
    logits = logits.float()
    valid = target != ignore_index
    num_valid = int(valid.sum())
    keep = valid
    if 0 < min_kept <= num_valid:
        with torch.no_grad():
            safe = torch.where(valid, target, torch.zeros_like(target))
            prob = torch.softmax(logits, dim=1).gather(1, safe.unsqueeze(1))[:, 0]
            prob = prob.masked_fill(~valid, 1.0)
            kth = torch.kthvalue(prob.flatten(), min_kept).values
            threshold = torch.clamp(kth, min=thresh)
            keep = valid & (prob <= threshold)
    kept_target = target.masked_fill(~keep, -100)
    return F.cross_entropy(logits, kept_target, ignore_index=-100, reduction="sum") / keep.sum().clamp_min(1)


def pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against pseudo-labels on valid pixels, normalised by ALL pixels.

    ``sum over valid pixels of CE / (B * prod(spatial))`` -- DESIGN.md section 1 step 3: the loss shrinks
    when few pixels are confident. All invalid gives exactly 0 with a (zero) gradient path.

    Args:
        logits: (B, K, *spatial) student scores.
        labels: long (B, *spatial) pseudo-labels.
        valid: bool (B, *spatial); a non-bool mask counts its non-zero entries as valid.
    """
    labels = _check_target(logits, labels, "labels")
    if valid.ndim == logits.ndim and valid.shape[1] == 1:
        valid = valid[:, 0]
    if valid.shape != labels.shape:
        raise ValueError(f"valid {tuple(valid.shape)} does not fit labels {tuple(labels.shape)}")
    if valid.dtype != torch.bool:
        valid = valid != 0
    masked = labels.masked_fill(~valid.to(labels.device), -100)
    total = F.cross_entropy(logits.float(), masked, ignore_index=-100, reduction="sum")
    return total / max(labels.numel(), 1)
