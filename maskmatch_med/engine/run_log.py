"""Where a run's numbers go: JSONL (everything), one CSV per kind of record, and TensorBoard.

An undefined value (NaN: a class absent from every validation case, a pseudo-label precision with no
confident pixel of that class) is `null` in metrics.jsonl, since NaN and Infinity are not JSON;
`nan` in the CSVs, where an empty cell means the value was not logged at that iteration; and left out
of TensorBoard, whose curves then have a gap there instead of a point that breaks their scale.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np


HEADLINES = {"dice_mean": "Dice", "miou": "mIoU"}  # a validator's summary metric and how people call it
PER_CLASS_PREFIXES = ("dice_", "iou_")


def validation_summary(metrics: dict[str, float]) -> str:
    """One readable line from a validator's metric keys (which stay as they are in the CSV and
    TensorBoard): `Dice 0.680 (RV 0.512, Myo 0.590, LV 0.782)`; a metric group `key/group` (domain
    adaptation's source, target and domains) becomes `group: Dice ...`."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name, _, group = key.partition("/")
        groups.setdefault(group, {})[name] = value
    parts = []
    for group, values in groups.items():
        headline = next((key for key in HEADLINES if key in values), None)
        details = [
            f"{key.split('_', 1)[1] if key.startswith(PER_CLASS_PREFIXES) else key} {value:.3f}"
            for key, value in values.items() if key != headline
        ]
        text = f"{HEADLINES[headline]} {values[headline]:.3f}" if headline else ""
        if details:
            text = f"{text} ({', '.join(details)})" if text else ", ".join(details)
        parts.append(f"{group}: {text}" if group else text)
    return "; ".join(parts)


def json_value(value):
    """A logged value as JSON allows it: a non-finite float becomes None (null)."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _iteration_of(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _json_iteration(line: str) -> int | None:
    """The iteration of a metrics.jsonl line; None for a line torn by a kill mid-write."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return _iteration_of(record.get("iteration")) if isinstance(record, dict) else None


def _keep_jsonl_until(path: Path, iteration: int) -> None:
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (n := _json_iteration(line)) is not None and n <= iteration]
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(f"{line}\n" for line in kept))
    partial.replace(path)


def _keep_csv_until(path: Path, iteration: int) -> None:
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and (n := _iteration_of(row[0])) is not None and n <= iteration]
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(kept)
    partial.replace(path)


class RunLog:
    """Append-only logs in the run directory; safe to reopen when a run resumes.

    `keep_until=N` first drops every record after iteration N from metrics.jsonl, the CSVs and
    TensorBoard: a resumed run passes its checkpoint's iteration (what a killed run logged after its last
    checkpoint is logged again, and would otherwise appear twice), a fresh run 0. None keeps everything.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, keep_until: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if keep_until is not None:
            self._drop_after(keep_until)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow to import

            purge = None if keep_until is None else keep_until + 1  # events at steps >= purge are hidden
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge)

    def _drop_after(self, iteration: int) -> None:
        jsonl = self.run_dir / "metrics.jsonl"
        if jsonl.is_file():
            _keep_jsonl_until(jsonl, iteration)
        for path in sorted(self.run_dir.glob("*_log.csv")):
            _keep_csv_until(path, iteration)

    def log(self, kind: str, iteration: int, values: dict[str, float]) -> None:
        record = {"kind": kind, "iteration": iteration, **{key: json_value(value) for key, value in values.items()}}
        self.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self.jsonl.flush()
        self._append_csv(self.run_dir / f"{kind}_log.csv", {"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
                if math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, iteration)

    def _append_csv(self, path: Path, row: dict) -> None:
        """Append a row; when it brings new columns (the unsupervised terms start after a warm-up), the
        file is rewritten once with the wider header, earlier rows left blank in the new columns."""
        header = []
        if path.exists():
            with open(path, newline="") as stream:
                header = next(csv.reader(stream), [])
        new = [key for key in row if key not in header]
        if header and new:
            with open(path, newline="") as stream:
                old_rows = list(csv.DictReader(stream))
            header = header + new
            partial = path.with_name(path.name + ".partial")
            with open(partial, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=header)
                writer.writeheader()
                writer.writerows(old_rows)
            partial.replace(path)
        elif not header:
            header = list(row)
            with open(path, "w", newline="") as stream:
                csv.DictWriter(stream, fieldnames=header).writeheader()
        with open(path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=header, extrasaction="ignore").writerow(row)

    def image(self, tag: str, rgb: np.ndarray, iteration: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, rgb, iteration, dataformats="HWC")

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
