"""`predict` for VOC / Cityscapes checkpoints: JPG/PNG in, palette PNGs of the same size out."""

from __future__ import annotations

from pathlib import Path

import torch

from maskmatch_med.data.natural import image_files
from maskmatch_med.engine.checkpoint import load_checkpoint, load_state, recipe_of
from maskmatch_med.engine.natural_inference import check_outputs, predict_image_files
from maskmatch_med.errors import UserError
from maskmatch_med.models import build_model

NATURAL_LAYOUTS = ("voc", "cityscapes")


def natural_checkpoint(checkpoint: Path, device: torch.device) -> dict | None:
    """The loaded checkpoint when it was trained on natural images, else None (also for an unreadable
    checkpoint: the NIfTI path checks its inputs first and then reports the checkpoint's problem)."""
    try:
        payload = load_checkpoint(checkpoint, map_location=device)
        recipe = recipe_of(payload, checkpoint)
    except UserError:
        return None
    return payload if recipe.data.layout in NATURAL_LAYOUTS else None


def predict_natural(checkpoint: Path, payload: dict, inputs: list[Path], output_dir: Path, scales, device: torch.device,
                    skip_existing: bool = False, progress: bool = False) -> list[Path]:
    if tuple(scales) != (1.0,):
        raise UserError("--scales: multi-scale prediction is not available for VOC/Cityscapes checkpoints; use 1.0")
    files = [f for given in inputs for f in image_files(given)]  # checked before the model is built
    check_outputs(files, Path(output_dir))
    recipe = recipe_of(payload, checkpoint)
    # The ImageNet file was only the starting point of training; the checkpoint holds every weight.
    config = recipe.model.model_copy(update={"pretrained": None})
    model = build_model(config, spatial_dims=2, in_channels=payload.get("in_channels", 3), num_classes=payload["num_classes"])
    load_state(model, payload["inference"], checkpoint, "inference")
    model = model.to(device).eval()
    data = recipe.data
    return predict_image_files(
        model, files, output_dir, data.layout, list(data.class_names), device, data.eval_mode, data.eval_window or data.crop_size,
        skip_existing=skip_existing, progress=progress,
    )
