"""The benchmarks' phantom cache: processes started together (quality.py's documented two-process
run) must never see one another's half-written files."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import nibabel as nib
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import ensure_phantom, write_text_atomically  # noqa: E402


def _write(root: str) -> None:
    ensure_phantom(Path(root), patients=2, seed=3)


def test_concurrent_writers_leave_one_complete_phantom(tmp_path):
    root = tmp_path / "phantom"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write, args=(str(root),)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]  # no staging folder left behind
    frames = sorted(root.glob("patient*/*_frame??.nii.gz"))
    assert [p.parent.name for p in frames] == ["patient001", "patient001", "patient002", "patient002"]
    for image in frames:
        label = image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz"))
        assert nib.load(image).shape == nib.load(label).shape


def test_existing_phantom_is_reused_untouched(tmp_path):
    root = ensure_phantom(tmp_path / "phantom", patients=1, seed=0)
    image = next(root.glob("patient001/*_frame??.nii.gz"))
    stamp = image.stat().st_mtime_ns
    assert ensure_phantom(root, patients=1, seed=0) == root
    assert image.stat().st_mtime_ns == stamp


def test_incomplete_phantom_in_the_way_is_named(tmp_path):
    root = tmp_path / "phantom"
    (root / "patient001").mkdir(parents=True)  # a crashed writer's leftovers: patient002 never came
    with pytest.raises(SystemExit, match="incomplete phantom is in the way"):
        ensure_phantom(root, patients=2, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]


def test_manifest_written_in_one_step(tmp_path):
    manifest = tmp_path / "m" / "val.txt"
    write_text_atomically(manifest, "patient001\n")
    stamp = manifest.stat().st_mtime_ns
    write_text_atomically(manifest, "patient001\n")  # same text: left alone
    assert manifest.stat().st_mtime_ns == stamp
    write_text_atomically(manifest, "patient002\n")
    assert manifest.read_text() == "patient002\n"
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["val.txt"]


def test_quality_run_keeps_the_validation_curve(tmp_path):
    """quality.py saves each validation of a run (iteration and Dice per class) so a shorter screening run
    can be compared with a finished one at equal iterations; training records are left out."""
    from quality import validation_curve

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"kind": "train", "iteration": 10, "loss": 0.5, "pl_share_RV": 0.1}\n'
        '{"kind": "val", "iteration": 833, "dice_RV": 0.25, "dice_mean": 0.5, "best_dice_mean": 0.5}\n'
        '{"kind": "val", "iteration": 1666, "dice_RV": 0.5, "dice_mean": 0.625, "best_dice_mean": 0.625}\n'
    )
    assert validation_curve(metrics) == [
        {"iteration": 833, "dice_RV": 0.25, "dice_mean": 0.5},
        {"iteration": 1666, "dice_RV": 0.5, "dice_mean": 0.625},
    ]
