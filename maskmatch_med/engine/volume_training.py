"""3D training data (model.spatial_dims: 3): random patches of resampled volumes, validated per
volume with sliding-window inference and 3D Dice on each volume's stored grid."""

from __future__ import annotations

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase, check_splits, require_clean
from maskmatch_med.data.patches import build_patch_source
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.data.splits import resolve_splits
from maskmatch_med.engine.inference import labels_from_probabilities
from maskmatch_med.engine.inference3d import axis_scales, predict_volume_3d
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.engine.validation import mean_dice_metrics
from maskmatch_med.engine.writers import overlay_rgb
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.metrics import dice_per_class
from maskmatch_med.models3d import axis_divisors


def check_volume_recipe(recipe: Recipe) -> None:
    """Per-axis settings must have 3 entries and the patch must fit the network's strides."""
    v, m = recipe.volume, recipe.method
    divisors = axis_divisors(recipe.model)
    if any(p % d for p, d in zip(v.patch_size, divisors)):
        raise UserError(f"volume.patch_size: {list(v.patch_size)} must be a multiple of {list(divisors)} per axis "
                        "(the product of model.strides / model.axis_strides)")
    if isinstance(m.mask.patch_size, list) and len(m.mask.patch_size) != 3:
        raise UserError(f"method.mask.patch_size: {m.mask.patch_size} needs one value or 3 (in-plane, in-plane, slice) for 3D")
    for scale in m.ensemble.scales:
        if isinstance(scale, list) and len(scale) != 3:
            raise UserError(f"method.ensemble.scales: {scale} needs 3 values (in-plane, in-plane, slice) for 3D")


def volume_training_data(recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
    check_volume_recipe(recipe)
    splits = resolve_splits(recipe.data, semi_supervised)  # a datalist's missing roles are named before any volume is read
    loaded, problems = check_splits(splits, recipe.data.num_classes, semi_supervised)
    require_clean(problems)
    labeled = build_patch_source(loaded["labeled"], recipe.volume, with_labels=True, device=device)
    unlabeled = build_patch_source(loaded["unlabeled"], recipe.volume, with_labels=False, device=device) if semi_supervised else None
    validator = VolumeValidator(loaded["validation"], recipe, device)
    return TrainingData(labeled, unlabeled, validator, spatial_dims=3, in_channels=1, unit="volumes")


class VolumeValidator:
    """Sliding-window prediction at scale 1 (as `predict` without --scales), 3D Dice on the stored grid."""

    score_key = "dice_mean"

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device):
        self.cases, self.recipe, self.device = cases, recipe, device

    def __len__(self) -> int:
        return len(self.cases)

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        data = self.recipe.data
        scale = axis_scales([1.0], self.recipe.volume)
        per_case, previews = [], []
        for loaded in self.cases:
            probs, _ = predict_volume_3d(model, loaded.image.array, loaded.image.spacing, self.recipe.volume, scale, self.device)
            pred = labels_from_probabilities(probs)
            per_case.append(dice_per_class(pred, loaded.label.array, data.num_classes))
            if len(previews) < 3:
                axis = slice_axis_of(loaded.image.spacing)
                middle = loaded.image.array.shape[axis] // 2
                previews.append(overlay_rgb(np.take(loaded.image.array, middle, axis=axis), np.take(pred, middle, axis=axis)))
        return mean_dice_metrics(per_case, data.class_names), previews
