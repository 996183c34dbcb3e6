"""Prediction of 3D volumes with a 2D network, and the predict-files driver.

Per volume: the training preprocessing (``data.preprocess``) -> slices along the coarsest axis ->
each slice resized to the network's input size (times each scale) -> softmax -> probabilities resized
back to the slice's own in-plane size -> mean over scales -> back to the volume's layout. The result
lives on the input's voxel grid, so it is written with the input's own header (geometry is sacred).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn

from maskmatch_med.data.nifti import is_nifti, load_volume, nifti_stem
from maskmatch_med.data.preprocess import (
    normalise_intensity,
    resize_slices,
    slice_axis_of,
    slices_to_volume,
    volume_to_slices,
)
from maskmatch_med.engine.writers import write_json_atomic, write_label_like, write_overlay_montage
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.postprocess import keep_largest_component
from maskmatch_med.method.ensemble import multiscale_probabilities


def _logits_of(output) -> torch.Tensor:
    """The main prediction of a segmentation network: plain tensors, deep-supervision tuples/lists
    (first = full resolution) and torchvision-style dicts ("out")."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if "out" in output:
            return output["out"]
        return next(iter(output.values()))
    if isinstance(output, (list, tuple)) and output:
        return _logits_of(output[0])
    raise TypeError(f"cannot interpret model output of type {type(output).__name__}")


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
) -> torch.Tensor:
    """Class probabilities (C, X, Y, Z), float32 on the CPU, on the grid of `volume` (X, Y, Z).

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
        logits = _logits_of(model(images)).float()
        if logits.ndim != 4 or logits.shape[0] != images.shape[0]:
            raise ValueError(f"model returned shape {tuple(logits.shape)} for input {tuple(images.shape)}")
        return logits

    # The same multi-scale code as the teacher's pseudo-labels: scales are relative to the network's
    # input size, and the fused probabilities go back to each slice's own in-plane size.
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, n, int(batch_size)):
            batch = resize_slices(slices[start : start + int(batch_size)].to(device), tuple(input_size), "bilinear")
            probs = multiscale_probabilities(network, batch, list(scales), fuse="mean", size_divisor=size_divisor)
            chunks.append(resize_slices(probs, (h, w), "bilinear").cpu())
    finally:
        model.train(was_training)
    total = torch.cat(chunks)

    # (N, C, H, W) -> (C, N, H, W) -> per class, the slice axis back in place: (C, X, Y, Z)
    per_class = total.permute(1, 0, 2, 3).numpy()
    out = np.stack([slices_to_volume(p, axis) for p in per_class], axis=0)
    return torch.from_numpy(np.ascontiguousarray(out))


def labels_from_probabilities(probs: torch.Tensor) -> np.ndarray:
    """argmax over classes of (C, X, Y, Z) probabilities -> uint8 (X, Y, Z)."""
    if probs.shape[0] > 256:
        raise ValueError(f"{probs.shape[0]} classes do not fit in uint8 labels")
    return probs.argmax(dim=0).numpy().astype(np.uint8)


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
    probs = predict_volume_probabilities(
        model, volume, spacing, input_size, scales, batch_size=batch_size, device=device, size_divisor=size_divisor
    )
    return labels_from_probabilities(probs)


def is_label_map_name(path: Path) -> bool:
    """Named like a ground-truth label map (ACDC's NAME_gt.nii.gz), which predict never segments."""
    return nifti_stem(path).endswith("_gt")


def collect_inputs(input: Path) -> list[Path]:
    """The NIfTI images to predict: `input` itself if it is a file, else every *.nii / *.nii.gz directly
    inside the directory, sorted by name, skipping label maps (*_gt.nii[.gz]) and hidden files.

    A label map named on its own is refused rather than skipped: the user meant some image (most likely
    the one beside it), and segmenting labels as intensities would give a plausible-looking nonsense map."""
    input = Path(input)
    if not input.exists():
        raise UserError(f"{input}: not found")
    if input.is_file():
        if not is_nifti(input):
            raise UserError(f"{input}: not a NIfTI file (expected .nii or .nii.gz)")
        if is_label_map_name(input):
            stem = nifti_stem(input)
            image = stem[:-3] + input.name[len(stem):]
            raise UserError(
                f"{input}: a label map (named *_gt), not an image; give --input the image ({image}), "
                "or rename the file if it is one"
            )
        return [input]
    if not input.is_dir():
        raise UserError(f"{input}: neither a file nor a directory")
    found = []
    for p in sorted(input.iterdir(), key=lambda q: q.name):
        if p.name.startswith(".") or not p.is_file() or not is_nifti(p):
            continue
        if is_label_map_name(p):
            continue
        found.append(p)
    if not found:
        raise UserError(f"{input}: no .nii or .nii.gz images in this directory (label maps *_gt.nii.gz are skipped)")
    return found


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _label_names(num_classes: int, class_names: list[str] | None) -> dict[str, str] | None:
    if class_names is None:
        return None
    names = [str(n) for n in class_names]
    if len(names) == num_classes - 1:
        names = ["background", *names]
    if len(names) != num_classes:
        raise UserError(
            f"class_names: {len(class_names)} names given for {num_classes} classes "
            f"(give {num_classes}, or {num_classes - 1} without the background)"
        )
    return {str(i): name for i, name in enumerate(names)}


def legend_names(num_classes: int, label_names: dict[str, str] | None) -> list[str]:
    """The foreground names a --png montage's legend shows: the checkpoint's, else class1, class2, ...
    (the names evaluate gives unnamed classes)."""
    return [label_names[str(i)] if label_names else f"class{i}" for i in range(1, int(num_classes))]


def plan_outputs(inputs: list[Path], output_dir: Path, png: bool = False) -> list[tuple[Path, Path, Path | None]]:
    """(input, label output, montage output or None) for each input; UserError if any output would
    overwrite an input, land in an input's directory, or collide with another output."""
    if not inputs:
        raise UserError(f"{output_dir}: no input images to predict")
    output_dir = Path(output_dir)
    resolved_out = output_dir.resolve()
    plan = []
    seen: dict[Path, Path] = {}
    for src in inputs:
        src = Path(src)
        if not src.is_file():
            raise UserError(f"{src}: file not found")
        if src.resolve().parent == resolved_out or _same_path(src.parent, output_dir):
            raise UserError(
                f"{output_dir}: output directory is the directory of input {src.name}; "
                "choose a different output directory so no input is overwritten"
            )
        label_out = output_dir / src.name
        png_out = output_dir / f"{nifti_stem(src)}.png" if png else None
        for out in (label_out, png_out):
            if out is None:
                continue
            if any(_same_path(out, other) for other in inputs):
                raise UserError(f"{out}: output would overwrite an input file")
            key = out.resolve()
            if key in seen:
                raise UserError(f"{out}: both {seen[key]} and {src} would be written here; inputs need distinct names")
            seen[key] = src
        plan.append((src, label_out, png_out))
    return plan


def _complete(output: Path, source: Path) -> bool:
    """An earlier output that reads back as a NIfTI with its input's shape."""
    if not output.is_file():
        return False
    try:
        return nib.load(str(output)).shape == nib.load(str(source)).shape
    except Exception:  # unreadable: predict it again
        return False


def with_progress(plan: list, progress: bool, unit: str = "vol"):
    """The output plan, behind a progress bar when asked (the CLI asks when stderr is a terminal: in a
    log file or a pipe, a bar's carriage-return redraws are noise)."""
    if not progress:
        return plan
    from tqdm import tqdm

    return tqdm(plan, desc="predict", unit=unit)


class Predictions(list):
    """The label files of one `predict`, in input order (the plain list it always returned), counting
    in `kept` those that --skip-existing left as an earlier run completed them: the summary line then
    says how many were written and how many kept, instead of calling them all written."""

    def __init__(self) -> None:
        super().__init__()
        self.kept = 0

    def add(self, path: Path, kept: bool = False) -> None:
        self.append(path)
        self.kept += int(kept)


def already_written(src: Path, label_out: Path, png_out: Path | None, extra: Sequence[Path] = ()) -> bool:
    """Whether an earlier, interrupted run left every output of `src` complete (--skip-existing)."""
    return _complete(label_out, src) and (png_out is None or png_out.is_file()) and all(p.is_file() for p in extra)


def pending_inputs(plan: list[tuple[Path, Path, Path | None]], skip_existing: bool, extra_outputs=lambda src: ()) -> set[Path]:
    """The inputs of `plan` still to predict: all of them, or with `skip_existing` those whose outputs
    an earlier, interrupted run did not complete (`extra_outputs(src)`: 3D maps written beside the labels)."""
    return {src for src, label_out, png_out in plan
            if not (skip_existing and already_written(src, label_out, png_out, extra_outputs(src)))}


def require_readable(paths: Sequence[Path], read: Callable[[Path], object]) -> None:
    """Read every input before the first output is written and refuse the unreadable ones together,
    one line each (and a count when there are several): a corrupt file found half-way used to leave
    the earlier label maps and no labels.json.

    Each file is read in full (a truncated .nii.gz fails only at its end), so it is read twice in all:
    here and when predicted. That is small beside inference and keeps no volume in memory meanwhile."""
    problems = []
    for path in paths:
        try:
            read(path)
        except UserError as error:
            problems.append(str(error))
    if len(problems) > 1:
        problems.append(f"{len(problems)} of {len(paths)} inputs cannot be read; nothing was written")
    if problems:
        raise UserError("\n".join(problems))


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
) -> list[Path]:
    """Predict every input NIfTI and write output_dir/<input file name>, a uint8 label map with the
    input's exact header geometry; with `png`, also output_dir/<stem>.png (QC montage). Writes
    output_dir/labels.json ({"0": "background", ...}), once all volumes are done, when `class_names` is
    given (with or without the background name). Returns the label files written, in input order.

    Everything that can be checked up front is checked before anything is written: inputs exist and
    read as 3D images, no output lands in an input's directory or on an input, no two outputs collide,
    class names fit.
    """
    inputs = [Path(p) for p in inputs]
    output_dir = Path(output_dir)
    plan = plan_outputs(inputs, output_dir, png=png)
    names = _label_names(int(num_classes), class_names)
    pending = pending_inputs(plan, skip_existing)
    require_readable([src for src, _, _ in plan if src in pending], load_volume)

    model = model.to(device)
    written = Predictions()
    for src, label_out, png_out in with_progress(plan, progress):
        if src not in pending:
            written.add(label_out, kept=True)  # finished by an earlier, interrupted run (writes are atomic)
            continue
        vol = load_volume(src)
        probs = predict_volume_probabilities(
            model, vol.array, vol.spacing, input_size, scales, batch_size=batch_size, device=device,
            size_divisor=size_divisor,
        )
        if probs.shape[0] != int(num_classes):
            raise UserError(
                f"{src}: the model outputs {probs.shape[0]} classes but num_classes is {num_classes}; "
                "does the checkpoint match the recipe?"
            )
        labels = labels_from_probabilities(probs)
        if largest_component:
            labels = keep_largest_component(labels, int(num_classes))
        write_label_like(labels, src, label_out)
        if png_out is not None:
            write_overlay_montage(vol.array, labels, png_out, slice_axis_of(vol.spacing), class_names=legend_names(num_classes, names))
        written.add(label_out)
    if names is not None:
        write_json_atomic(names, output_dir / "labels.json")
    return written
