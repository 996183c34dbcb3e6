"""When the unsupervised terms start and how fast they grow (SSL4MIS, Laine & Aila 2017).

A young teacher's confident pixels are mostly background, so the consistency and masked-modeling terms
wait for a supervised warm-up and then ramp up along a sigmoid: weight(t) = exp(-5 (1 - t)^2),
t = iterations since the warm-up / rampup_iterations, clipped to [0, 1]. Pure functions of the
iteration, so a resumed run takes up the schedule exactly where it stopped.
"""

from __future__ import annotations

import math

__all__ = ["sigmoid_rampup", "unsupervised_weight"]


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = current / length clipped to [0, 1]; 1.0 when length is 0."""
    if length < 0 or current < 0:
        raise ValueError(f"current and length must be >= 0, got {current}, {length}")
    if length == 0:
        return 1.0
    t = min(current, length) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def unsupervised_weight(iteration: int, warmup_iterations: int, rampup_iterations: int) -> float:
    """Factor on lambda_u and lambda_m at 0-based ``iteration``: 0 during the warm-up, then the ramp."""
    if iteration < warmup_iterations:
        return 0.0
    return sigmoid_rampup(iteration - warmup_iterations, rampup_iterations)
