"""The scenarios, and the one place that says which one a recipe belongs to.

`scenario_for` picks the scenario of a recipe (to train, or to check its data) or of a checkpoint's
recipe (to predict); nothing else branches on data.layout or model.spatial_dims to choose what to build.
`run_prediction` is the `predict` command: checkpoint -> its scenario -> label maps for every input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from maskmatch_med.config import Recipe
from maskmatch_med.engine.trainer import resolve_device
from maskmatch_med.engine.writers import check_output_directory
from maskmatch_med.scenarios.base import PredictOptions, Scenario, TrainedModel
from maskmatch_med.scenarios.photos.scenario import LAYOUTS as PHOTO_LAYOUTS
from maskmatch_med.scenarios.photos.scenario import PHOTOS
from maskmatch_med.scenarios.slices.scenario import SLICES
from maskmatch_med.scenarios.volumes.scenario import VOLUMES

SCENARIOS: tuple[Scenario, ...] = (SLICES, VOLUMES, PHOTOS)


def scenario_for(recipe: Recipe) -> Scenario:
    """Photos for the natural-image layouts; otherwise NIfTI volumes, as 3D patches when
    model.spatial_dims is 3 and as 2D slices when it is 2."""
    if recipe.data.layout in PHOTO_LAYOUTS:
        return PHOTOS
    return VOLUMES if recipe.model.spatial_dims == 3 else SLICES


def run_prediction(
    checkpoint: Path, input_paths: Sequence[Path], output_dir: Path, scales, png: bool = False, device: str = "auto",
    skip_existing: bool = False, largest_component: bool = False, probabilities: bool = False, uncertainty: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Label maps for every input, written to `output_dir` by the scenario of the checkpoint's recipe, with
    a progress bar when `progress`. An option that scenario cannot honour is refused before any input is read."""
    check_output_directory(output_dir, "--output")
    torch_device = resolve_device(device, "--device")
    trained = TrainedModel.load(checkpoint, torch_device)
    scenario = scenario_for(trained.recipe)
    options = PredictOptions(scales=tuple(scales), png=png, largest_component=largest_component, probabilities=probabilities,
                             uncertainty=uncertainty, skip_existing=skip_existing, progress=progress)
    scenario.refuse_unsupported(options)
    return scenario.predict(trained, list(input_paths), Path(output_dir), options, torch_device)
