"""Losses of the method: supervised (L_x), against pseudo-labels (L_s, L_fp, L_m) and OHEM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["supervised_loss", "ohem_loss", "pseudo_label_loss", "pseudo_label_dice_loss"]

_KINDS = ("ce", "ce_dice")
_DICE_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr and smooth_dr


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
    if kind == "ce":
        return F.cross_entropy(logits, target, ignore_index=ce_ignore, reduction="sum") / n_valid
    # One log-softmax serves both terms.
    log_probs = F.log_softmax(logits, dim=1)
    ce = F.nll_loss(log_probs, target, ignore_index=ce_ignore, reduction="sum") / n_valid
    return (ce + _soft_dice(log_probs.exp(), target, valid)) / 2


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


def pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, balance: str = "none") -> torch.Tensor:
    """Cross-entropy against pseudo-labels, weighted per pixel, normalised by ALL pixels.

    ``sum over pixels of weight * CE / (B * prod(spatial))`` -- the loss shrinks
    when few pixels are confident. A bool ``valid`` is a 0/1 weight (the confident pixels); a float one
    is a per-pixel weight (e.g. MIC's quality weight). All-zero weights give exactly 0 with a (zero)
    gradient path.

    ``balance="class"`` re-weights the pixels so that every pseudo-label class present carries the same
    share of the total weight (which is unchanged): a few confident RV pixels then count as much as the
    confident background, instead of 1% of it.

    Args:
        logits: (B, K, *spatial) student scores.
        labels: long (B, *spatial) pseudo-labels.
        valid: bool or float (B, *spatial); a non-bool, non-float mask counts its non-zero entries as valid.
    """
    if balance not in ("none", "class"):
        raise ValueError(f"balance must be 'none' or 'class', got {balance!r}")
    labels, weight = _check_pseudo_labels(logits, labels, valid)
    labels = labels.masked_fill(weight <= 0, 0)  # weightless pixels may hold 255 (copied ground-truth padding)
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if balance == "class":
        weight = weight * _class_balance(labels, weight, logits.shape[1])
    return (ce * weight).sum() / max(labels.numel(), 1)


def _class_balance(labels: torch.Tensor, weight: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel factor W / (K_present * W_c): each present class ends up with total weight W / K_present."""
    with torch.no_grad():
        per_class = torch.bincount(labels.flatten(), weights=weight.flatten(), minlength=num_classes)[:num_classes]
        present = per_class > 0
        if not bool(present.any()):
            return torch.zeros_like(weight)
        factor = per_class.sum() / (present.sum() * per_class.clamp_min(torch.finfo(per_class.dtype).tiny))
        return torch.where(present, factor, torch.zeros_like(factor))[labels].to(weight.dtype)


def _check_pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, *spatial) long labels and float32 per-pixel weights."""
    labels = _check_target(logits, labels, "labels")
    if valid.ndim == logits.ndim and valid.shape[1] == 1:
        valid = valid[:, 0]
    if valid.shape != labels.shape:
        raise ValueError(f"valid {tuple(valid.shape)} does not fit labels {tuple(labels.shape)}")
    if not valid.is_floating_point():
        valid = valid != 0
    return labels, valid.to(device=labels.device, dtype=torch.float32)


def pseudo_label_dice_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Soft Dice against pseudo-labels on valid pixels, every class present in the valid pseudo-labels
    weighted equally and pooled over the batch: the unlabeled loss of UniMatch's medical recipe.

    Unlike per-pixel cross-entropy, a class's weight does not shrink with its area, so confident
    background cannot drown the few confident foreground pixels of a small structure. A class absent
    from the valid pseudo-labels is left out: scoring it would push its probability to zero on every
    valid pixel (the collapse of an absent RV). A float ``valid`` counts its positive entries, weighted.
    All invalid gives 0.
    """
    labels, weight = _check_pseudo_labels(logits, labels, valid)
    return masked_soft_dice(logits, labels, weight, present_only=True)


def masked_soft_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, present_only: bool = False) -> torch.Tensor:
    """1 - soft Dice over all classes (background included), pooled over the batch, on valid pixels only.

    The mask is applied to the softmax probabilities, not to the logits (MONAI's MaskedDiceLoss masks
    its input before the softmax, which gives invalid pixels uniform probabilities that still count).
    ``valid`` may be a float weight. A class absent from the valid pixels of both maps scores 0 loss;
    with ``present_only`` the mean runs over the classes present in the valid target only.

    The value is MONAI's ``DiceLoss(include_background=True, batch=True)`` of the weighted probabilities
    against the weighted one-hot target (tests hold it to that), computed per class from sums: no
    one-hot tensor is built, which made this loss cost more than the cross-entropy beside it.
    """
    return _soft_dice(torch.softmax(logits.float(), dim=1), target, valid, present_only)


def _soft_dice(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, present_only: bool = False) -> torch.Tensor:
    """masked_soft_dice of class probabilities (B, K, *spatial)."""
    num_classes = probs.shape[1]
    weight = valid.to(torch.float32)
    hard = target.masked_fill(weight <= 0, 0)  # weightless pixels add nothing to any class
    weighted = probs * weight.unsqueeze(1)
    predicted = weighted.sum(dim=[0, *range(2, probs.ndim)])
    # Sums over the one-hot target (weight w) of p * w and w, class by class: the true class's entries only.
    truth_prob = weighted.gather(1, hard.unsqueeze(1))[:, 0] * weight
    intersection = torch.zeros(num_classes, dtype=torch.float32, device=probs.device).index_add(0, hard.flatten(), truth_prob.flatten())
    ground = torch.zeros(num_classes, dtype=torch.float32, device=probs.device).index_add(0, hard.flatten(), weight.flatten())
    per_class = 1.0 - (2.0 * intersection + _DICE_SMOOTH) / (ground + predicted + _DICE_SMOOTH)
    if not present_only:
        return per_class.mean()
    present = ground > 0
    if not bool(present.any()):
        return (probs * 0).sum()
    return per_class[present].mean()
