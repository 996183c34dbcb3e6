"""Wall time per phase of a training step, for profiling (benchmarks/speed.py).

    timer = PhaseTimer(enabled=True, device=device)
    with timer.section("teacher"):
        ...
    timer.totals  # {"teacher": seconds, ...}, accumulated until reset()

A disabled timer (the default everywhere) hands back one shared do-nothing context manager, so the
training path pays a method call per section and nothing else. An enabled timer on a CUDA device
synchronizes at both ends of every section, so that the time of the queued kernels lands in the phase
that launched them (this slows the step a little; only enable it to measure). Sections must not nest:
a nested section's time would count twice.
"""

from __future__ import annotations

import time

import torch

__all__ = ["PhaseTimer"]


class _NoSection:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> bool:
        return False


_NO_SECTION = _NoSection()


class _Section:
    __slots__ = ("timer", "name", "started")

    def __init__(self, timer: PhaseTimer, name: str):
        self.timer, self.name, self.started = timer, name, 0.0

    def __enter__(self) -> None:
        self.timer._sync()
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> bool:
        self.timer._sync()
        self.timer._add(self.name, time.perf_counter() - self.started)
        return False


class PhaseTimer:
    """Accumulates wall time per named phase while `enabled`; a no-op otherwise."""

    def __init__(self, enabled: bool = False, device: torch.device | str | None = None):
        self.enabled = bool(enabled)
        self.device = torch.device(device) if device is not None else None
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def section(self, name: str):
        """Context manager timing its block as phase `name` (added to earlier blocks of that name)."""
        if not self.enabled:
            return _NO_SECTION
        return _Section(self, name)

    def reset(self) -> None:
        self.totals, self.counts = {}, {}

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1
