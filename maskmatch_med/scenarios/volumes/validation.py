"""Validation of 3D models: each validation volume predicted with sliding windows at scale 1, 3D Dice on
its stored grid."""

from __future__ import annotations

import numpy as np
import torch

from maskmatch_med.data.checks import LoadedCase
from maskmatch_med.scenarios.medical import VolumeDiceValidator, labels_from_probabilities
from maskmatch_med.scenarios.volumes.inference import axis_scales, predict_volume_3d


class VolumeValidator(VolumeDiceValidator):
    """Sliding-window prediction at scale 1 (as `predict` without --scales)."""

    def labels(self, model: torch.nn.Module, loaded: LoadedCase) -> np.ndarray:
        scale = axis_scales([1.0], self.recipe.volume)
        probs, _ = predict_volume_3d(model, loaded.image.array, loaded.image.spacing, self.recipe.volume, scale, self.device)
        return labels_from_probabilities(probs)
