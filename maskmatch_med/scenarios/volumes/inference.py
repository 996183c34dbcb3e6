"""Prediction of volumes with a 3D network: sliding windows, multi-scale test-time ensembling, and the
exact inverse of the network grid, so outputs have their input's shape, affine and orientation.

Per volume: normalise -> network axis order and target spacing (volumes/grid.py) -> for each scale,
the volume resampled by that scale, MONAI sliding-window inference (window = the training patch,
overlap and Gaussian/constant blending from the recipe), softmax, resampled back (the teacher's own
method.ensemble code) -> mean over scales -> back to the stored grid. The per-voxel uncertainty is
the scales' disagreement: the mean total-variation distance between each scale's probabilities and
their mean (0 when every scale agrees, at most 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from maskmatch_med.config import VolumeConfig
from maskmatch_med.data.nifti import Volume
from maskmatch_med.errors import UserError
from maskmatch_med.method.ensemble import fuse_probabilities, multiscale_probabilities, scale_disagreement
from maskmatch_med.scenarios.medical import VolumePredictor
from maskmatch_med.scenarios.prediction import logits_of
from maskmatch_med.scenarios.volumes.grid import from_network, prepare_image

Scale3 = tuple[float, float, float]


def axis_scales(scales: Sequence[float | Sequence[float]], config: VolumeConfig) -> list[Scale3]:
    """Per-axis scales: sequences as given (3 entries); a number scales the in-plane axes only, or all
    three with `volume.scale_slice_axis` (thick slices are not worth subdividing)."""
    out = []
    for scale in scales:
        if isinstance(scale, (int, float)):
            s = float(scale)
            out.append((s, s, s if config.scale_slice_axis else 1.0))
        else:
            values = tuple(float(v) for v in scale)
            if len(values) != 3:
                raise UserError(f"scale {list(scale)}: a 3D scale needs 3 values (in-plane, in-plane, slice)")
            out.append(values)  # type: ignore[arg-type]
    if not out or min(min(s) for s in out) <= 0:
        raise UserError(f"scales {list(scales)}: need at least one scale, all > 0")
    return out


@torch.no_grad()
def predict_volume_3d(
    model: torch.nn.Module,
    array: np.ndarray,
    spacing: Sequence[float],
    config: VolumeConfig,
    scales: Sequence[Scale3] = ((1.0, 1.0, 1.0),),
    device: str | torch.device = "cpu",
    uncertainty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (C, *array.shape) float32 on the CPU and, with `uncertainty`, the scales'
    disagreement (*array.shape). The model must be on `device`; it runs in eval mode (restored after)."""
    if np.ndim(array) != 3:
        raise ValueError(f"expected a 3D volume, got shape {np.shape(array)}")
    device = torch.device(device)
    image, grid = prepare_image(array, spacing, config)

    def windows(x: torch.Tensor) -> torch.Tensor:
        # Inputs smaller than a window are padded by MONAI and cropped back.
        return sliding_window_inference(
            x, roi_size=tuple(config.patch_size), sw_batch_size=config.sw_batch_size,
            predictor=lambda w: logits_of(model(w)).float(), overlap=config.sw_overlap, mode=config.sw_mode,
        )

    was_training = model.training
    model.eval()
    try:
        x = image[None].to(device)
        per_scale = [multiscale_probabilities(windows, x, [scale], size_divisor=1)[0] for scale in scales]
    finally:
        model.train(was_training)
    probs = fuse_probabilities(per_scale, "mean")
    disagreement = None
    if uncertainty:
        disagreement = from_network(scale_disagreement(per_scale, probs, class_dim=0)[None].cpu(), grid)[0]
    return from_network(probs.cpu(), grid), disagreement


def volume_predictor(model: torch.nn.Module, config: VolumeConfig, scales: Sequence[float | Sequence[float]],
                     device: torch.device) -> VolumePredictor:
    """What scenarios.medical.predict_volume_files runs on each volume: predict_volume_3d at the per-axis `scales`."""
    per_axis = axis_scales(scales, config)
    model = model.to(device)

    def predict(volume: Volume, uncertainty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return predict_volume_3d(model, volume.array, volume.spacing, config, per_axis, device, uncertainty=uncertainty)

    return predict
