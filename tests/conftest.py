"""Shared fixtures: a small phantom in the ACDC layout with its own manifest, and a tiny recipe."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from maskmatch_med.cli import main
from maskmatch_med.data.phantom import write_acdc_phantom

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """8 phantom patients: 1 validation, 1 test, 1 labeled, 5 unlabeled. Read-only for tests."""
    root = tmp_path_factory.mktemp("phantom") / "acdc"
    write_acdc_phantom(root, patients=8, seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    man = tmp_path_factory.mktemp("manifest")
    (man / "val.txt").write_text("patient002\n")
    (man / "test.txt").write_text("patient001\n")
    (man / "labeled_order.txt").write_text("patient003\npatient004\n")
    return man


def tiny_recipe(path: Path, root: Path, manifest: Path, output: Path, **sections) -> Path:
    """A recipe small enough for a CPU test: 32x32 slices, a 3-level UNet, a few iterations."""
    recipe = {
        "data": {"root": str(root), "manifest": str(manifest), "num_labeled": 1, "input_size": [32, 32]},
        "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "method": {"name": "maskmatch", "conf_thresh": 0.5, "mask": {"patch_size": 4}},
        "train": {"iterations": 4, "batch_size": 2, "unlabeled_batch_size": 2, "val_every": 2, "log_every": 1, "lr": 0.01},
        "output_dir": str(output),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe.setdefault(section, {}).update(values)
        else:
            recipe[section] = values
    path.write_text(yaml.safe_dump(recipe))
    return path


# A 3D network, patch and method small enough for a CPU test (on top of tiny_recipe).
TINY_3D = {
    "model": {"spatial_dims": 3, "channels": [4, 8, 16], "strides": [2, 2], "axis_strides": [[2, 2, 1], [2, 2, 2]], "num_res_units": 0},
    "volume": {"spacing": [6.0, 6.0, 10.0], "patch_size": [16, 16, 4], "sw_overlap": 0.25},
    "method": {"name": "maskmatch", "conf_thresh": 0.5, "mask": {"patch_size": [4, 4, 2]},
               "ensemble": {"scales": [[0.75, 0.75, 1.0], [1.0, 1.0, 1.0]]}},
}


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run the CLI in-process like the console script; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["maskmatch-med", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def train_interrupted_after(run_cli, monkeypatch, recipe: Path, iteration: int) -> tuple[int, str, str]:
    """Train `recipe` as if Ctrl-C came right after its `last.pt` of `iteration` was written; returns what
    the CLI returned (exit 130 expected). The real checkpoint writer is restored afterwards."""
    from maskmatch_med.engine import trainer

    real_save = trainer.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if path.name == "last.pt" and payload["iteration"] == iteration:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    try:
        return run_cli("train", recipe, "--no-progress")
    finally:
        monkeypatch.setattr(trainer, "save_checkpoint", real_save)
