"""Which teacher pixels teach the student, and with what weight (the teacher's part of each step).

A young teacher is confident mostly about background: at one global threshold the valid pixels are
almost all background and true foreground is confidently called background more often than it is
found. The tools here keep foreground in the pseudo-labels:

- :class:`ClasswiseThreshold`: per-class thresholds from an EMA of the teacher's confidence on the
  pixels it assigns to each class (FlexMatch's "learning effect", FreeMatch's self-adaptive
  thresholds): ``threshold_c = conf_thresh * ema_c / max_k ema_k``, so a class the teacher is still
  learning gets a proportionally lower bar than background.
- :class:`DistributionAlignment`: ReMixMatch's distribution alignment: the teacher's probabilities are
  scaled by (class frequency of the labeled ground truth) / (running mean of the teacher's
  probabilities on unlabeled images) and renormalised, which undoes a teacher's drift towards
  background before any threshold is applied.
- :func:`with_background_threshold`: a bar of its own for background, above the foreground classes'
  (confident background is where a young teacher hides the small structures it has not learnt).
- :func:`foreground_islands`: foreground outside each image's largest connected foreground region. Where
  the anatomy is one connected object (the heart's chambers and wall), such islands are the teacher's
  far-off false positives (bright background called RV on the benchmark phantom); they leave the loss.
- :func:`vote_valid`: multi-scale ensembling by decisions: a pixel is valid where at least
  ``min_votes`` scales confidently predict the fused label (mean fusion of probabilities loses the
  foreground that one scale is unsure of; measured with benchmarks/pseudo_labels.py, "any scale"
  keeps more true foreground than one scale does, at the same precision).
- :func:`quality_weights`: MIC/DAFormer's quality estimate: every pixel keeps its argmax label and
  the loss weight of an image is its share of confident pixels.
- :func:`pseudo_label_stats`: what to log: the class histogram of the valid pseudo-labels and, where
  ground truth of the unlabeled images is known, per-class precision, recall and Dice. For logging
  only: nothing here feeds a loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.transforms.utils import get_largest_connected_component_mask

__all__ = [
    "ClasswiseThreshold", "DistributionAlignment", "class_thresholds", "confident", "vote_valid", "agree_labels", "quality_weights",
    "pseudo_label_stats", "with_background_threshold", "foreground_islands",
]


class ClasswiseThreshold:
    """Per-class confidence thresholds that follow the teacher (state: one EMA value per class).

    ``update`` takes the teacher's labels and confidences; the EMA of each class's mean confidence starts
    at the first batch that contains the class (no arbitrary initial value), and a class never predicted
    keeps the full ``conf_thresh``. ``state_dict``/``load_state_dict`` carry it through checkpoints so a
    resumed run continues exactly. The running means live on the teacher's device and are updated
    without a host sync; ``reduce_sum`` (DDP: the sum over ranks) pools every rank's batch first.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes, self.momentum, self.reduce_sum = int(num_classes), float(momentum), reduce_sum
        self.ema = torch.full((self.num_classes,), float("nan"))

    @torch.no_grad()
    def update(self, labels: torch.Tensor, confidence: torch.Tensor, include: torch.Tensor | None = None) -> None:
        """labels long (B, *spatial), confidence (B, *spatial); ``include`` bool excludes padding."""
        counts, sums = class_sums(labels, confidence, self.num_classes, include, self.reduce_sum)
        self.ema = ema_where_seen(self.ema.to(counts.device), sums / counts.clamp_min(1), counts > 0, self.momentum)

    def thresholds(self, conf_thresh: float) -> torch.Tensor:
        """(K,) thresholds: conf_thresh scaled by each class's confidence relative to the most confident."""
        return class_thresholds(self.ema, conf_thresh)

    def state_dict(self) -> dict:
        return {"ema": self.ema.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        ema = torch.as_tensor(state["ema"], dtype=torch.float32)
        if ema.shape != (self.num_classes,):
            raise ValueError(f"classwise threshold state has {tuple(ema.shape)} classes, expected ({self.num_classes},)")
        self.ema = ema.clone()


def class_sums(
    labels: torch.Tensor, values: torch.Tensor, num_classes: int, include: torch.Tensor | None = None,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) pixel counts and (K,) sums of ``values`` per label over the included pixels (float32, on the
    labels' device), summed over ranks by ``reduce_sum`` when given."""
    labels, values = labels.flatten(), values.flatten().float()
    weight = torch.ones_like(values) if include is None else include.flatten().float()
    counts = torch.bincount(labels, weights=weight, minlength=num_classes)[:num_classes]
    sums = torch.bincount(labels, weights=values * weight, minlength=num_classes)[:num_classes]
    stacked = torch.stack([counts, sums]).float()
    if reduce_sum is not None:
        stacked = reduce_sum(stacked)
    return stacked[0], stacked[1]


def ema_where_seen(old: torch.Tensor, new: torch.Tensor, seen: torch.Tensor, momentum: float) -> torch.Tensor:
    """Per-entry EMA update where ``seen``; an entry that is still NaN takes ``new`` as its first value.
    Elementwise only (no boolean indexing), so it needs no host sync on a GPU."""
    updated = torch.where(torch.isnan(old), new, momentum * old + (1 - momentum) * new)
    return torch.where(seen, updated, old)


class DistributionAlignment:
    """Align the teacher's class distribution on unlabeled pixels with the labeled ground truth's.

    Two running means (EMA with ``momentum``, started at the first batch): the class frequencies of the
    labeled batches' ground truth (the target) and the teacher's mean probabilities on the included
    unlabeled pixels. ``align`` multiplies each class's probability by target / predicted and
    renormalises over classes (ReMixMatch, Berthelot et al. 2020; DARS, He et al. 2021 for segmentation).
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes, self.momentum, self.reduce_sum = int(num_classes), float(momentum), reduce_sum
        self.target = torch.full((self.num_classes,), float("nan"))
        self.predicted = torch.full((self.num_classes,), float("nan"))

    def _ema(self, old: torch.Tensor, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """EMA of total / count (per class), skipped while count is 0; the first value starts it."""
        if self.reduce_sum is not None:
            pooled = self.reduce_sum(torch.cat([total.float(), count.float().reshape(1)]))
            total, count = pooled[:-1], pooled[-1]
        seen = (count > 0).expand_as(total)
        return ema_where_seen(old.to(total.device), total / count.clamp_min(1), seen, self.momentum)

    @torch.no_grad()
    def update_target(self, labels: torch.Tensor) -> None:
        """Labeled ground truth (B, *spatial); 255 (ignored) does not count."""
        known = labels != 255
        hist = torch.bincount(labels.masked_fill(~known, 0).flatten(), weights=known.flatten().float(), minlength=self.num_classes)
        hist = hist[: self.num_classes]
        self.target = self._ema(self.target, hist, hist.sum())

    @torch.no_grad()
    def align(self, probs: torch.Tensor, include: torch.Tensor | None = None, update: bool = True) -> torch.Tensor:
        """probs (B, K, *spatial) -> aligned probs; with ``update`` the predicted mean takes this batch in."""
        if update:
            weight = torch.ones_like(probs[:, :1]) if include is None else include.unsqueeze(1).to(probs.dtype)
            dims = [0, *range(2, probs.ndim)]
            self.predicted = self._ema(self.predicted, (probs.float() * weight).sum(dims), weight.float().sum())
        aligned = probs * self.ratio().to(probs.device, probs.dtype).view((1, -1) + (1,) * (probs.ndim - 2))
        return aligned / aligned.sum(dim=1, keepdim=True).clamp_min(torch.finfo(aligned.dtype).tiny)

    def ratio(self) -> torch.Tensor:
        """(K,) target / predicted; 1 for a class whose means are not both known yet. Tiny means are
        floored so that a class the teacher never predicts gets a large but finite boost."""
        ratio = self.target.to(self.predicted.device) / self.predicted.clamp_min(1e-6)
        return torch.where(ratio.isnan(), torch.ones_like(ratio), ratio)

    def state_dict(self) -> dict:
        return {"target": self.target.cpu().clone(), "predicted": self.predicted.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("target", "predicted"):
            value = torch.as_tensor(state[key], dtype=torch.float32)
            if value.shape != (self.num_classes,):
                raise ValueError(f"distribution alignment state has {tuple(value.shape)} classes, expected ({self.num_classes},)")
            setattr(self, key, value.clone())


def class_thresholds(class_confidence: torch.Tensor, conf_thresh: float) -> torch.Tensor:
    """``conf_thresh * c_k / max(c)`` per class; NaN entries (classes not seen yet) get ``conf_thresh``."""
    known = ~torch.isnan(class_confidence)
    # Elementwise (no boolean indexing): no host sync when the means live on a GPU.
    top = torch.where(known, class_confidence, torch.full_like(class_confidence, -math.inf)).max()
    scaled = float(conf_thresh) * class_confidence / top.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(known, scaled, torch.full_like(scaled, float(conf_thresh)))


def with_background_threshold(thresholds: torch.Tensor, background: float | None) -> torch.Tensor:
    """(K,) thresholds with background's (class 0) replaced by ``background`` where given.

    A young teacher calls much of a small structure confident background (on the benchmark phantom a
    quarter of the true RV at one labeled patient); a stricter bar for background than for the
    foreground classes keeps those pixels out of the loss instead of teaching the student to miss them.
    """
    if background is None:
        return thresholds
    if not 0.0 <= float(background) <= 1.0:
        raise ValueError(f"background threshold must be in [0, 1], got {background}")
    bars = thresholds.clone()
    bars[0] = float(background)
    return bars


def foreground_islands(labels: torch.Tensor, include: torch.Tensor | None = None) -> torch.Tensor:
    """bool (B, *spatial): pixels labelled foreground (class > 0) outside their image's largest connected
    foreground region (all foreground classes together, full connectivity; MONAI's
    ``get_largest_connected_component_mask``, on the GPU through cuCIM where installed). ``include``
    (bool) leaves padding out of the regions. An image without foreground has no islands."""
    foreground = labels > 0
    if include is not None:
        foreground = foreground & include
    islands = torch.zeros_like(foreground)
    for i in range(foreground.shape[0]):
        if foreground[i].any():
            largest = torch.as_tensor(get_largest_connected_component_mask(foreground[i]), device=foreground.device).bool()
            islands[i] = foreground[i] & ~largest
    return islands


def confident(labels: torch.Tensor, confidence: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """bool (B, *spatial): confidence >= the threshold of the pixel's own label (thresholds (K,))."""
    return confidence >= thresholds.to(confidence.device, confidence.dtype)[labels]


def _votes_needed(labels: torch.Tensor, scales: int, min_votes: int | None, background_votes: int | None) -> torch.Tensor | int:
    """Votes each pixel needs: ``min_votes`` (default a majority), or ``background_votes`` where the label
    is background (class 0)."""
    needed = math.ceil(scales / 2) if min_votes is None else int(min_votes)
    for name, value in (("min_votes", needed), ("background_votes", background_votes)):
        if value is not None and not 1 <= int(value) <= scales:
            raise ValueError(f"{name} must be in 1..{scales}, got {value}")
    if background_votes is None or int(background_votes) == needed:
        return needed
    return torch.where(labels == 0, int(background_votes), needed)


def vote_valid(
    per_scale: Sequence[torch.Tensor], labels: torch.Tensor, thresholds: torch.Tensor, min_votes: int | None = None,
    background_votes: int | None = None,
) -> torch.Tensor:
    """Valid where at least ``min_votes`` scales (default: a majority) give the fused label a probability at
    or above its class threshold; a background (class 0) label needs ``background_votes`` scales instead
    (default: the same). With one scale this is the plain threshold on that scale.

    Args:
        per_scale: the scales' probabilities, each (B, K, *spatial) on the same grid.
        labels: long (B, *spatial), the fused label.
        thresholds: (K,) per-class thresholds.
    """
    if not per_scale:
        raise ValueError("per_scale must not be empty")
    needed = _votes_needed(labels, len(per_scale), min_votes, background_votes)
    bar = thresholds.to(labels.device)[labels]
    votes = torch.zeros_like(labels, dtype=torch.int32)
    for probs in per_scale:
        label_prob = probs.gather(1, labels.unsqueeze(1))[:, 0]
        votes += (label_prob >= bar.to(label_prob.dtype)).to(torch.int32)
    return votes >= needed


def agree_labels(
    per_scale: Sequence[torch.Tensor], fallback: torch.Tensor, thresholds: torch.Tensor, min_votes: int = 1,
    background_votes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale fusion by decisions (``ensemble.fuse: agree``): each scale labels a pixel with its own
    argmax where it is confident (probability at or above that class's threshold); the pixel is valid
    where at least ``min_votes`` scales are confident and all confident scales give the same label,
    which becomes the pseudo-label; a background (class 0) label needs ``background_votes`` confident
    scales instead (default: the same). Elsewhere the label is ``fallback`` (the mean's argmax) at weight 0.

    Unlike the mean's argmax, a class that one scale finds confidently (a thin RV at full resolution)
    is not outvoted by a coarser scale's background; where scales confidently contradict each other the
    pixel teaches nothing instead of teaching the mean's compromise.

    Returns (labels long (B, *spatial), valid bool (B, *spatial)).
    """
    if not per_scale:
        raise ValueError("per_scale must not be empty")
    stacked = torch.stack(list(per_scale))  # (S, B, K, *spatial)
    confidence, labels = stacked.max(dim=2)
    sure = confidence >= thresholds.to(labels.device, confidence.dtype)[labels]
    num_classes = stacked.shape[2]
    lowest = torch.where(sure, labels, torch.full_like(labels, num_classes)).amin(dim=0)
    highest = torch.where(sure, labels, torch.full_like(labels, -1)).amax(dim=0)
    needed = _votes_needed(lowest, len(per_scale), min_votes, background_votes)
    valid = (lowest == highest) & (sure.sum(dim=0) >= needed)
    return torch.where(valid, lowest, fallback), valid


def quality_weights(valid: torch.Tensor, include: torch.Tensor | None = None) -> torch.Tensor:
    """MIC/DAFormer quality weight, float (B, *spatial): every included pixel of an image weighs the share
    of that image's included pixels that are confident (``valid``); excluded pixels (padding) weigh 0."""
    include = torch.ones_like(valid) if include is None else include
    dims = tuple(range(1, valid.ndim))
    share = (valid & include).sum(dims, dtype=torch.float32) / include.sum(dims, dtype=torch.float32).clamp_min(1)
    return share.view((-1,) + (1,) * (valid.ndim - 1)) * include.to(torch.float32)


def pseudo_label_stats(
    labels: torch.Tensor,
    valid: torch.Tensor,
    class_names: Sequence[str],
    truth: torch.Tensor | None = None,
    include: torch.Tensor | None = None,
) -> dict[str, float]:
    """Log values for the pseudo-labels of one batch (keys ``pl_*``).

    ``pl_valid_frac``: share of (included) pixels that pass the threshold; ``pl_share_<class>``: the
    class histogram of the valid pseudo-labels (sums to 1 over ``class_names``, background first).
    With ``truth`` (long (B, *spatial), 255 = unknown), for each foreground class: ``pl_precision_<c>``
    (valid pixels labelled c that are c), ``pl_recall_<c>`` (pixels of c that are validly labelled c),
    ``pl_dice_<c>`` and ``pl_as_background_<c>`` (pixels of c validly labelled background: what teaches
    the student to miss c); NaN where undefined (no such pixels in the batch).
    """
    include = torch.ones_like(valid) if include is None else include
    valid = valid & include
    k = len(class_names)
    n_valid = valid.sum().item()
    stats = {"pl_valid_frac": n_valid / max(include.sum().item(), 1)}
    hist = torch.bincount(labels[valid], minlength=k)[:k].float()
    for name, count in zip(class_names, hist.tolist()):
        stats[f"pl_share_{name}"] = count / n_valid if n_valid else 0.0
    if truth is not None:
        known = include & (truth != 255)
        for c, name in enumerate(class_names):
            if c == 0:
                continue
            predicted = valid & known & (labels == c)
            actual = known & (truth == c)
            tp = (predicted & actual).sum().item()
            n_pred, n_true = predicted.sum().item(), actual.sum().item()
            stats[f"pl_precision_{name}"] = tp / n_pred if n_pred else float("nan")
            stats[f"pl_recall_{name}"] = tp / n_true if n_true else float("nan")
            stats[f"pl_dice_{name}"] = 2 * tp / (n_pred + n_true) if n_pred + n_true else float("nan")
            missed = (valid & actual & (labels == 0)).sum().item()
            stats[f"pl_as_background_{name}"] = missed / n_true if n_true else float("nan")
    return stats
