"""Validation of 2D models on whole volumes: 3D Dice per class, each volume predicted slice by slice."""

from __future__ import annotations

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.engine.inference import predict_volume_labels
from maskmatch_med.engine.metrics import dice_per_class
from maskmatch_med.engine.writers import overlay_rgb


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
        return mean_dice_metrics(per_case, data.class_names), previews

    @staticmethod
    def _preview(loaded: LoadedCase, pred: np.ndarray) -> np.ndarray:
        """Middle slice along the slice axis: image with the predicted labels over it."""
        axis = slice_axis_of(loaded.image.spacing)
        middle = loaded.image.array.shape[axis] // 2
        return overlay_rgb(np.take(loaded.image.array, middle, axis=axis), np.take(pred, middle, axis=axis))
