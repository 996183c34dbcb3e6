"""The volumes scenario (model.spatial_dims: 3): a 3D network trained on random patches of resampled
volumes, validated per volume with sliding-window inference and 3D Dice on each volume's stored grid,
predicting NIfTI volumes with sliding windows on each input's own grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from maskmatch_med.config import Recipe
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.errors import UserError
from maskmatch_med.models3d import axis_divisors
from maskmatch_med.scenarios.base import PredictOptions, Scenario, TrainedModel
from maskmatch_med.scenarios.medical import check_volume_data, collect_inputs, load_training_cases, predict_volume_files
from maskmatch_med.scenarios.volumes.data import build_patch_source
from maskmatch_med.scenarios.volumes.inference import volume_predictor
from maskmatch_med.scenarios.volumes.validation import VolumeValidator


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


class VolumesScenario(Scenario):
    name = "volumes"
    title = "3D patches of volumes"
    recipe_keys = ("volume", "model.axis_strides")
    outputs = "NIfTI label maps"

    def check_data(self, recipe: Recipe, echo: Callable[[str], None]) -> None:
        check_volume_recipe(recipe)  # the same recipe checks `train` runs before reading any volume
        check_volume_data(recipe, echo)

    def training_data(self, recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        check_volume_recipe(recipe)
        _, loaded = load_training_cases(recipe, semi_supervised)
        labeled = build_patch_source(loaded["labeled"], recipe.volume, with_labels=True, device=device)
        unlabeled = build_patch_source(loaded["unlabeled"], recipe.volume, with_labels=False, device=device) if semi_supervised else None
        validator = VolumeValidator(loaded["validation"], recipe, device)
        return TrainingData(labeled, unlabeled, validator, spatial_dims=3, in_channels=1, unit="volumes")

    def predict(self, trained: TrainedModel, inputs: Sequence[Path], output_dir: Path, options: PredictOptions,
                device: torch.device) -> list[Path]:
        files = [path for given in inputs for path in collect_inputs(given)]  # checked before the model is built
        recipe = trained.recipe
        predict = volume_predictor(trained.network(device, self.in_channels), recipe.volume, options.scales, device)
        return predict_volume_files(predict, files, output_dir, recipe.data.num_classes, recipe.data.class_names, options)


VOLUMES = VolumesScenario()
