"""Which slices a rank trains on at a given iteration: epoch-wise shuffles, split across ranks.

Like torch's DistributedSampler, every epoch is a fresh permutation (seeded by (seed, epoch)) dealt
round-robin to the ranks; unlike it, the sampler is a pure function of the iteration, so a resumed
run draws exactly the batches the uninterrupted run would have, with no sampler state to save.
"""

from __future__ import annotations

import torch


class EpochSampler:
    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("cannot sample from an empty set")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        # Each rank's share of an epoch; small sets are repeated so every rank gets at least one batch.
        self.per_rank = max(-(-size // world_size), batch_size)
        self._cache: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch in self._cache:
            return self._cache[epoch]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        total = self.per_rank * self.world_size
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(-(-total // self.size))])[:total]
        self._cache = {epoch: order[self.rank :: self.world_size]}  # batches walk epochs in order
        return self._cache[epoch]

    def indices(self, iteration: int) -> torch.Tensor:
        """The `batch_size` indices this rank uses at `iteration` (0-based)."""
        start = iteration * self.batch_size
        first, last = start // self.per_rank, (start + self.batch_size - 1) // self.per_rank
        pool = torch.cat([self._epoch(epoch) for epoch in range(first, last + 1)])
        offset = start - first * self.per_rank
        return pool[offset : offset + self.batch_size]
