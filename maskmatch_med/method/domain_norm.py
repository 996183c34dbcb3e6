"""BatchNorm statistics kept apart: the source domain's (domain adaptation, `method.domain_norm: separate`)
and the masked view's (`method.mask.norm_statistics: apart`, `frozen_statistics`).

A network trained on labeled source images and unlabeled target images normalises each forward pass
with the statistics of whatever it was fed. When one pass holds both domains, and the running
statistics that inference uses average over both, the target is normalised with statistics that are
partly the source's: on the phantom (style A -> C), re-estimating only those statistics on target
slices raised a teacher's target validation Dice from 0.375 to 0.427 (AdaBN, Li et al. 2016). The masked view
skews them the same way: a mostly blanked image is unlike any seen at inference.

`DomainStatistics` keeps a second set of BatchNorm buffers (running mean, variance, batch count) for
the source domain beside a model's own, in the spirit of domain-specific BatchNorm (DSBN, Chang et al.
CVPR 2019) with the affine weights shared. The model's own buffers are the target's: the domain it is
adapted to and exported for, so an unchanged `predict` normalises target scans with target statistics.
Inside `with stats.source():` the two sets are swapped, so that a source forward pass (the labeled
view) normalises with, and updates, only the source set. Under DDP the buffers that DDP broadcasts
from rank 0 are the model's own (target) set; each rank's source set follows its own source batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from maskmatch_med.method.ema import unwrap

__all__ = ["DomainStatistics", "frozen_statistics", "norm_buffers", "norm_layers"]


def norm_layers(model: nn.Module) -> Iterator[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """(name, layer) of every BatchNorm (and SyncBatchNorm) layer of ``model`` that keeps running statistics."""
    for prefix, module in unwrap(model).named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            yield prefix, module


def _slots(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every BatchNorm running buffer of ``model`` as (module, attribute), by its name in ``named_buffers``."""
    found = {}
    for prefix, module in norm_layers(model):
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None:
                found[f"{prefix}.{name}" if prefix else name] = (module, name)
    return found


def norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every BatchNorm (and SyncBatchNorm) running buffer of ``model``, by its name in ``named_buffers``."""
    return {key: getattr(module, name) for key, (module, name) in _slots(model).items()}


@contextmanager
def frozen_statistics(model: nn.Module) -> Iterator[None]:
    """Training-mode BatchNorm inside normalises with each batch's own statistics but leaves the running
    statistics as they are (momentum 0), so that inputs unlike any at inference, such as the masked
    view with 70% of its patches blanked, do not shift what validation, the teacher and predict use."""
    layers = [layer for _, layer in norm_layers(model)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


class DomainStatistics:
    """The source domain's copy of a model's BatchNorm buffers.

    The copy is made from the model's buffers at the first ``source()`` (after a supervised warm-up,
    they are the source statistics); a model without BatchNorm makes every call a no-op.
    """

    def __init__(self, model: nn.Module):
        self.model = unwrap(model)
        self.stored: dict[str, torch.Tensor] | None = None

    def _swap(self) -> None:
        # The buffer tensors trade places instead of their values: a training-mode BatchNorm keeps its
        # running buffers for the backward pass, and an in-place copy would invalidate them.
        for key, (module, name) in _slots(self.model).items():
            live = getattr(module, name)
            setattr(module, name, self.stored[key])
            self.stored[key] = live

    @contextmanager
    def source(self) -> Iterator[None]:
        """The model normalises with (and, in training mode, updates) the source statistics inside."""
        if self.stored is None:
            self.stored = {name: b.detach().clone() for name, b in norm_buffers(self.model).items()}
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def follow(self, other: DomainStatistics, momentum: float) -> None:
        """EMA towards ``other``'s source statistics (the teacher's copy following the student's), as
        method/ema.py does for the model's own buffers: floats ``m * self + (1 - m) * other``, counts copied."""
        if other.stored is None:
            return
        if self.stored is None or momentum <= 0:
            self.stored = {name: b.clone() for name, b in other.stored.items()}
            return
        for name, mine in self.stored.items():
            theirs = other.stored[name].to(mine.device)
            if mine.is_floating_point():
                mine.lerp_(theirs.to(mine.dtype), 1.0 - momentum)
            else:
                mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.stored is None else {name: b.detach().clone() for name, b in self.stored.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is None:
            self.stored = None
            return
        live = norm_buffers(self.model)
        if set(state) != set(live):
            raise ValueError("source statistics do not fit the model's BatchNorm layers")
        self.stored = {name: state[name].to(device=live[name].device, dtype=live[name].dtype).clone() for name in live}
