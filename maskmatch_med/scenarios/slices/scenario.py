"""The slices scenario: a 2D network trained on every slice of 3D volumes (ACDC layout or a datalist),
validated per volume with 3D Dice, predicting NIfTI volumes slice by slice on each input's own grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from maskmatch_med.config import Recipe
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.models import size_divisor
from maskmatch_med.scenarios.base import PredictOptions, Scenario, TrainedModel
from maskmatch_med.scenarios.medical import check_volume_data, collect_inputs, load_training_cases, predict_volume_files
from maskmatch_med.scenarios.slices.data import audit_labels, build_slice_set
from maskmatch_med.scenarios.slices.inference import volume_predictor
from maskmatch_med.scenarios.slices.validation import DomainSliceVolumeValidator, SliceVolumeValidator


class SlicesScenario(Scenario):
    name = "slices"
    title = "2D slices of volumes"
    recipe_keys = ("data.input_size",)
    outputs = "NIfTI label maps"

    def check_data(self, recipe: Recipe, echo: Callable[[str], None]) -> None:
        check_volume_data(recipe, echo)

    def training_data(self, recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        splits, loaded = load_training_cases(recipe, semi_supervised)
        size = tuple(recipe.data.input_size)
        labeled = build_slice_set(loaded["labeled"], size, with_labels=True).to(device)
        unlabeled = None
        if semi_supervised:
            unlabeled = build_slice_set(loaded["unlabeled"], size, with_labels=False, audit=audit_labels(loaded["unlabeled"], recipe.data.num_classes))
            unlabeled = unlabeled.to(device)
        if splits.domain_roles:
            validator = DomainSliceVolumeValidator(loaded["validation"], recipe, device, size_divisor, splits.domain_roles)
        else:
            validator = SliceVolumeValidator(loaded["validation"], recipe, device, size_divisor)
        return TrainingData(labeled, unlabeled, validator, spatial_dims=2, in_channels=1, unit="slices")

    def predict(self, trained: TrainedModel, inputs: Sequence[Path], output_dir: Path, options: PredictOptions,
                device: torch.device) -> list[Path]:
        files = [path for given in inputs for path in collect_inputs(given)]  # checked before the model is built
        recipe = trained.recipe
        network = trained.network(device, self.in_channels)
        predict = volume_predictor(network, tuple(recipe.data.input_size), options.scales, device, size_divisor(recipe.model))
        return predict_volume_files(predict, files, output_dir, recipe.data.num_classes, recipe.data.class_names, options)


SLICES = SlicesScenario()
