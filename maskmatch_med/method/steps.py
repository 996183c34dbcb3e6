"""One training step per method, over whole batches on the training device.

    supervised : L = L_x
    fixmatch   : L = L_x + lambda_u * L_s                    (single-scale pseudo-labels)
    unimatch   : L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2
    maskmatch  : the base's loss plus lambda_m * L_m          (multi-scale pseudo-labels, masked view);
                 method.base picks fixmatch (default) or unimatch

DESIGN.md section 1 defines each term. A step returns the loss to back-propagate and a dict of
floats to log; the optimizer, EMA update and everything else stays in the engine.

Each step times its phases ("augment", "teacher", "student") on its `timer`, a disabled (no-op)
engine.timing.PhaseTimer unless a profiler such as benchmarks/speed.py swaps in an enabled one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from maskmatch_med.config import MethodConfig, WeakAugConfig
from maskmatch_med.engine.timing import PhaseTimer
from maskmatch_med.method.augment import colour_augment, cutmix, cutmix_box_mask, strong_augment, weak_augment
from maskmatch_med.method.ensemble import multiscale_probabilities, pseudo_labels
from maskmatch_med.method.losses import ohem_loss, pseudo_label_dice_loss, pseudo_label_loss, supervised_loss
from maskmatch_med.method.masking import apply_patch_mask, patch_keep_mask
from maskmatch_med.method.perturbation import perturbed_encoder


@dataclass
class Batch:
    labeled_images: torch.Tensor  # (B, C, *spatial)
    labels: torch.Tensor  # (B, *spatial) long
    unlabeled_images: torch.Tensor | None = None  # (B_u, C, *spatial)
    unlabeled_ignore: torch.Tensor | None = None  # (B_u, *spatial), 255 on padding: never a pseudo-label target


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, float]


Teacher = Callable[[torch.Tensor], torch.Tensor]


class TrainStep:
    """Shared plumbing; subclasses say which terms they add."""

    semi_supervised = True

    def __init__(self, method: MethodConfig, weak_aug: WeakAugConfig, size_divisor: int):
        self.method = method
        self.weak_aug = weak_aug
        self.size_divisor = size_divisor
        self.timer = PhaseTimer()  # disabled: sections cost nothing

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

    def unsupervised(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """L_s, L_m (and UniMatch's terms): method.unsupervised_loss against the pseudo-labels on valid pixels."""
        if self.method.unsupervised_loss == "dice":
            return pseudo_label_dice_loss(logits, targets, valid)
        return pseudo_label_loss(logits, targets, valid)

    def __call__(self, student: nn.Module, teacher: Teacher | None, batch: Batch, generator: torch.Generator) -> StepOutput:
        raise NotImplementedError


class SupervisedStep(TrainStep):
    semi_supervised = False

    def __call__(self, student, teacher, batch, generator):
        timer = self.timer
        with timer.section("augment"):
            images, labels = self.weak(batch.labeled_images, batch.labels, generator)
        with timer.section("student"):
            loss = self.supervised(student(images), labels)
            logs = {"loss": loss.item(), "loss_x": loss.item()}
        return StepOutput(loss, logs)


class ConsistencyStep(TrainStep):
    """FixMatch, and MaskMatch on top of it: weak-to-strong consistency with CutMix, optionally
    multi-scale pseudo-labels and the masked-modeling term."""

    def __init__(self, method, weak_aug, size_divisor, masked: bool, scales):
        super().__init__(method, weak_aug, size_divisor)
        self.masked = masked
        self.scales = scales

    def pseudo_label(self, teacher: Teacher, weak_images: torch.Tensor):
        with torch.no_grad():
            probs = multiscale_probabilities(teacher, weak_images, self.scales, fuse=self.method.ensemble.fuse, size_divisor=self.size_divisor)
        return pseudo_labels(probs, self.method.conf_thresh)

    def strong_view(self, weak_u, targets, valid, generator):
        """Intensity perturbations, then CutMix between unlabeled samples; the pseudo-labels and their
        validity are mixed with the same boxes so every pixel keeps its own target."""
        batch_u, spatial = weak_u.shape[0], weak_u.shape[2:]
        box = cutmix_box_mask(batch_u, spatial, prob=self.method.strong_aug.cutmix_prob, generator=generator, device=weak_u.device)
        partner = torch.roll(torch.arange(batch_u, device=weak_u.device), 1)
        return cutmix(self.strong(weak_u, generator), box, partner), cutmix(targets, box, partner), cutmix(valid, box, partner)

    def masked_view(self, strong, strong_targets, strong_valid, weak, targets, valid, generator):
        """The masked-modeling input (`mask.view`: the strong or the weak view, patches dropped) and the
        pseudo-labels that go with it."""
        m = self.method
        view, view_targets, view_valid = (strong, strong_targets, strong_valid) if m.mask.view == "strong" else (weak, targets, valid)
        keep = patch_keep_mask(view.shape[0], view.shape[2:], m.mask.patch_size, m.mask.ratio, generator=generator, device=view.device)
        return apply_patch_mask(view, keep, m.mask.fill), view_targets, view_valid

    def weak_views(self, teacher, batch, generator):
        """Weakly augmented labeled and unlabeled batches, and the teacher's pseudo-labels for the latter."""
        with self.timer.section("augment"):
            labeled, labels = self.weak(batch.labeled_images, batch.labels, generator)
            ignore = batch.unlabeled_ignore
            weak_u, ignore = self.weak(batch.unlabeled_images, None if ignore is None else ignore.long(), generator)
        with self.timer.section("teacher"):
            targets, _, valid = self.pseudo_label(teacher, weak_u)
            if ignore is not None:
                valid = valid & (ignore != 255)
        return labeled, labels, weak_u, targets, valid

    def __call__(self, student, teacher, batch, generator):
        m, timer = self.method, self.timer
        labeled, labels, weak_u, targets, valid = self.weak_views(teacher, batch, generator)
        with timer.section("augment"):
            strong_u, strong_targets, strong_valid = self.strong_view(weak_u, targets, valid, generator)
            views = [labeled, strong_u]
            if self.masked:
                masked_u, masked_targets, masked_valid = self.masked_view(strong_u, strong_targets, strong_valid, weak_u, targets, valid, generator)
                views.append(masked_u)

        with timer.section("student"):
            # One forward pass over all views keeps the network's batch statistics shared.
            logits = student(torch.cat(views)).split([v.shape[0] for v in views])
            loss_x = self.supervised(logits[0], labels)
            loss_s = self.unsupervised(logits[1], strong_targets, strong_valid)
            loss = loss_x + m.lambda_u * loss_s
            logs = {"loss_x": loss_x.item(), "loss_s": loss_s.item(), "valid_frac": valid.float().mean().item()}
            if self.masked:
                loss_m = self.unsupervised(logits[2], masked_targets, masked_valid)
                loss = loss + m.lambda_m * loss_m
                logs["loss_m"] = loss_m.item()
            logs["loss"] = loss.item()
        return StepOutput(loss, logs)


class UniMatchStep(ConsistencyStep):
    """UniMatch: two strong views (independent perturbations and CutMix boxes) and a feature-perturbed
    weak view, L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2. As MaskMatch's base, the masked view
    (of the first strong view, or of the weak view) joins inside the average with weight lambda_m.

    The weak view joins the same forward pass as the other views, and only its rows decode
    channel-dropped encoder features (method/perturbation.py): its encoder pass is clean and its batch
    statistics are shared with the other views, as in UniMatch. A separate perturbed-only pass would
    feed BatchNorm running statistics (and through EMA, the teacher's) with perturbed features.
    """

    WEIGHTS = {"loss_x": 1.0, "loss_s1": 0.25, "loss_s2": 0.25, "loss_fp": 0.5}

    def __call__(self, student, teacher, batch, generator):
        m, timer = self.method, self.timer
        labeled, labels, weak_u, targets, valid = self.weak_views(teacher, batch, generator)
        with timer.section("augment"):
            strong1, targets1, valid1 = self.strong_view(weak_u, targets, valid, generator)
            strong2, targets2, valid2 = self.strong_view(weak_u, targets, valid, generator)
            views = [labeled, strong1, strong2]
            if self.masked:
                masked_u, masked_targets, masked_valid = self.masked_view(strong1, targets1, valid1, weak_u, targets, valid, generator)
                views.append(masked_u)
        with timer.section("student"):
            views.append(weak_u)  # decoded from perturbed features: the last rows of the batch
            batch_views = torch.cat(views)
            with perturbed_encoder(student, m.fp_dropout, generator, rows=slice(batch_views.shape[0] - weak_u.shape[0], None)):
                logits = student(batch_views).split([v.shape[0] for v in views])
            fp_logits = logits[-1]

            terms = {
                "loss_x": self.supervised(logits[0], labels),
                "loss_s1": self.unsupervised(logits[1], targets1, valid1),
                "loss_s2": self.unsupervised(logits[2], targets2, valid2),
                "loss_fp": self.unsupervised(fp_logits, targets, valid),
            }
            weights = dict(self.WEIGHTS)
            if self.masked:
                terms["loss_m"], weights["loss_m"] = self.unsupervised(logits[3], masked_targets, masked_valid), m.lambda_m
            loss = sum(weights[name] * term for name, term in terms.items()) / 2
            logs = {name: term.item() for name, term in terms.items()}
            logs.update(valid_frac=valid.float().mean().item(), loss=loss.item())
        return StepOutput(loss, logs)


def build_step(method: MethodConfig, weak_aug: WeakAugConfig, size_divisor: int) -> TrainStep:
    if method.name == "supervised":
        return SupervisedStep(method, weak_aug, size_divisor)
    if method.name in ("fixmatch", "unimatch"):  # the baselines: single-scale pseudo-labels, no masking
        step = UniMatchStep if method.name == "unimatch" else ConsistencyStep
        return step(method, weak_aug, size_divisor, masked=False, scales=[1.0])
    # MaskMatch on either base. mask.ratio 0 (or lambda_m 0) switches masked modeling off rather than
    # duplicating a consistency term.
    masked = method.mask.ratio > 0 and method.lambda_m > 0
    step = UniMatchStep if method.base == "unimatch" else ConsistencyStep
    return step(method, weak_aug, size_divisor, masked=masked, scales=method.ensemble.scales)
