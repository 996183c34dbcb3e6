"""What every scenario's `predict` shares: the list of outputs it returns, the progress bar, reading every
input before the first output is written, and the main logits of a network's output."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from maskmatch_med.errors import UserError


def logits_of(output) -> torch.Tensor:
    """The main prediction of a segmentation network: plain tensors, deep-supervision tuples/lists
    (first = full resolution) and torchvision-style dicts ("out")."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if "out" in output:
            return output["out"]
        return next(iter(output.values()))
    if isinstance(output, (list, tuple)) and output:
        return logits_of(output[0])
    raise TypeError(f"cannot interpret model output of type {type(output).__name__}")


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
