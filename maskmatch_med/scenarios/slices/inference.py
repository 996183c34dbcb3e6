"""Prediction of 3D volumes with a 2D network, and `predict` on NIfTI files for 2D checkpoints.

Per volume: the training preprocessing (``data.preprocess``) -> slices along the coarsest axis ->
each slice resized to the network's input size (times each scale) -> softmax -> probabilities resized
back to the slice's own in-plane size -> mean over scales -> back to the volume's layout. The result
lives on the input's voxel grid, so it is written with the input's own header (geometry is sacred).
The per-voxel uncertainty is the scales' disagreement (method.ensemble.scale_disagreement), resized
back the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from maskmatch_med.data.nifti import Volume
from maskmatch_med.data.preprocess import normalise_intensity, slice_axis_of
from maskmatch_med.method.ensemble import fuse_probabilities, scale_disagreement, scale_probabilities
from maskmatch_med.scenarios.base import PredictOptions
from maskmatch_med.scenarios.medical import VolumePredictor, labels_from_probabilities, predict_volume_files
from maskmatch_med.scenarios.prediction import logits_of
from maskmatch_med.scenarios.slices.data import resize_slices, slices_to_volume, volume_to_slices


def _check_args(volume: np.ndarray, input_size, scales, batch_size: int) -> None:
    if np.ndim(volume) != 3:
        raise ValueError(f"expected a 3D volume, got shape {np.shape(volume)}")
    if len(tuple(input_size)) != 2 or min(int(n) for n in input_size) < 1:
        raise ValueError(f"input_size must be two positive ints, got {input_size}")
    if len(tuple(scales)) == 0 or min(float(s) for s in scales) <= 0:
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@torch.no_grad()
def predict_volume_probabilities(
    model: nn.Module,
    volume: np.ndarray,
    spacing: Sequence[float],
    input_size: tuple[int, int],
    scales: Sequence[float] = (1.0,),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    size_divisor: int = 16,
    uncertainty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (C, X, Y, Z), float32 on the CPU, on the grid of `volume` (X, Y, Z), and with
    `uncertainty` the scales' disagreement (X, Y, Z) on the same grid (else None).

    `volume` holds raw intensities; `spacing` is its voxel size per axis (it picks the slice axis).
    The model is run in eval mode (its previous mode is restored afterwards) on `device`, where it must
    already be. Slices are resized (bilinear) to `input_size`, ensembled over `scales` exactly as the
    teacher's pseudo-labels are (method.ensemble), and the probabilities resized back to the slice's size.
    """
    _check_args(volume, input_size, scales, batch_size)
    device = torch.device(device)
    axis = slice_axis_of(tuple(spacing))
    slices = volume_to_slices(normalise_intensity(volume), axis)  # (N, 1, H, W)
    n, _, h, w = slices.shape

    def network(images: torch.Tensor) -> torch.Tensor:
        logits = logits_of(model(images)).float()
        if logits.ndim != 4 or logits.shape[0] != images.shape[0]:
            raise ValueError(f"model returned shape {tuple(logits.shape)} for input {tuple(images.shape)}")
        return logits

    # The same multi-scale code as the teacher's pseudo-labels: scales are relative to the network's
    # input size, and the fused probabilities go back to each slice's own in-plane size.
    was_training = model.training
    model.eval()
    try:
        chunks, spread = [], []
        for start in range(0, n, int(batch_size)):
            batch = resize_slices(slices[start : start + int(batch_size)].to(device), tuple(input_size), "bilinear")
            per_scale = scale_probabilities(network, batch, list(scales), size_divisor=size_divisor)
            probs = fuse_probabilities(per_scale, "mean")
            chunks.append(resize_slices(probs, (h, w), "bilinear").cpu())
            if uncertainty:
                spread.append(resize_slices(scale_disagreement(per_scale, probs)[:, None], (h, w), "bilinear")[:, 0].cpu())
    finally:
        model.train(was_training)
    total = torch.cat(chunks)

    # (N, C, H, W) -> (C, N, H, W) -> per class, the slice axis back in place: (C, X, Y, Z)
    per_class = total.permute(1, 0, 2, 3).numpy()
    out = np.stack([slices_to_volume(p, axis) for p in per_class], axis=0)
    disagreement = None
    if uncertainty:
        disagreement = torch.from_numpy(np.ascontiguousarray(slices_to_volume(torch.cat(spread).numpy(), axis)))
    return torch.from_numpy(np.ascontiguousarray(out)), disagreement


def predict_volume_labels(
    model: nn.Module,
    volume: np.ndarray,
    spacing: Sequence[float],
    input_size: tuple[int, int],
    scales: Sequence[float] = (1.0,),
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    size_divisor: int = 16,
) -> np.ndarray:
    """uint8 label map with the shape of `volume`: argmax of predict_volume_probabilities."""
    probs, _ = predict_volume_probabilities(
        model, volume, spacing, input_size, scales, batch_size=batch_size, device=device, size_divisor=size_divisor
    )
    return labels_from_probabilities(probs)


def volume_predictor(model: nn.Module, input_size: tuple[int, int], scales: Sequence[float], device: str | torch.device,
                     size_divisor: int = 16, batch_size: int = 16) -> VolumePredictor:
    """What scenarios.medical.predict_volume_files runs on each volume: predict_volume_probabilities."""
    model = model.to(device)

    def predict(volume: Volume, uncertainty: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return predict_volume_probabilities(
            model, volume.array, volume.spacing, input_size, scales, batch_size=batch_size, device=device,
            size_divisor=size_divisor, uncertainty=uncertainty,
        )

    return predict


def predict_files(
    model: nn.Module,
    inputs: list[Path],
    output_dir: Path,
    input_size: tuple[int, int],
    scales: Sequence[float],
    num_classes: int,
    class_names: list[str] | None,
    png: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 16,
    size_divisor: int = 16,
    skip_existing: bool = False,
    largest_component: bool = False,
    probabilities: bool = False,
    uncertainty: bool = False,
) -> list[Path]:
    """Predict every input NIfTI with a 2D network, slice by slice: scenarios.medical.predict_volume_files
    (labels with the input's geometry, labels.json, the optional montage, probability and uncertainty
    maps) over predict_volume_probabilities."""
    options = PredictOptions(scales=tuple(scales), png=png, largest_component=largest_component, probabilities=probabilities,
                             uncertainty=uncertainty, skip_existing=skip_existing, progress=progress)
    predict = volume_predictor(model, input_size, scales, device, size_divisor, batch_size)
    return predict_volume_files(predict, inputs, output_dir, num_classes, class_names, options)
