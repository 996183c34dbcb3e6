"""`predict`: checkpoint -> model -> label maps on each input's own grid."""

from __future__ import annotations

from pathlib import Path

import torch

from maskmatch_med.engine.checkpoint import load_checkpoint, load_state, recipe_of
from maskmatch_med.engine.inference import collect_inputs, predict_files
from maskmatch_med.engine.trainer import resolve_device
from maskmatch_med.engine.writers import check_output_directory
from maskmatch_med.errors import UserError
from maskmatch_med.models import build_model, size_divisor


def load_inference_model(checkpoint: Path, device: torch.device):
    payload = load_checkpoint(checkpoint, map_location=device)
    recipe = recipe_of(payload, checkpoint)
    if payload["spatial_dims"] not in (2, 3):
        raise UserError(f"{checkpoint}: a {payload['spatial_dims']}D checkpoint; this predictor runs 2D and 3D models")
    model = build_model(recipe.model, spatial_dims=payload["spatial_dims"], in_channels=payload.get("in_channels", 1), num_classes=payload["num_classes"])
    load_state(model, payload["inference"], checkpoint, "inference")
    return model.to(device).eval(), recipe


def run_prediction(
    checkpoint: Path, input_paths: list[Path], output_dir: Path, scales, png: bool = False, device: str = "auto", skip_existing: bool = False,
    largest_component: bool = False, probabilities: bool = False, uncertainty: bool = False, progress: bool = False,
) -> list[Path]:
    """Label maps for every input, written to `output_dir`, with a progress bar when `progress`."""
    check_output_directory(output_dir, "--output")
    torch_device = resolve_device(device, "--device")
    from maskmatch_med.engine.predictor_natural import natural_checkpoint, predict_natural

    natural = natural_checkpoint(checkpoint, torch_device)
    if natural is not None:  # VOC / Cityscapes: JPG/PNG in, palette PNGs out
        if png or largest_component:
            raise UserError("--png / --largest-component apply to NIfTI volumes; a VOC/Cityscapes checkpoint writes palette PNGs")
        return predict_natural(checkpoint, natural, input_paths, output_dir, scales, torch_device, skip_existing, progress)
    inputs = [path for given in input_paths for path in collect_inputs(given)]  # checked before the model loads
    model, recipe = load_inference_model(checkpoint, torch_device)
    if recipe.model.spatial_dims == 3:
        from maskmatch_med.engine.inference3d import predict_files_3d

        return predict_files_3d(
            model, recipe, inputs, output_dir, scales, png=png, device=torch_device, skip_existing=skip_existing,
            largest_component=largest_component, probabilities=probabilities, uncertainty=uncertainty, progress=progress,
        )
    if probabilities or uncertainty:
        raise UserError(f"{checkpoint}: --probabilities and --uncertainty are written for 3D checkpoints only")
    return predict_files(
        model, inputs, output_dir, tuple(recipe.data.input_size), scales,
        num_classes=recipe.data.num_classes, class_names=recipe.data.class_names, png=png,
        device=torch_device, size_divisor=size_divisor(recipe.model), skip_existing=skip_existing,
        largest_component=largest_component, progress=progress,
    )
