"""Losses of the method (DESIGN.md section 1, steps 1, 3 and 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["supervised_loss", "ohem_loss", "pseudo_label_loss", "pseudo_label_dice_loss"]

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

    return (ce + masked_soft_dice(logits, target, valid)) / 2


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
    labels, valid = _check_pseudo_labels(logits, labels, valid)
    masked = labels.masked_fill(~valid, -100)
    total = F.cross_entropy(logits.float(), masked, ignore_index=-100, reduction="sum")
    return total / max(labels.numel(), 1)


def _check_pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = _check_target(logits, labels, "labels")
    if valid.ndim == logits.ndim and valid.shape[1] == 1:
        valid = valid[:, 0]
    if valid.shape != labels.shape:
        raise ValueError(f"valid {tuple(valid.shape)} does not fit labels {tuple(labels.shape)}")
    if valid.dtype != torch.bool:
        valid = valid != 0
    return labels, valid.to(labels.device)


def pseudo_label_dice_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Soft Dice against pseudo-labels on valid pixels, every class (background included) weighted
    equally and pooled over the batch: the unlabeled loss of UniMatch's medical recipe.

    Unlike per-pixel cross-entropy, a class's weight does not shrink with its area, so confident
    background cannot drown the few confident foreground pixels of a small structure. All invalid
    gives 0 (MONAI's smoothing terms make an empty class score 0 loss).
    """
    labels, valid = _check_pseudo_labels(logits, labels, valid)
    return masked_soft_dice(logits, labels, valid)


def masked_soft_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice over all classes (background included), pooled over the batch, on valid pixels only.

    The mask is applied to the softmax probabilities, not to the logits (MONAI's MaskedDiceLoss masks
    its input before the softmax, which gives invalid pixels uniform probabilities that still count).
    A class absent from the valid pixels of both maps scores 0 loss.
    """
    weight = valid.unsqueeze(1).to(torch.float32)
    probs = torch.softmax(logits.float(), dim=1) * weight
    onehot = F.one_hot(target.masked_fill(~valid, 0), logits.shape[1]).movedim(-1, 1).to(torch.float32) * weight
    return DiceLoss(include_background=True, batch=True)(probs, onehot)
