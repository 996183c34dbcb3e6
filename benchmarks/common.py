"""Shared helpers for the benchmark scripts: demo data, machine description, result files."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def ensure_demo_data(root: Path = REPO / "demo_data" / "acdc") -> Path:
    """The 30-patient demo phantom (`make demo` makes the same one)."""
    if not (root / "patient030").is_dir():
        from maskmatch_med.data.phantom import write_acdc_phantom

        write_acdc_phantom(root, patients=30, seed=0)
    return root


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    # Changed result files (this very table, runs finished meanwhile) say nothing about the code measured.
    status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"]
    dirty = bool(subprocess.run(status, cwd=REPO, capture_output=True, text=True).stdout.strip())
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save(name: str, table_md: str, data: dict, results: Path = RESULTS) -> None:
    results.mkdir(parents=True, exist_ok=True)
    info = machine()
    header = f"# {name}\n\nMeasured {info['date']} at commit {info['commit']}; torch {info['torch']}, {info['cores']} threads, " \
             f"{'GPU ' + info['cuda'] if info['cuda'] else 'CPU only'}.\n\n"
    (results / f"{name}.md").write_text(header + table_md + "\n")
    (results / f"{name}.json").write_text(json.dumps({"machine": info, **data}, indent=2) + "\n")
    print(header + table_md)
