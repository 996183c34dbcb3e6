"""What the two scenarios on NIfTI volumes (slices, volumes) share: the recipe's cases read and checked,
the `check-data` report, validation by 3D Dice per volume, and `predict` from NIfTI files to label maps
(and optional probability / uncertainty maps and montages) on each input's own grid.

A scenario hands `predict_volume_files` one function, volume -> class probabilities (C, X, Y, Z) on the
volume's grid and, when asked, the scales' disagreement (X, Y, Z); everything around it (which files,
where the outputs go, what an interrupted run left, reading every input first, writing with the
input's header) is the same for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import nibabel as nib
import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.cases import Splits
from maskmatch_med.data.checks import LoadedCase, check_splits, require_clean
from maskmatch_med.data.nifti import Volume, is_nifti, load_volume, nifti_stem
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.data.splits import resolve_datalist_classes, resolve_splits
from maskmatch_med.engine.writers import overlay_rgb, write_json_atomic, write_label_like, write_map_like, write_overlay_montage
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.metrics import dice_per_class
from maskmatch_med.evaluation.postprocess import keep_largest_component
from maskmatch_med.scenarios.base import PredictOptions
from maskmatch_med.scenarios.prediction import Predictions, require_readable, with_progress

# volume, uncertainty wanted -> (probabilities (C, X, Y, Z), disagreement (X, Y, Z) or None), on the CPU
VolumePredictor = Callable[[Volume, bool], tuple[torch.Tensor, "torch.Tensor | None"]]

# ------------------------------------------------------------------------------------------ training


def load_training_cases(recipe: Recipe, semi_supervised: bool) -> tuple[Splits, dict[str, list[LoadedCase]]]:
    """The recipe's splits and their volumes, read and checked. The same checks as check-data, test
    split included, so a broken test file shows up now and not after hours of training; training itself
    never reads the test volumes. A datalist's missing roles are named before any volume is read."""
    splits = resolve_splits(recipe.data, semi_supervised)
    loaded, problems = check_splits(splits, recipe.data.num_classes, semi_supervised)
    require_clean(problems)
    return splits, loaded


def check_volume_data(recipe: Recipe, echo: Callable[[str], None]) -> None:
    """`check-data` for NIfTI recipes: the classes a datalist implies, the case count per split, the
    validation cases held out, each domain's contribution, then every problem (one line each)."""
    semi_supervised = recipe.method.name != "supervised"
    recipe, notes = resolve_datalist_classes(recipe)  # as train resolves them
    for note in notes:
        echo(f"note: {note}")
    splits = resolve_splits(recipe.data, semi_supervised)
    _, problems = check_splits(splits, recipe.data.num_classes, semi_supervised=semi_supervised)
    for name, cases in splits.items():
        echo(f"{name:>10}: {len(cases)} case{'s' if len(cases) != 1 else ''}")
    if recipe.data.val_count:
        held = ", ".join(c.case_id for c in splits.validation)
        echo(f"validation held out of 'training' (data.val_count={recipe.data.val_count}, data.val_seed={recipe.data.val_seed}): {held}")
    for domain, role in splits.domain_roles.items():  # domain adaptation: what each domain contributes
        counts = ", ".join(f"{sum(c.domain == domain for c in cases)} {name}" for name, cases in splits.items())
        echo(f"domain {domain} ({role}): {counts}")
    require_clean(problems)
    echo(f"all {sum(len(c) for _, c in splits.items())} cases readable and consistent")


def mean_dice_metrics(per_case: list[np.ndarray], class_names: list[str]) -> dict[str, float]:
    """Per-class Dice averaged over cases (cases where a class is absent from both maps are skipped),
    plus their mean; a class never scored counts as 0."""
    with np.errstate(all="ignore"):
        per_class = np.nanmean(np.stack(per_case), axis=0)
    per_class = np.nan_to_num(per_class, nan=0.0)
    metrics = {f"dice_{name}": float(value) for name, value in zip(class_names, per_class)}
    metrics["dice_mean"] = float(per_class.mean())
    return metrics


def preview(loaded: LoadedCase, pred: np.ndarray) -> np.ndarray:
    """A validation preview: the middle slice along the slice axis, image with the predicted labels over it."""
    axis = slice_axis_of(loaded.image.spacing)
    middle = loaded.image.array.shape[axis] // 2
    return overlay_rgb(np.take(loaded.image.array, middle, axis=axis), np.take(pred, middle, axis=axis))


class VolumeDiceValidator:
    """Validation on whole volumes: each case's label map as `predict` would give it at scale 1
    (`labels`, the scenario's), 3D Dice per class on the stored grid, averaged over cases."""

    score_key = "dice_mean"

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device):
        self.cases, self.recipe, self.device = cases, recipe, device

    def __len__(self) -> int:
        return len(self.cases)

    def labels(self, model: torch.nn.Module, loaded: LoadedCase) -> np.ndarray:
        """uint8 label map of one validation case, on its stored grid."""
        raise NotImplementedError

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        per_case, previews = self.score_cases(model)
        return mean_dice_metrics(per_case, self.recipe.data.class_names), previews

    def score_cases(self, model: torch.nn.Module) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Dice per class of every case (in order), and a few previews."""
        per_case, previews = [], []
        for loaded in self.cases:
            pred = self.labels(model, loaded)
            per_case.append(dice_per_class(pred, loaded.label.array, self.recipe.data.num_classes))
            if len(previews) < 3:
                previews.append(preview(loaded, pred))
        return per_case, previews


# ------------------------------------------------------------------------------------------ predict


def labels_from_probabilities(probs: torch.Tensor) -> np.ndarray:
    """argmax over classes of (C, X, Y, Z) probabilities -> uint8 (X, Y, Z)."""
    if probs.shape[0] > 256:
        raise ValueError(f"{probs.shape[0]} classes do not fit in uint8 labels")
    return probs.argmax(dim=0).numpy().astype(np.uint8)


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


def label_names(num_classes: int, class_names: list[str] | None) -> dict[str, str] | None:
    """labels.json's content: class index -> name, background first (added when the names leave it out)."""
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


def already_written(src: Path, label_out: Path, png_out: Path | None, extra: Sequence[Path] = ()) -> bool:
    """Whether an earlier, interrupted run left every output of `src` complete (--skip-existing)."""
    return _complete(label_out, src) and (png_out is None or png_out.is_file()) and all(p.is_file() for p in extra)


def pending_inputs(plan: list[tuple[Path, Path, Path | None]], skip_existing: bool, extra_outputs=lambda src: ()) -> set[Path]:
    """The inputs of `plan` still to predict: all of them, or with `skip_existing` those whose outputs
    an earlier, interrupted run did not complete (`extra_outputs(src)`: maps written beside the labels)."""
    return {src for src, label_out, png_out in plan
            if not (skip_existing and already_written(src, label_out, png_out, extra_outputs(src)))}


def predict_volume_files(
    predict: VolumePredictor, inputs: list[Path], output_dir: Path, num_classes: int, class_names: list[str] | None,
    options: PredictOptions,
) -> list[Path]:
    """Predict every input NIfTI with `predict` and write output_dir/<input file name>, a uint8 label
    map with the input's exact header geometry. Options: `png`, also output_dir/<stem>.png (QC montage);
    `probabilities`, output_dir/probabilities/<name> (float32, X x Y x Z x classes); `uncertainty`,
    output_dir/uncertainty/<name> (float32; subfolders keep `evaluate --pred OUTPUT` seeing only labels);
    `largest_component`; `skip_existing`. Writes output_dir/labels.json ({"0": "background", ...}), once
    all volumes are done, when `class_names` is given (with or without the background name). Returns
    the label files, in input order.

    Everything that can be checked up front is checked before anything is written: inputs exist and
    read as 3D images, no output lands in an input's directory or on an input, no two outputs collide,
    class names fit.
    """
    output_dir = Path(output_dir)
    plan = plan_outputs([Path(p) for p in inputs], output_dir, png=options.png)
    names = label_names(int(num_classes), class_names)

    def extra_outputs(src: Path) -> list[Path]:
        return ([output_dir / "probabilities" / src.name] if options.probabilities else []) + (
            [output_dir / "uncertainty" / src.name] if options.uncertainty else [])

    pending = pending_inputs(plan, options.skip_existing, extra_outputs)
    require_readable([src for src, _, _ in plan if src in pending], load_volume)
    written = Predictions()
    for src, label_out, png_out in with_progress(plan, options.progress):
        if src not in pending:
            written.add(label_out, kept=True)  # finished by an earlier, interrupted run (writes are atomic)
            continue
        vol = load_volume(src)
        probs, disagreement = predict(vol, options.uncertainty)
        if probs.shape[0] != int(num_classes):
            raise UserError(
                f"{src}: the model outputs {probs.shape[0]} classes but num_classes is {num_classes}; "
                "does the checkpoint match the recipe?"
            )
        labels = labels_from_probabilities(probs)
        if options.largest_component:
            labels = keep_largest_component(labels, int(num_classes))
        write_label_like(labels, src, label_out)
        if options.probabilities:
            write_map_like(probs.permute(1, 2, 3, 0).numpy(), src, output_dir / "probabilities" / src.name)
        if disagreement is not None:
            write_map_like(disagreement.numpy(), src, output_dir / "uncertainty" / src.name)
        if png_out is not None:
            write_overlay_montage(vol.array, labels, png_out, slice_axis_of(vol.spacing), class_names=legend_names(num_classes, names))
        written.add(label_out)
    if names is not None:
        write_json_atomic(names, output_dir / "labels.json")
    return written
