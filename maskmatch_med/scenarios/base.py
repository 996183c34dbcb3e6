"""The small interface every scenario provides, and the checkpoint a `predict` starts from.

A scenario is one kind of sample (2D slices of volumes, 3D patches of volumes, photos): it checks and
builds the training data and validator from a recipe (the engine's TrainingData), predicts a list of
input files into an output folder, and says which recipe keys and predict options it supports. Which
scenario a recipe (or a checkpoint's recipe) belongs to is decided in one place,
`scenarios.registry.scenario_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch

from maskmatch_med.config import Recipe
from maskmatch_med.engine.checkpoint import load_checkpoint, load_state, recipe_of
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.errors import UserError
from maskmatch_med.models import build_model


@dataclass(frozen=True)
class PredictOptions:
    """What `predict` was asked for beyond the inputs and the output folder."""

    scales: tuple[float, ...] = (1.0,)  # test-time scales (--scales)
    png: bool = False  # a PNG montage with the label overlay per case (--png)
    largest_component: bool = False  # keep each class's largest connected component (--largest-component)
    probabilities: bool = False  # OUTPUT/probabilities/NAME, one channel per class (--probabilities)
    uncertainty: bool = False  # OUTPUT/uncertainty/NAME, the disagreement across scales (--uncertainty)
    skip_existing: bool = False  # keep the outputs an interrupted run completed (--skip-existing)
    progress: bool = False  # a progress bar

    def asked(self) -> list[str]:
        """The optional features asked for (those not at their default), by field name."""
        return [f.name for f in fields(self) if f.name in OPTIONAL_FEATURES and getattr(self, f.name) != f.default]


# Predict options a scenario may or may not honour, with the CLI's spelling.
OPTIONAL_FEATURES = {
    "scales": "--scales", "png": "--png", "largest_component": "--largest-component",
    "probabilities": "--probabilities", "uncertainty": "--uncertainty",
}


@dataclass
class TrainedModel:
    """A checkpoint read for `predict`: the file, its payload and the recipe it was trained with."""

    path: Path
    payload: dict
    recipe: Recipe

    @classmethod
    def load(cls, path: Path, device: torch.device) -> TrainedModel:
        payload = load_checkpoint(path, map_location=device)
        return cls(Path(path), payload, recipe_of(payload, path))

    def network(self, device: torch.device, in_channels: int) -> torch.nn.Module:
        """The network with the weights validation scored, in eval mode on `device`; `in_channels` for
        checkpoints that predate recording it."""
        # An ImageNet file (model.pretrained) was only the starting point of training; the checkpoint holds every weight.
        config = self.recipe.model.model_copy(update={"pretrained": None})
        payload = self.payload
        model = build_model(config, spatial_dims=payload["spatial_dims"], in_channels=payload.get("in_channels", in_channels),
                            num_classes=payload["num_classes"])
        load_state(model, payload["inference"], self.path, "inference")
        return model.to(device).eval()


class Scenario:
    """One kind of sample. Subclasses set the attributes and implement the three methods."""

    name: str = ""  # as the registry and the refusals call it, e.g. "slices"
    title: str = ""  # what it works on, e.g. "2D slices of volumes"
    in_channels: int = 1  # of the network
    recipe_keys: tuple[str, ...] = ()  # the recipe keys (section.key, or a whole section) it reads besides the common ones
    predict_options: frozenset[str] = frozenset(OPTIONAL_FEATURES)  # the optional predict features it honours
    outputs: str = ""  # what its predict writes, said when it refuses an option

    def __repr__(self) -> str:
        return f"<scenario {self.name}>"

    def check_data(self, recipe: Recipe, echo: Callable[[str], None]) -> None:
        """`check-data`: read and check every file the recipe names, `echo` a summary; UserError on problems."""
        raise NotImplementedError

    def training_data(self, recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        """The labeled (and, when `semi_supervised`, unlabeled) batch sources and the validator, checked and on `device`."""
        raise NotImplementedError

    def predict(self, trained: TrainedModel, inputs: Sequence[Path], output_dir: Path, options: PredictOptions,
                device: torch.device) -> list[Path]:
        """Predict every input (files or folders of them) into `output_dir`; returns the label files in input order."""
        raise NotImplementedError

    def refuse_unsupported(self, options: PredictOptions) -> None:
        """One line naming the options this scenario cannot honour, before anything is read or written."""
        refused = [OPTIONAL_FEATURES[name] for name in options.asked() if name not in self.predict_options]
        if refused:
            raise UserError(
                f"{', '.join(refused)}: not available in the {self.name} scenario ({self.title}), which writes {self.outputs}; "
                f"leave {'it' if len(refused) == 1 else 'them'} out"
            )
