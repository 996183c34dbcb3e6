"""Where a run's numbers go: JSONL (everything), one CSV per kind of record, and TensorBoard."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


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
        csv_path = self.run_dir / f"{kind}_log.csv"
        fields = ["iteration", *values]
        new_file = not csv_path.exists()
        with open(csv_path, "a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({"iteration": iteration, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{kind}/{key}", value, iteration)

    def image(self, tag: str, rgb: np.ndarray, iteration: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, rgb, iteration, dataformats="HWC")

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
