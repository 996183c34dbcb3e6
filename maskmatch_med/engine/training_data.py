"""What the training loop draws from: a labeled and an optional unlabeled batch source, and a validator.

The loop (engine/trainer.py) only knows these interfaces. Its caller hands it a TrainingDataBuilder,
in practice the recipe's scenario (maskmatch_med/scenarios/: 2D slices, 3D patches, photos), which
reads and checks the data, puts what it keeps on the training device and says how to describe it in
the run's first line; benchmarks hand it synthetic data the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from maskmatch_med.config import Recipe


class BatchSource(Protocol):
    def __len__(self) -> int:
        """Number of samples an epoch draws from (slices, volumes, images)."""

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, *spatial) float and labels (B, *spatial) long (None when unlabeled), on the
        training device. ``generator`` is the trainer's, for sources that crop at random."""


class Validator(Protocol):
    score_key: str  # the metric that selects the best checkpoint (higher is better)

    def __len__(self) -> int:
        """Number of validation cases."""

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        """Metrics by name, and a few RGB previews (H, W, 3) uint8 for TensorBoard."""


@dataclass
class TrainingData:
    labeled: BatchSource
    unlabeled: BatchSource | None
    validator: Validator
    spatial_dims: int  # of the network: 2 for slices and photos, 3 for volumes
    in_channels: int
    unit: str  # what one sample is, for the log: "slices", "volumes", "images"


class TrainingDataBuilder(Protocol):
    def training_data(self, recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        """The run's data: labeled (and, when `semi_supervised`, unlabeled) sources and the validator, on
        `device`; `size_divisor` is what the network's input sizes must be a multiple of."""
