"""Validation of 2D models on whole volumes: 3D Dice per class, each volume predicted slice by slice."""

from __future__ import annotations

from typing import Callable, ContextManager

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.scenarios.medical import VolumeDiceValidator, mean_dice_metrics
from maskmatch_med.scenarios.slices.inference import predict_volume_labels


class SliceVolumeValidator(VolumeDiceValidator):
    """Each validation volume predicted slice by slice at the network's input size."""

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device, divisor: int):
        super().__init__(cases, recipe, device)
        self.divisor = divisor

    def labels(self, model: torch.nn.Module, loaded: LoadedCase) -> np.ndarray:
        return predict_volume_labels(
            model, loaded.image.array, loaded.image.spacing, tuple(self.recipe.data.input_size),
            scales=(1.0,), device=self.device, size_divisor=self.divisor,
        )


class DomainSliceVolumeValidator(SliceVolumeValidator):
    """Per-domain validation for domain adaptation: the pooled metrics as above, then the same metrics
    per side (`dice_mean/source`, `dice_mean/target`) and per named domain (`dice_mean/B`, M&Ms
    vendors). The best checkpoint is the one with the best target validation Dice when the target has
    labeled validation cases, else the best source validation Dice."""

    # With `method.domain_norm: separate` the trainer sets this: model -> the context in which that
    # model normalises with its source-domain statistics, for the source cases.
    source_statistics: Callable[[torch.nn.Module], ContextManager] | None = None

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device, divisor: int, domain_roles: dict[str, str]):
        super().__init__(cases, recipe, device, divisor)
        self.domain_roles = domain_roles
        roles_present = {domain_roles[loaded.case.domain] for loaded in cases}
        self.score_key = "dice_mean/target" if "target" in roles_present else "dice_mean/source"

    def groups(self) -> dict[str, list[int]]:
        """Metric suffix -> indices of the validation cases it averages: each side, then each domain
        whose name is not already its side's."""
        groups: dict[str, list[int]] = {}
        for index, loaded in enumerate(self.cases):
            groups.setdefault(self.domain_roles[loaded.case.domain], []).append(index)
        for index, loaded in enumerate(self.cases):
            if loaded.case.domain not in ("source", "target"):
                groups.setdefault(loaded.case.domain, []).append(index)
        return groups

    def labels(self, model: torch.nn.Module, loaded: LoadedCase) -> np.ndarray:
        if self.source_statistics is not None and self.domain_roles[loaded.case.domain] == "source":
            with self.source_statistics(model):
                return super().labels(model, loaded)
        return super().labels(model, loaded)

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        per_case, previews = self.score_cases(model)
        names = self.recipe.data.class_names
        metrics = mean_dice_metrics(per_case, names)
        for suffix, indices in self.groups().items():
            group = mean_dice_metrics([per_case[i] for i in indices], names)
            metrics.update({f"{key}/{suffix}": value for key, value in group.items()})
        return metrics, previews
