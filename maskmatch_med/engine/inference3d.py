"""Prediction of volumes with a 3D network: sliding windows, multi-scale test-time ensembling, and the
exact inverse of the network grid, so outputs have their input's shape, affine and orientation.

Per volume: normalise -> network axis order and target spacing (data.volumes) -> for each scale,
the volume resampled by that scale, MONAI sliding-window inference (window = the training patch,
overlap and Gaussian/constant blending from the recipe), softmax, resampled back (the teacher's own
method.ensemble code) -> mean over scales -> back to the stored grid. The per-voxel uncertainty is
the scales' disagreement: the mean total-variation distance between each scale's probabilities and
their mean (0 when every scale agrees, at most 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from maskmatch_med.config import Recipe, VolumeConfig
from maskmatch_med.data.nifti import load_volume
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.data.volumes import from_network, prepare_image
from maskmatch_med.engine.inference import (
    Predictions, _label_names, _logits_of, labels_from_probabilities, legend_names, pending_inputs, plan_outputs,
    require_readable, with_progress,
)
from maskmatch_med.engine.writers import atomic_path, write_json_atomic, write_label_like, write_overlay_montage
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.postprocess import keep_largest_component
from maskmatch_med.method.ensemble import multiscale_probabilities

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
            predictor=lambda w: _logits_of(model(w)).float(), overlap=config.sw_overlap, mode=config.sw_mode,
        )

    was_training = model.training
    model.eval()
    try:
        x = image[None].to(device)
        per_scale = [multiscale_probabilities(windows, x, [scale], size_divisor=1)[0] for scale in scales]
    finally:
        model.train(was_training)
    probs = torch.stack(per_scale).mean(dim=0) if len(per_scale) > 1 else per_scale[0]
    disagreement = None
    if uncertainty:
        disagreement = torch.stack([0.5 * (p - probs).abs().sum(dim=0) for p in per_scale]).mean(dim=0)
        disagreement = from_network(disagreement[None].cpu(), grid)[0]
    return from_network(probs.cpu(), grid), disagreement


def write_map_like(data: np.ndarray, reference_path: Path, out_path: Path) -> Path:
    """float32 NIfTI of (X, Y, Z) or (X, Y, Z, C) values on the reference's grid: its header (affine,
    qform/sform codes, spacing) with the shape and data type changed, written atomically."""
    ref = nib.load(str(reference_path))
    data = np.ascontiguousarray(data, dtype=np.float32)
    if tuple(data.shape[:3]) != tuple(ref.shape[:3]):
        raise ValueError(f"map of shape {data.shape} does not fit {reference_path} of shape {ref.shape}")
    header = ref.header.copy()
    if not isinstance(header, nib.Nifti1Header):
        header = nib.Nifti1Header.from_header(header)
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = header["cal_max"] = 0
    if data.ndim == 4:
        header["pixdim"][4] = 1.0
        header.set_intent("vector")  # one value per class, not a time series
    image_class = nib.Nifti2Image if isinstance(ref, nib.Nifti2Image) else nib.Nifti1Image
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        nib.save(image_class(data, None, header), str(tmp))
    return out_path


def predict_files_3d(
    model: torch.nn.Module,
    recipe: Recipe,
    inputs: list[Path],
    output_dir: Path,
    scales: Sequence[float | Sequence[float]],
    png: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    skip_existing: bool = False,
    largest_component: bool = False,
    probabilities: bool = False,
    uncertainty: bool = False,
) -> list[Path]:
    """As engine.inference.predict_files, for 3D checkpoints. Besides OUTPUT/<name> (uint8 labels),
    `probabilities` writes OUTPUT/probabilities/<name> (float32, X x Y x Z x classes) and `uncertainty`
    OUTPUT/uncertainty/<name> (float32); subfolders keep `evaluate --pred OUTPUT` seeing only labels."""
    output_dir = Path(output_dir)
    plan = plan_outputs([Path(p) for p in inputs], output_dir, png=png)
    names = _label_names(recipe.data.num_classes, recipe.data.class_names)
    per_axis = axis_scales(scales, recipe.volume)
    def extra_outputs(src: Path) -> list[Path]:
        return ([output_dir / "probabilities" / src.name] if probabilities else []) + ([output_dir / "uncertainty" / src.name] if uncertainty else [])

    pending = pending_inputs(plan, skip_existing, extra_outputs)
    require_readable([src for src, _, _ in plan if src in pending], load_volume)
    model = model.to(device)
    written = Predictions()
    for src, label_out, png_out in with_progress(plan, progress):
        if src not in pending:
            written.add(label_out, kept=True)
            continue
        vol = load_volume(src)
        probs, disagreement = predict_volume_3d(model, vol.array, vol.spacing, recipe.volume, per_axis, device, uncertainty=uncertainty)
        if probs.shape[0] != recipe.data.num_classes:
            raise UserError(f"{src}: the model outputs {probs.shape[0]} classes but num_classes is {recipe.data.num_classes}")
        labels = labels_from_probabilities(probs)
        if largest_component:
            labels = keep_largest_component(labels, recipe.data.num_classes)
        write_label_like(labels, src, label_out)
        if probabilities:
            write_map_like(probs.permute(1, 2, 3, 0).numpy(), src, output_dir / "probabilities" / src.name)
        if disagreement is not None:
            write_map_like(disagreement.numpy(), src, output_dir / "uncertainty" / src.name)
        if png_out is not None:
            write_overlay_montage(vol.array, labels, png_out, slice_axis_of(vol.spacing),
                                  class_names=legend_names(recipe.data.num_classes, names))
        written.add(label_out)
    if names is not None:
        write_json_atomic(names, output_dir / "labels.json")
    return written
