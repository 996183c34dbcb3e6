"""What the training loop draws from: a labeled and an optional unlabeled batch source, and a validator.

The loop (engine/trainer.py) only knows these three interfaces, so 2D slices, 3D patches and
natural images plug in as builders here without touching it. A builder reads and checks the data,
puts what it keeps on the training device and says how to describe it in the run's first line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase, check_splits, require_clean
from maskmatch_med.data.nifti import load_label
from maskmatch_med.data.slices import build_slice_set
from maskmatch_med.data.splits import resolve_splits
from maskmatch_med.errors import UserError


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
    unit: str  # what one sample is, for the log: "slices", "patches", "images"


def build_training_data(recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
    if recipe.data.layout in ("voc", "cityscapes"):
        return natural_training_data(recipe, semi_supervised, device)
    if recipe.model.spatial_dims == 3:
        from maskmatch_med.engine.volume_training import volume_training_data

        return volume_training_data(recipe, semi_supervised, device, size_divisor)
    return slice_training_data(recipe, semi_supervised, device, size_divisor)


def slice_training_data(recipe: Recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
    """2D training on every slice of 3D volumes (ACDC layout or a datalist), validated per volume."""
    from maskmatch_med.engine.validation import SliceVolumeValidator

    splits = resolve_splits(recipe.data, semi_supervised)
    # The same checks as check-data, test split included, so a broken test file shows up now and not
    # after hours of training; training itself never reads the test volumes.
    loaded, problems = check_splits(splits, recipe.data.num_classes, semi_supervised)
    require_clean(problems)
    size = tuple(recipe.data.input_size)
    labeled = build_slice_set(loaded["labeled"], size, with_labels=True).to(device)
    unlabeled = None
    if semi_supervised:
        unlabeled = build_slice_set(loaded["unlabeled"], size, with_labels=False, audit=audit_labels(loaded["unlabeled"], recipe.data.num_classes))
        unlabeled = unlabeled.to(device)
    if splits.domain_roles:
        from maskmatch_med.engine.validation import DomainSliceVolumeValidator

        validator = DomainSliceVolumeValidator(loaded["validation"], recipe, device, size_divisor, splits.domain_roles)
    else:
        validator = SliceVolumeValidator(loaded["validation"], recipe, device, size_divisor)
    return TrainingData(labeled, unlabeled, validator, spatial_dims=2, in_channels=1, unit="slices")


def audit_labels(cases: list[LoadedCase], num_classes: int) -> dict[str, np.ndarray]:
    """Ground truth that unlabeled cases happen to have on disk (the phantom writes it; a user's data may
    hold it), by case id, for the pseudo-label quality logs only. A file that does not load or does not
    fit its image is skipped: it is not training data, so it never stops a run."""
    found = {}
    for loaded in cases:
        path = loaded.case.audit_label
        if path is None:
            continue
        try:
            label = load_label(path, frame=loaded.case.frame, lut=loaded.case.label_lut).array
        except UserError:
            continue
        if label.shape == loaded.image.array.shape and 0 <= label.min() and label.max() < num_classes:
            found[loaded.case.case_id] = label
    return found


def natural_training_data(recipe: Recipe, semi_supervised: bool, device: torch.device) -> TrainingData:
    """Pascal VOC / Cityscapes from UniMatch-format split files: images read per batch, cropped on the
    device, validated by mIoU on whole images or sliding windows."""
    from maskmatch_med.data.natural import check_natural_splits, resolve_natural_splits
    from maskmatch_med.data.natural_batches import NaturalImageSource
    from maskmatch_med.engine.validation_natural import NaturalImageValidator

    data = recipe.data
    splits = resolve_natural_splits(data, semi_supervised)
    require_clean(check_natural_splits(splits))
    source = dict(crop=data.crop_size, rescale_range=data.rescale_range, num_classes=data.num_classes, device=device)
    labeled = NaturalImageSource(splits["labeled"], with_labels=True, **source)
    unlabeled = NaturalImageSource(splits["unlabeled"], with_labels=False, **source) if semi_supervised else None
    validator = NaturalImageValidator(splits["validation"], recipe, device)
    return TrainingData(labeled, unlabeled, validator, spatial_dims=2, in_channels=3, unit="images")
