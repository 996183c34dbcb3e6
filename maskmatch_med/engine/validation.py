"""Validation of 2D models on whole volumes: 3D Dice per class, each volume predicted slice by slice."""

from __future__ import annotations

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.engine.inference import predict_volume_labels
from maskmatch_med.engine.writers import overlay_rgb
from maskmatch_med.evaluation.metrics import dice_per_class


def mean_dice_metrics(per_case: list[np.ndarray], class_names: list[str]) -> dict[str, float]:
    """Per-class Dice averaged over cases (cases where a class is absent from both maps are skipped),
    plus their mean; a class never scored counts as 0."""
    with np.errstate(all="ignore"):
        per_class = np.nanmean(np.stack(per_case), axis=0)
    per_class = np.nan_to_num(per_class, nan=0.0)
    metrics = {f"dice_{name}": float(value) for name, value in zip(class_names, per_class)}
    metrics["dice_mean"] = float(per_class.mean())
    return metrics


class SliceVolumeValidator:
    score_key = "dice_mean"

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device, divisor: int):
        self.cases, self.recipe, self.device, self.divisor = cases, recipe, device, divisor

    def __len__(self) -> int:
        return len(self.cases)

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        per_case, previews = self.score_cases(model)
        return mean_dice_metrics(per_case, self.recipe.data.class_names), previews

    def score_cases(self, model: torch.nn.Module) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Dice per class of every case (in order), and a few previews."""
        data = self.recipe.data
        per_case, previews = [], []
        for loaded in self.cases:
            pred = predict_volume_labels(
                model, loaded.image.array, loaded.image.spacing, tuple(data.input_size),
                scales=(1.0,), device=self.device, size_divisor=self.divisor,
            )
            per_case.append(dice_per_class(pred, loaded.label.array, data.num_classes))
            if len(previews) < 3:
                previews.append(self._preview(loaded, pred))
        return per_case, previews

    @staticmethod
    def _preview(loaded: LoadedCase, pred: np.ndarray) -> np.ndarray:
        """Middle slice along the slice axis: image with the predicted labels over it."""
        axis = slice_axis_of(loaded.image.spacing)
        middle = loaded.image.array.shape[axis] // 2
        return overlay_rgb(np.take(loaded.image.array, middle, axis=axis), np.take(pred, middle, axis=axis))


class DomainSliceVolumeValidator(SliceVolumeValidator):
    """Per-domain validation for domain adaptation: the pooled metrics as above, then the same metrics
    per side (`dice_mean/source`, `dice_mean/target`) and per named domain (`dice_mean/B`, M&Ms
    vendors). The best checkpoint is the one with the best target validation Dice when the target has
    labeled validation cases, else the best source validation Dice."""

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

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        per_case, previews = self.score_cases(model)
        names = self.recipe.data.class_names
        metrics = mean_dice_metrics(per_case, names)
        for suffix, indices in self.groups().items():
            group = mean_dice_metrics([per_case[i] for i in indices], names)
            metrics.update({f"{key}/{suffix}": value for key, value in group.items()})
        return metrics, previews
