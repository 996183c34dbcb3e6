"""Validate every file a recipe will read, before any training starts.

`check-data` prints the problems; `train` runs the same checks and keeps the loaded volumes,
so every file is read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskmatch_med.data.cases import Case, Splits
from maskmatch_med.data.nifti import Volume, load_label, load_volume
from maskmatch_med.errors import UserError


@dataclass
class LoadedCase:
    case: Case
    image: Volume
    label: Volume | None


def _check_case(case: Case, num_classes: int) -> tuple[LoadedCase | None, list[str]]:
    try:
        image = load_volume(case.image, frame=case.frame)
    except UserError as error:
        return None, [str(error)]
    if case.label is None:
        return LoadedCase(case, image, None), []
    try:
        label = load_label(case.label, frame=case.frame, lut=case.label_lut)
    except UserError as error:
        return None, [str(error)]
    problems = []
    if label.array.shape != image.array.shape:
        problems.append(f"{case.label}: shape {label.array.shape} differs from its image's {image.array.shape} ({case.image.name})")
    elif not np.allclose(label.affine, image.affine, atol=1e-3):
        problems.append(f"{case.label}: affine differs from its image's ({case.image.name})")
    low, high = int(label.array.min()), int(label.array.max())
    if low < 0 or high >= num_classes:
        problems.append(f"{case.label}: label values {low}..{high} outside 0..{num_classes - 1} (data.num_classes={num_classes})")
    return (None if problems else LoadedCase(case, image, label)), problems


def check_splits(splits: Splits, num_classes: int, semi_supervised: bool) -> tuple[dict[str, list[LoadedCase]], list[str]]:
    """Load and validate every case; return the loaded cases per split and one line per problem."""
    problems: list[str] = []
    required = ["labeled", "validation"] + (["unlabeled"] if semi_supervised else [])
    for name in required:
        if not getattr(splits, name):
            problems.append(f"split '{name}' is empty: check data.root/data.datalist and the manifest")
    loaded: dict[str, list[LoadedCase]] = {}
    for name, cases in splits.items():
        loaded[name] = []
        for case in cases:
            result, case_problems = _check_case(case, num_classes)
            problems += case_problems
            if result is not None:
                loaded[name].append(result)
    return loaded, problems


def require_clean(problems: list[str]) -> None:
    """Raise one UserError listing every problem, one per line (the CLI prefixes each with "error:")."""
    if problems:
        count = f"{len(problems)} data problem{'s' if len(problems) > 1 else ''}"
        raise UserError("\n".join(problems + [f"{count} found; fix them (maskmatch-med check-data RECIPE) and run again"]))
