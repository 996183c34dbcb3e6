"""EMA (mean-teacher) copy of the student: the teacher of fixmatch, unimatch and maskmatch."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["make_teacher", "ema_update", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of DistributedDataParallel / DataParallel, else the model itself."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of the student with gradients off, in eval mode."""
    teacher = copy.deepcopy(unwrap(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, step: int | None = None) -> float:
    """teacher <- m * teacher + (1 - m) * student, in place.

    Applies to parameters and floating-point buffers (e.g. BatchNorm running statistics); integer
    buffers (``num_batches_tracked``) are copied. With ``step`` (0-based count of updates so far) the
    mean-teacher warm-up ``m = min(1 - 1 / (step + 1), momentum)`` is used, so the first update copies the
    student. Returns the momentum used.
    """
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if step is not None:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        momentum = min(1.0 - 1.0 / (step + 1), momentum)
    weight = 1.0 - momentum
    student = unwrap(student)
    teacher = unwrap(teacher)

    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    t_bufs = dict(teacher.named_buffers())
    s_bufs = dict(student.named_buffers())
    if t_params.keys() != s_params.keys() or t_bufs.keys() != s_bufs.keys():
        raise ValueError("teacher and student have different parameters or buffers")

    for name, t in t_params.items():
        t.lerp_(s_params[name].detach().to(dtype=t.dtype, device=t.device), weight)
    for name, t in t_bufs.items():
        s = s_bufs[name].detach().to(device=t.device)
        if t.is_floating_point():
            t.lerp_(s.to(t.dtype), weight)
        else:
            t.copy_(s)
    return momentum
