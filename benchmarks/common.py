"""Shared helpers for the benchmark scripts: demo data, machine description, result files."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def ensure_phantom(root: Path, patients: int, seed: int, style: str = "A", first: int = 1) -> Path:
    """A cached phantom at `root`, written once: into a private folder beside it, then renamed into
    place, so benchmark processes started together never read one another's half-written files."""
    last_patient = root / f"patient{first + patients - 1:03d}"  # arrives with the whole phantom, by one rename
    if last_patient.is_dir():
        return root
    from maskmatch_med.data.phantom import write_acdc_phantom

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_acdc_phantom(staging, patients=patients, seed=seed, style=style, first=first)
        try:
            staging.rename(root)
        except OSError:
            # Another process won the race (its copy is byte-identical), or an old partial copy is in the way.
            if not last_patient.is_dir():
                raise SystemExit(f"{root}: an incomplete phantom is in the way; delete the folder and run again")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def write_text_atomically(path: Path, text: str) -> None:
    """Replace a small file in one step (other processes read these manifests while we write); the
    same text already there is left alone."""
    from maskmatch_med.engine.writers import write_text_atomic

    if path.is_file() and path.read_text() == text:
        return
    write_text_atomic(text, path)


def ensure_demo_data(root: Path = REPO / "demo_data" / "acdc") -> Path:
    """The 30-patient demo phantom (`make demo` makes the same one)."""
    return ensure_phantom(root, patients=30, seed=0)


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
