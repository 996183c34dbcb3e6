"""One training step per method, over whole batches on the training device.

    supervised : L = L_x
    fixmatch   : L = L_x + lambda_u * L_s                    (single-scale pseudo-labels)
    unimatch   : L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2
    maskmatch  : the base's loss plus lambda_m * L_m          (multi-scale pseudo-labels, masked view);
                 method.base picks fixmatch (default) or unimatch

L_x is the supervised loss on labeled images; L_s (L_s1, L_s2) the strong views', L_fp the
feature-perturbed weak view's and L_m the masked view's loss against the teacher's pseudo-labels
(method.losses). A step returns the loss to back-propagate and a dict of floats to log; the
optimizer, EMA update and everything else stays in the engine.

Each step times its phases ("augment", "teacher", "student") on its `timer`, a disabled (no-op)
maskmatch_med.timing.PhaseTimer unless a profiler such as benchmarks/speed.py swaps in an enabled one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from torch import nn

from maskmatch_med.config import MethodConfig, WeakAugConfig
from maskmatch_med.timing import PhaseTimer
from maskmatch_med.method.augment import (
    colour_augment, copy_paste, copy_paste_box_mask, cutmix, cutmix_box_mask, strong_augment, weak_augment,
)
from maskmatch_med.method.domain_norm import frozen_statistics
from maskmatch_med.method.ensemble import fuse_probabilities, scale_probabilities
from maskmatch_med.method.losses import ohem_loss, pseudo_label_dice_loss, pseudo_label_loss, supervised_loss
from maskmatch_med.method.masking import apply_patch_mask, patch_keep_mask
from maskmatch_med.method.pseudo_labels import (
    ClasswiseThreshold, DistributionAlignment, agree_labels, confident, pseudo_label_stats, quality_weights, vote_valid,
    foreground_islands, with_background_threshold,
)
from maskmatch_med.method.perturbation import perturbed_encoder


@dataclass
class Batch:
    labeled_images: torch.Tensor  # (B, C, *spatial)
    labels: torch.Tensor  # (B, *spatial) long
    unlabeled_images: torch.Tensor | None = None  # (B_u, C, *spatial)
    unlabeled_ignore: torch.Tensor | None = None  # (B_u, *spatial), 255 on padding: never a pseudo-label target
    # Ground truth of the unlabeled images where it exists on disk (B_u, *spatial): only to log how good
    # the pseudo-labels are (pl_precision_*, ...); no loss and no decision ever reads it.
    unlabeled_truth: torch.Tensor | None = None


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, float]


@dataclass
class PseudoLabels:
    """The teacher's verdict on the weak unlabeled view."""

    labels: torch.Tensor  # long (B, *spatial): the fused argmax
    weights: torch.Tensor  # float (B, *spatial): each pixel's weight in the unsupervised losses
    confident: torch.Tensor  # bool (B, *spatial): passed its threshold (or the scale vote)
    include: torch.Tensor  # bool (B, *spatial): not padding
    num_classes: int


Teacher = Callable[[torch.Tensor], torch.Tensor]


class TrainStep:
    """Shared plumbing; subclasses say which terms they add.

    A step is called with ``weight``, the schedule's factor on the unsupervised terms
    (method/schedules.py): 0 during the supervised warm-up, where a semi-supervised step trains on the
    labeled batch alone, and with ``log``: whether the caller keeps this iteration's logs (the
    pseudo-label statistics are computed only then). ``state_dict`` holds whatever the step learns over
    time (class-wise thresholds) for checkpoints. Under DDP the trainer sets ``reduce_sum`` (a tensor ->
    its sum over ranks) so that those running statistics are the same on every rank.
    """

    reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Domain adaptation with `method.domain_norm: separate`: a context in which the student normalises
    # with the source domain's BatchNorm statistics (method/domain_norm.py); the labeled view runs in it.
    source_statistics: Callable[[], ContextManager] | None = None

    semi_supervised = True

    def __init__(self, method: MethodConfig, weak_aug: WeakAugConfig, size_divisor: int, class_names: list[str] | None = None):
        self.method = method
        self.weak_aug = weak_aug
        self.size_divisor = size_divisor
        self.class_names = class_names
        self.timer = PhaseTimer()  # disabled: sections cost nothing

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def weak(self, images, labels, generator):
        aug = self.weak_aug
        return weak_augment(images, labels, generator, rotate_deg=aug.rotate_deg, scale_range=tuple(aug.scale_range), flip_prob=aug.flip_prob)

    def strong(self, images, generator):
        aug = self.method.strong_aug
        if aug.kind == "natural":
            return colour_augment(
                images, generator, jitter=tuple(aug.jitter), jitter_prob=aug.apply_prob, grayscale_prob=aug.grayscale_prob,
                blur_prob=aug.blur_prob, blur_sigma=tuple(aug.blur_sigma),
            )
        return strong_augment(
            images, generator, brightness=aug.brightness, contrast=tuple(aug.contrast), gamma=tuple(aug.gamma),
            blur_prob=aug.blur_prob, blur_sigma=tuple(aug.blur_sigma), noise_std=aug.noise_std, apply_prob=aug.apply_prob,
        )

    def supervised(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_x: method.supervised_loss (ce, ce_dice, or OHEM cross-entropy as in UniMatch's Cityscapes recipe)."""
        m = self.method
        if m.supervised_loss == "ohem":
            return ohem_loss(logits, labels, thresh=m.ohem_thresh, min_kept=m.ohem_min_kept)
        return supervised_loss(logits, labels, kind=m.supervised_loss)

    def unsupervised(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """L_s, L_m (and UniMatch's terms): method.unsupervised_loss against the pseudo-labels, per-pixel weighted."""
        kind = self.method.unsupervised_loss
        if kind == "dice":
            return pseudo_label_dice_loss(logits, targets, weights)
        ce = pseudo_label_loss(logits, targets, weights, balance=self.method.pseudo_label.balance)
        if kind == "ce_dice":
            return (ce + pseudo_label_dice_loss(logits, targets, weights)) / 2
        return ce

    def forward_views(
        self, student: nn.Module, views: list[torch.Tensor], masked: int | None = None,
        shared_context: Callable[[int], ContextManager] | None = None,
    ) -> list[torch.Tensor]:
        """The student's logits of each view. One forward pass over all views keeps the network's batch
        statistics shared. With ``source_statistics`` the labeled (source) view, ``views[0]``, has its
        own pass in that context; with ``mask.norm_statistics: apart`` the masked view (index
        ``masked``) has its own pass that leaves the running statistics alone. ``shared_context`` (given
        the shared pass's batch size) wraps the shared pass only: UniMatch's feature perturbation."""
        source = [0] if self.source_statistics is not None else []
        apart = [masked] if masked is not None and self.method.mask.norm_statistics == "apart" else []
        shared = [i for i in range(len(views)) if i not in source + apart]
        passes = [(source, self.source_statistics), (shared, None), (apart, lambda: frozen_statistics(student))]
        logits: list[torch.Tensor | None] = [None] * len(views)
        for indices, context in passes:
            if not indices:
                continue
            batch = torch.cat([views[i] for i in indices])
            if context is None:
                context = (lambda: shared_context(batch.shape[0])) if shared_context is not None else contextlib.nullcontext
            with context():
                out = student(batch)
            for i, part in zip(indices, out.split([views[i].shape[0] for i in indices])):
                logits[i] = part
        return logits

    def supervised_only(self, student, batch, generator) -> StepOutput:
        """The labeled batch alone: the supervised method, and any method's warm-up."""
        timer = self.timer
        with timer.section("augment"):
            images, labels = self.weak(batch.labeled_images, batch.labels, generator)
        with timer.section("student"):
            loss = self.supervised(student(images), labels)
            logs = {"loss": loss.item(), "loss_x": loss.item()}
        return StepOutput(loss, logs)

    def __call__(self, student: nn.Module, teacher: Teacher | None, batch: Batch, generator: torch.Generator, weight: float = 1.0, log: bool = True) -> StepOutput:
        raise NotImplementedError


class SupervisedStep(TrainStep):
    semi_supervised = False

    def __call__(self, student, teacher, batch, generator, weight=1.0, log=True):
        return self.supervised_only(student, batch, generator)


class ConsistencyStep(TrainStep):
    """FixMatch, and MaskMatch on top of it: weak-to-strong consistency with CutMix (or BCP's
    labeled-unlabeled copy-paste), optionally multi-scale pseudo-labels and the masked-modeling term."""

    def __init__(self, method, weak_aug, size_divisor, masked: bool, scales, class_names=None):
        super().__init__(method, weak_aug, size_divisor, class_names)
        self.masked = masked
        self.scales = scales
        # Running per-class statistics, made at the first batch (when the class count is known).
        self.thresholds: ClasswiseThreshold | None = None
        self.alignment: DistributionAlignment | None = None
        self._pending_state: dict = {}

    def state_dict(self) -> dict:
        state = {}
        if self.thresholds is not None:
            state["classwise_threshold"] = self.thresholds.state_dict()
        if self.alignment is not None:
            state["distribution_alignment"] = self.alignment.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._pending_state = dict(state)
        self.thresholds = self.alignment = None

    def _running_stats(self, num_classes: int) -> None:
        pl, pending = self.method.pseudo_label, self._pending_state
        if pl.threshold == "classwise" and self.thresholds is None:
            self.thresholds = ClasswiseThreshold(num_classes, pl.class_momentum, reduce_sum=self.reduce_sum)
            if "classwise_threshold" in pending:
                self.thresholds.load_state_dict(pending["classwise_threshold"])
        if pl.align == "labeled" and self.alignment is None:
            self.alignment = DistributionAlignment(num_classes, pl.class_momentum, reduce_sum=self.reduce_sum)
            if "distribution_alignment" in pending:
                self.alignment.load_state_dict(pending["distribution_alignment"])

    def class_threshold_values(self, num_classes: int) -> torch.Tensor:
        """(K,) thresholds: conf_thresh for every class, or the class-wise ones; background's own bar where set."""
        pl = self.method.pseudo_label
        if pl.threshold == "fixed":
            bars = torch.full((num_classes,), float(self.method.conf_thresh))
        else:
            bars = self.thresholds.thresholds(self.method.conf_thresh)
        return with_background_threshold(bars, pl.background_threshold)

    def pseudo_label(
        self, teacher: Teacher, weak_images: torch.Tensor, include: torch.Tensor | None = None, labeled_truth: torch.Tensor | None = None
    ) -> PseudoLabels:
        """The teacher's labels and weights; ``labeled_truth`` (the labeled batch's labels) feeds the
        distribution alignment's target."""
        m, pl = self.method, self.method.pseudo_label
        with torch.no_grad():
            per_scale = scale_probabilities(teacher, weak_images, self.scales, size_divisor=self.size_divisor)
            probs = fuse_probabilities(per_scale, m.ensemble.fuse)
            include = torch.ones(probs.shape[:1] + probs.shape[2:], dtype=torch.bool, device=probs.device) if include is None else include
            self._running_stats(probs.shape[1])
            if self.alignment is not None:
                if labeled_truth is not None:
                    self.alignment.update_target(labeled_truth)
                probs = self.alignment.align(probs, include)
                per_scale = [self.alignment.align(p, update=False) for p in per_scale]
            confidence, labels = probs.max(dim=1)
            if self.thresholds is not None:
                self.thresholds.update(labels, confidence, include)
            bars = self.class_threshold_values(probs.shape[1])
            votes = dict(min_votes=m.ensemble.min_votes, background_votes=m.ensemble.background_votes_of(len(per_scale)))
            if m.ensemble.fuse == "vote":
                is_confident = vote_valid(per_scale, labels, bars, **votes)
            elif m.ensemble.fuse == "agree":
                labels, is_confident = agree_labels(per_scale, labels, bars, **votes)
            else:
                is_confident = confident(labels, confidence, bars)
            is_confident = is_confident & include
            islands = foreground_islands(labels, include) if pl.foreground_islands == "ignore" else None
            if islands is not None:
                is_confident = is_confident & ~islands
            weights = quality_weights(is_confident, include) if pl.weighting == "quality" else is_confident.to(torch.float32)
            if islands is not None:
                weights = weights.masked_fill(islands, 0.0)  # quality weighting weighs every pixel: not these
        return PseudoLabels(labels.long(), weights, is_confident, include, probs.shape[1])

    def strong_view(self, weak_u, pl: PseudoLabels, generator, labeled=None, labels=None):
        """Intensity perturbations and mixing; the targets and weights are mixed with the same boxes so
        every pixel keeps its own target. ``mix: cutmix`` mixes unlabeled samples with each other;
        ``mix: bcp`` pastes a box of a labeled image (with its ground truth, weight 1) into each
        unlabeled one before the intensity perturbations."""
        m = self.method
        batch_u, spatial = weak_u.shape[0], weak_u.shape[2:]
        if m.mix == "bcp":
            partner = torch.arange(batch_u, device=weak_u.device) % labeled.shape[0]
            box = copy_paste_box_mask(batch_u, spatial, m.bcp_box, generator=generator, device=weak_u.device)
            truth = labels[partner]
            known = truth != 255
            mixed = copy_paste(labeled[partner], weak_u, box)
            return (
                self.strong(mixed, generator),
                copy_paste(truth.masked_fill(~known, 0), pl.labels, box),
                copy_paste(known.to(torch.float32), pl.weights, box),
            )
        box = cutmix_box_mask(batch_u, spatial, prob=m.strong_aug.cutmix_prob, generator=generator, device=weak_u.device)
        partner = torch.roll(torch.arange(batch_u, device=weak_u.device), 1)
        return cutmix(self.strong(weak_u, generator), box, partner), cutmix(pl.labels, box, partner), cutmix(pl.weights, box, partner)

    def labeled_view(self, labeled, labels, weak_u, pl: PseudoLabels, generator):
        """The supervised view. ``mix: bcp`` pastes a box of an unlabeled image into each labeled one (BCP's
        outward direction): the ground truth is ignored inside the box, where the pseudo-labels teach.
        Returns (images, labels for L_x, pseudo-label targets and weights inside the box or None)."""
        if self.method.mix != "bcp" or not self.method.bcp_outward:
            return labeled, labels, None
        batch_l, spatial = labeled.shape[0], labeled.shape[2:]
        partner = torch.arange(batch_l, device=labeled.device) % weak_u.shape[0]
        box = copy_paste_box_mask(batch_l, spatial, self.method.bcp_box, generator=generator, device=labeled.device)
        images = copy_paste(weak_u[partner], labeled, box)
        outside = torch.zeros_like(pl.weights[partner])
        targets = (pl.labels[partner], copy_paste(pl.weights[partner], outside, box))
        return images, labels.masked_fill(box[:, 0], 255), targets

    def masked_view(self, strong, strong_targets, strong_weights, weak, pl: PseudoLabels, generator):
        """The masked-modeling input (`mask.view`: the strong or the weak view, patches dropped) and the
        pseudo-labels that go with it."""
        m = self.method
        view, targets, weights = (strong, strong_targets, strong_weights) if m.mask.view == "strong" else (weak, pl.labels, pl.weights)
        keep = patch_keep_mask(view.shape[0], view.shape[2:], m.mask.patch_size, m.mask.ratio, generator=generator, device=view.device)
        return apply_patch_mask(view, keep, m.mask.fill), targets, weights

    def weak_views(self, teacher, batch, generator, log=True):
        """Weakly augmented labeled and unlabeled batches, the teacher's pseudo-labels for the latter, and
        the pseudo-label log values (against ground truth where the batch carries it); none unless ``log``:
        they cost a device sync per value and the trainer keeps only every ``train.log_every``-th step's."""
        with self.timer.section("augment"):
            labeled, labels = self.weak(batch.labeled_images, batch.labels, generator)
            ignore, truth = batch.unlabeled_ignore, batch.unlabeled_truth
            # The same weak transform carries the padding map or, for logging, the ground truth.
            carried = ignore.long() if ignore is not None else (truth.long() if truth is not None else None)
            weak_u, carried = self.weak(batch.unlabeled_images, carried, generator)
            include = carried != 255 if ignore is not None else None
            truth = carried if (ignore is None and truth is not None) else None
        with self.timer.section("teacher"):
            pl = self.pseudo_label(teacher, weak_u, include, labels)
            logs = self.pseudo_label_logs(pl, truth) if log else {}
        return labeled, labels, weak_u, pl, logs

    def pseudo_label_logs(self, pl: PseudoLabels, truth: torch.Tensor | None) -> dict[str, float]:
        k = pl.num_classes
        names = self.class_names if self.class_names is not None and len(self.class_names) == k else [str(c) for c in range(k)]
        logs = pseudo_label_stats(pl.labels, pl.confident, names, truth, pl.include)
        if self.method.pseudo_label.threshold == "classwise":
            logs.update({f"pl_thresh_{name}": value for name, value in zip(names, self.class_threshold_values(k).tolist())})
        if self.method.pseudo_label.align == "labeled":
            ratio = self.alignment.ratio() if self.alignment is not None else torch.ones(k)
            logs.update({f"pl_align_{name}": value for name, value in zip(names, ratio.tolist())})
        return logs

    def __call__(self, student, teacher, batch, generator, weight=1.0, log=True):
        if weight <= 0:
            return self.supervised_only(student, batch, generator)
        m, timer = self.method, self.timer
        labeled, labels, weak_u, pl, pl_logs = self.weak_views(teacher, batch, generator, log)
        with timer.section("augment"):
            strong_u, strong_targets, strong_weights = self.strong_view(weak_u, pl, generator, labeled, labels)
            labeled_in, labels_in, outward = self.labeled_view(labeled, labels, weak_u, pl, generator)
            views = [labeled_in, strong_u]
            if self.masked:
                masked_u, masked_targets, masked_weights = self.masked_view(strong_u, strong_targets, strong_weights, weak_u, pl, generator)
                views.append(masked_u)

        with timer.section("student"):
            logits = self.forward_views(student, views, masked=2 if self.masked else None)
            loss_x = self.supervised(logits[0], labels_in)
            loss_s = self.unsupervised(logits[1], strong_targets, strong_weights)
            logs = {"loss_x": loss_x.item(), "loss_s": loss_s.item()}
            if outward is not None:
                loss_out = self.unsupervised(logits[0], *outward)
                loss_s = loss_s + loss_out
                logs["loss_bcp_out"] = loss_out.item()
            unsup = m.lambda_u * loss_s
            if self.masked:
                loss_m = self.unsupervised(logits[2], masked_targets, masked_weights)
                unsup = unsup + m.lambda_m * loss_m
                logs["loss_m"] = loss_m.item()
            loss = loss_x + weight * unsup
            logs.update(valid_frac=pl.confident.float().mean().item(), unsup_weight=weight, loss=loss.item(), **pl_logs)
        return StepOutput(loss, logs)


class UniMatchStep(ConsistencyStep):
    """UniMatch: two strong views (independent perturbations and CutMix boxes) and a feature-perturbed
    weak view, L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2. As MaskMatch's base, the masked view
    (of the first strong view, or of the weak view) joins inside the average with weight lambda_m.
    The schedule's weight multiplies every unsupervised term; with ``mix: bcp`` the labeled view's
    pasted box adds a term of weight 0.5.

    The weak view joins the same forward pass as the other views, and only its rows decode
    channel-dropped encoder features (method/perturbation.py): its encoder pass is clean and its batch
    statistics are shared with the other views, as in UniMatch. A separate perturbed-only pass would
    feed BatchNorm running statistics (and through EMA, the teacher's) with perturbed features.
    """

    WEIGHTS = {"loss_x": 1.0, "loss_s1": 0.25, "loss_s2": 0.25, "loss_fp": 0.5, "loss_bcp_out": 0.5}

    def __call__(self, student, teacher, batch, generator, weight=1.0, log=True):
        if weight <= 0:
            return self.supervised_only(student, batch, generator)
        m, timer = self.method, self.timer
        labeled, labels, weak_u, pl, pl_logs = self.weak_views(teacher, batch, generator, log)
        with timer.section("augment"):
            strong1, targets1, weights1 = self.strong_view(weak_u, pl, generator, labeled, labels)
            strong2, targets2, weights2 = self.strong_view(weak_u, pl, generator, labeled, labels)
            labeled_in, labels_in, outward = self.labeled_view(labeled, labels, weak_u, pl, generator)
            views = [labeled_in, strong1, strong2]
            if self.masked:
                masked_u, masked_targets, masked_weights = self.masked_view(strong1, targets1, weights1, weak_u, pl, generator)
                views.append(masked_u)
        with timer.section("student"):
            views.append(weak_u)  # decoded from perturbed features: the last rows of the shared pass
            perturbed = lambda rows: perturbed_encoder(student, m.fp_dropout, generator, rows=slice(rows - weak_u.shape[0], None))
            logits = self.forward_views(student, views, masked=3 if self.masked else None, shared_context=perturbed)
            fp_logits = logits[-1]

            terms = {
                "loss_x": self.supervised(logits[0], labels_in),
                "loss_s1": self.unsupervised(logits[1], targets1, weights1),
                "loss_s2": self.unsupervised(logits[2], targets2, weights2),
                "loss_fp": self.unsupervised(fp_logits, pl.labels, pl.weights),
            }
            weights = {name: (w if name == "loss_x" else weight * w) for name, w in self.WEIGHTS.items()}
            if outward is not None:
                terms["loss_bcp_out"] = self.unsupervised(logits[0], *outward)
            if self.masked:
                terms["loss_m"], weights["loss_m"] = self.unsupervised(logits[3], masked_targets, masked_weights), weight * m.lambda_m
            loss = sum(weights[name] * term for name, term in terms.items()) / 2
            logs = {name: term.item() for name, term in terms.items()}
            logs.update(valid_frac=pl.confident.float().mean().item(), unsup_weight=weight, loss=loss.item(), **pl_logs)
        return StepOutput(loss, logs)


def build_step(method: MethodConfig, weak_aug: WeakAugConfig, size_divisor: int, class_names: list[str] | None = None) -> TrainStep:
    """The method's step. ``class_names`` (every class, background first) names the pseudo-label logs."""
    if method.name == "supervised":
        return SupervisedStep(method, weak_aug, size_divisor, class_names)
    if method.name in ("fixmatch", "unimatch"):  # the baselines: single-scale pseudo-labels, no masking
        step = UniMatchStep if method.name == "unimatch" else ConsistencyStep
        return step(method, weak_aug, size_divisor, masked=False, scales=[1.0], class_names=class_names)
    # MaskMatch on either base. mask.ratio 0 (or lambda_m 0) switches masked modeling off rather than
    # duplicating a consistency term.
    masked = method.mask.ratio > 0 and method.lambda_m > 0
    step = UniMatchStep if method.base == "unimatch" else ConsistencyStep
    return step(method, weak_aug, size_divisor, masked=masked, scales=method.ensemble.scales, class_names=class_names)
