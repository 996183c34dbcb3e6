"""The photos scenario (data.layout voc or cityscapes): DeepLabV3+ or any 2D network on RGB images from
UniMatch-format split files, read per batch and cropped on the device, validated by mIoU on whole
images or sliding windows, predicting JPG/PNG files into palette PNGs of each image's size."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import require_clean
from maskmatch_med.data.natural import check_natural_recipe, check_natural_splits, image_files, resolve_natural_splits
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.scenarios.base import PredictOptions, Scenario, TrainedModel
from maskmatch_med.scenarios.photos.data import NaturalImageSource
from maskmatch_med.scenarios.photos.inference import check_outputs, predict_image_files
from maskmatch_med.scenarios.photos.validation import NaturalImageValidator

LAYOUTS = ("voc", "cityscapes")  # the data.layout values of this scenario


class PhotosScenario(Scenario):
    name = "photos"
    title = "VOC / Cityscapes photos"
    in_channels = 3
    recipe_keys = ("data.splits", "data.crop_size", "data.rescale_range", "data.eval_mode", "data.eval_window")
    predict_options = frozenset({"scales", "largest_component"})
    outputs = "palette PNGs of class indices, not NIfTI volumes"

    def check_data(self, recipe: Recipe, echo: Callable[[str], None]) -> None:
        echo(check_natural_recipe(recipe))

    def training_data(self, recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        data = recipe.data
        splits = resolve_natural_splits(data, semi_supervised)
        require_clean(check_natural_splits(splits))
        source = dict(crop=data.crop_size, rescale_range=data.rescale_range, num_classes=data.num_classes, device=device)
        labeled = NaturalImageSource(splits["labeled"], with_labels=True, **source)
        unlabeled = NaturalImageSource(splits["unlabeled"], with_labels=False, **source) if semi_supervised else None
        validator = NaturalImageValidator(splits["validation"], recipe, device)
        return TrainingData(labeled, unlabeled, validator, spatial_dims=2, in_channels=3, unit="images")

    def predict(self, trained: TrainedModel, inputs: Sequence[Path], output_dir: Path, options: PredictOptions,
                device: torch.device) -> list[Path]:
        files = [f for given in inputs for f in image_files(given)]  # checked before the model is built
        check_outputs(files, Path(output_dir))
        data = trained.recipe.data
        return predict_image_files(
            trained.network(device, self.in_channels), files, output_dir, data.layout, list(data.class_names), device,
            data.eval_mode, data.eval_window or data.crop_size, skip_existing=options.skip_existing, progress=options.progress,
            scales=options.scales, largest_component=options.largest_component,
        )


PHOTOS = PhotosScenario()
