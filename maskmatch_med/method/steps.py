"""One training step per method, over whole batches on the training device.

    supervised : L = L_x
    fixmatch   : L = L_x + lambda_u * L_s                    (single-scale pseudo-labels)
    maskmatch  : L = L_x + lambda_u * L_s + lambda_m * L_m   (multi-scale pseudo-labels, masked view)

DESIGN.md section 1 defines each term. A step returns the loss to back-propagate and a dict of
floats to log; the optimizer, EMA update and everything else stays in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from maskmatch_med.config import MethodConfig, WeakAugConfig
from maskmatch_med.method.augment import cutmix, cutmix_box_mask, strong_augment, weak_augment
from maskmatch_med.method.ensemble import multiscale_probabilities, pseudo_labels
from maskmatch_med.method.losses import pseudo_label_loss, supervised_loss
from maskmatch_med.method.masking import apply_patch_mask, patch_keep_mask


@dataclass
class Batch:
    labeled_images: torch.Tensor  # (B, C, *spatial)
    labels: torch.Tensor  # (B, *spatial) long
    unlabeled_images: torch.Tensor | None = None  # (B_u, C, *spatial)


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

    def weak(self, images, labels, generator):
        aug = self.weak_aug
        return weak_augment(images, labels, generator, rotate_deg=aug.rotate_deg, scale_range=tuple(aug.scale_range), flip_prob=aug.flip_prob)

    def strong(self, images, generator):
        aug = self.method.strong_aug
        return strong_augment(
            images, generator, brightness=aug.brightness, contrast=tuple(aug.contrast), gamma=tuple(aug.gamma),
            blur_prob=aug.blur_prob, blur_sigma=tuple(aug.blur_sigma), noise_std=aug.noise_std, apply_prob=aug.apply_prob,
        )

    def __call__(self, student: nn.Module, teacher: Teacher | None, batch: Batch, generator: torch.Generator) -> StepOutput:
        raise NotImplementedError


class SupervisedStep(TrainStep):
    semi_supervised = False

    def __call__(self, student, teacher, batch, generator):
        images, labels = self.weak(batch.labeled_images, batch.labels, generator)
        loss = supervised_loss(student(images), labels, kind=self.method.supervised_loss)
        return StepOutput(loss, {"loss": loss.item(), "loss_x": loss.item()})


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

    def __call__(self, student, teacher, batch, generator):
        m = self.method
        labeled, labels = self.weak(batch.labeled_images, batch.labels, generator)
        weak_u, _ = self.weak(batch.unlabeled_images, None, generator)
        targets, confidence, valid = self.pseudo_label(teacher, weak_u)

        # Strong view: intensity perturbations, then CutMix between unlabeled samples; the pseudo-labels
        # and their validity are mixed with the same boxes so every pixel keeps its own target.
        batch_u, spatial = weak_u.shape[0], weak_u.shape[2:]
        box = cutmix_box_mask(batch_u, spatial, prob=m.strong_aug.cutmix_prob, generator=generator, device=weak_u.device)
        partner = torch.roll(torch.arange(batch_u, device=weak_u.device), 1)
        strong_u = cutmix(self.strong(weak_u, generator), box, partner)
        strong_targets, strong_valid = cutmix(targets, box, partner), cutmix(valid, box, partner)

        views = [labeled, strong_u]
        if self.masked:
            keep = patch_keep_mask(batch_u, spatial, m.mask.patch_size, m.mask.ratio, generator=generator, device=weak_u.device)
            if m.mask.view == "strong":
                masked_u, masked_targets, masked_valid = apply_patch_mask(strong_u, keep, m.mask.fill), strong_targets, strong_valid
            else:
                masked_u, masked_targets, masked_valid = apply_patch_mask(weak_u, keep, m.mask.fill), targets, valid
            views.append(masked_u)

        # One forward pass over all views keeps the network's batch statistics shared, as UniMatch does.
        logits = student(torch.cat(views)).split([v.shape[0] for v in views])
        loss_x = supervised_loss(logits[0], labels, kind=m.supervised_loss)
        loss_s = pseudo_label_loss(logits[1], strong_targets, strong_valid)
        loss = loss_x + m.lambda_u * loss_s
        logs = {"loss_x": loss_x.item(), "loss_s": loss_s.item(), "valid_frac": valid.float().mean().item()}
        if self.masked:
            loss_m = pseudo_label_loss(logits[2], masked_targets, masked_valid)
            loss = loss + m.lambda_m * loss_m
            logs["loss_m"] = loss_m.item()
        logs["loss"] = loss.item()
        return StepOutput(loss, logs)


def build_step(method: MethodConfig, weak_aug: WeakAugConfig, size_divisor: int) -> TrainStep:
    if method.name == "supervised":
        return SupervisedStep(method, weak_aug, size_divisor)
    if method.name == "fixmatch":
        return ConsistencyStep(method, weak_aug, size_divisor, masked=False, scales=[1.0])
    # mask.ratio 0 (or lambda_m 0) switches masked modeling off rather than duplicating L_s.
    masked = method.mask.ratio > 0 and method.lambda_m > 0
    return ConsistencyStep(method, weak_aug, size_divisor, masked=masked, scales=method.ensemble.scales)
