"""Where a run's numbers go: JSONL (everything), one CSV per kind of record, and TensorBoard."""

from __future__ import annotations

import csv
import json
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


class RunLog:
    """Append-only logs in the run directory; safe to reopen when a run resumes."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow to import

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, kind: str, iteration: int, values: dict[str, float]) -> None:
        record = {"kind": kind, "iteration": iteration, **values}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        self._append_csv(self.run_dir / f"{kind}_log.csv", {"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
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
