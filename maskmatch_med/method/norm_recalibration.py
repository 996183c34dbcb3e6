"""BatchNorm statistics re-estimated on clean unlabeled images (`method.recalibrate_norm`, AdaBN).

During semi-supervised training the running statistics average over every view the student sees:
strongly augmented and CutMix'ed images, the masked view with most of its patches blanked and, in
domain adaptation, source and target images in one pass. Inference then normalises a clean scan with
statistics of inputs unlike it. Re-estimating only those statistics on clean unlabeled images (the
target domain's, in domain adaptation) before validation and export leaves the weights as trained
and gives inference the statistics of what it will see (Li et al. 2016, "Revisiting Batch
Normalization For Practical Domain Adaptation"). On the phantom, in training (da_demo.yaml, style
A -> C, 3 seeds) it took the target test Dice from 36.2 / 36.3 % to 47.5 / 42.7 % (FixMatch /
MaskMatch); semi-supervised at 1 labeled it was neutral on validation (0.630 against 0.632, seed 0),
so demo.yaml leaves it off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from maskmatch_med.method.domain_norm import norm_layers

__all__ = ["recalibrated_copy", "recalibrate_statistics", "spread_indices"]


def spread_indices(total: int, count: int) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(total)`` (all of them when ``count >= total``), so the
    re-estimate sees every case of a set rather than the first few."""
    if total <= 0:
        raise ValueError("no images to re-estimate the statistics on")
    if count >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, count).round().long()


@torch.no_grad()
def recalibrate_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace ``model``'s BatchNorm running statistics, in place, by their plain average over ``batches``.

    Only the BatchNorm layers run in training mode (momentum ``None``: a cumulative average, as
    ``torch.optim.swa_utils.update_bn`` does); every other layer stays in eval mode, so dropout draws
    nothing and the global random state is untouched. The weights do not change. Returns the number
    of batches seen; a model without BatchNorm is left as it is.
    """
    layers = [layer for _, layer in norm_layers(model)]
    if not layers:
        return 0
    modes = {module: module.training for module in model.modules()}
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    seen = 0
    try:
        for images in batches:
            model(images)
            seen += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    if seen == 0:
        raise ValueError("no batches to re-estimate the statistics on")
    return seen


def recalibrated_copy(model: nn.Module, batches: Callable[[], Iterable[torch.Tensor]]) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose BatchNorm statistics are re-estimated on ``batches()``;
    ``model`` itself, and the training it takes part in, stay as they were."""
    calibrated = copy.deepcopy(model)
    recalibrate_statistics(calibrated, batches())
    return calibrated.eval()

