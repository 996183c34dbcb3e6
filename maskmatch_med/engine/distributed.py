"""torch.distributed plumbing for `torchrun ... -m maskmatch_med train RECIPE` (DDP).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op and the run
is a plain single process. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistContext:
    """Join the process group torchrun prepared (if any). `device_kind` is "cuda" or "cpu"."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank, local_rank, world_size)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def mean_over_ranks(ctx: DistContext, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of scalars over all ranks (the same keys on every rank)."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, tensor.tolist())}


def sum_over_ranks(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `tensor` over all ranks (a new tensor; the same shape on every rank)."""
    if not ctx.enabled:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_states(ctx: DistContext, state: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's RNG state (a uint8 tensor of the same size on each rank), in rank order."""
    if not ctx.enabled:
        return [state]
    local = state.to(device)  # NCCL gathers CUDA tensors only
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    return [g.cpu() for g in gathered]


def all_ranks(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True only if `flag` is True on every rank, so all ranks stop together."""
    if not ctx.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())
