"""A crash costs minutes, not the run: SIGKILL + resume, NaN stops, safe checkpoint loading,
snapshot pruning and resumable prediction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_recipe


def kill_after_checkpoint(command, last_path, timeout=120):
    """Start `command`, SIGKILL it as soon as a mid-run checkpoint exists; return its iteration."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and process.poll() is None:
            if last_path.exists():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return torch.load(last_path, weights_only=True)["iteration"]
            time.sleep(0.02)
        pytest.fail(f"no checkpoint before the run ended: {process.stderr.read().decode()[-2000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, phantom_root, tiny_manifest, run_cli):
    train = {"iterations": 40, "checkpoint_every": 2, "val_every": 20, "log_every": 1}
    killed = tiny_recipe(tmp_path / "killed.yaml", phantom_root, tiny_manifest, tmp_path / "killed", train=train)
    cli = [sys.executable, "-m", "maskmatch_med", "train", str(killed), "--no-progress"]
    at = kill_after_checkpoint(cli, tmp_path / "killed" / "checkpoints" / "last.pt")
    assert 0 < at < 40
    code, _, err = run_cli("train", killed, "--no-progress", "--resume")
    assert code == 0, err

    straight = tiny_recipe(tmp_path / "straight.yaml", phantom_root, tiny_manifest, tmp_path / "straight", train=train)
    assert run_cli("train", straight, "--no-progress")[0] == 0
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], msg=f"student {key}")
        torch.testing.assert_close(b["teacher"][key], a["teacher"][key], msg=f"teacher {key}")
    # The resumed run's losses equal the uninterrupted run's from the checkpoint on.
    losses = lambda run: {line.split(",")[0]: line.split(",")[-2:] for line in open(tmp_path / run / "train_log.csv").read().splitlines()[1:]}
    straight_losses, killed_losses = losses("straight"), losses("killed")
    for iteration in range(at + 1, 41):
        assert killed_losses[str(iteration)] == straight_losses[str(iteration)]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    from maskmatch_med.method import steps

    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 6, "val_every": 2})
    real_loss, calls = steps.pseudo_label_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 5 else loss  # 2 calls per step: NaN from iteration 3

    monkeypatch.setattr(steps, "pseudo_label_loss", poisoned)
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert "iteration 3: loss is not finite (loss_s, loss_m, loss)" in err
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_truncated_checkpoint_is_refused(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    last = tmp_path / "out" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    code, _, err = run_cli("train", recipe, "--no-progress", "--resume", "--set", "train.iterations=4")
    assert code == 2 and "last.pt: not a readable checkpoint" in err and "Traceback" not in err
    code, _, err = run_cli("predict", "--checkpoint", last, "--input", phantom_root / "patient001", "--output", tmp_path / "pred")
    assert code == 2 and "not a readable checkpoint" in err and not (tmp_path / "pred").exists()


def test_class_count_mismatch_on_resume(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    code, _, err = run_cli("train", recipe, "--no-progress", "--resume", "--set", "train.iterations=4",
                           "--set", "data.num_classes=5", "--set", "data.class_names=[a,b,c,d]")
    assert code == 2 and "trained for 4 classes" in err


def test_keep_last_snapshots(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out",
                         train={"iterations": 5, "checkpoint_every": 1, "keep_last": 2, "val_every": 5})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    names = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert names == ["best.pt", "iter_0000004.pt", "iter_0000005.pt", "last.pt"]


def test_predict_skip_existing_resumes_an_interrupted_prediction(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    ckpt, patient, out = tmp_path / "out" / "checkpoints" / "best.pt", phantom_root / "patient001", tmp_path / "pred"
    assert run_cli("predict", "--checkpoint", ckpt, "--input", patient, "--output", out)[0] == 0
    first, second = sorted(out.glob("*.nii.gz"))
    second.unlink()  # as if the run died before the second volume
    before = first.stat().st_mtime_ns
    code, printed, err = run_cli("predict", "--checkpoint", ckpt, "--input", patient, "--output", out, "--skip-existing")
    assert code == 0, err
    assert second.is_file() and first.stat().st_mtime_ns == before
    # Both counts: it kept one and wrote one (it used to say "wrote 2 label maps").
    assert printed.strip() == f"wrote 1 label map to {out}; kept 1 that an earlier run had completed (--skip-existing)"


def test_amp_setting_is_ignored_on_cpu(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2, "amp": "bf16"})
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 0, err
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"] is None and all(v.dtype != torch.bfloat16 for v in state["model"].values())


def test_run_files_are_readable_by_others(tmp_path, phantom_root, tiny_manifest, run_cli):
    """Atomic writes must not leave temp-file permissions (0600) on shared results."""
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    old = os.umask(0o022)
    try:
        assert run_cli("train", recipe, "--no-progress")[0] == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "out" / "recipe.yaml", tmp_path / "out" / "checkpoints" / "last.pt"):
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_resume_from_the_run_directory(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    code, _, err = run_cli("train", tmp_path / "out", "--resume", "--no-progress", "--set", "train.iterations=3")
    assert code == 0, err
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 3
    code, _, err = run_cli("train", tmp_path, "--resume")
    assert code == 2 and "not a run directory" in err


def test_ctrl_c_before_the_first_checkpoint_says_nothing_is_lost_but_the_start(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    """Ctrl-C before any checkpoint: no --resume to offer; the command it gives instead works."""
    from maskmatch_med.engine.trainer import Trainer

    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    real_step = Trainer._train_step

    def interrupt_second_step(self, iteration):
        if iteration == 1:
            raise KeyboardInterrupt
        return real_step(self, iteration)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_second_step)
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 130 and err.strip() == (
        f"interrupted after 1 of 2 iterations, before the first checkpoint (one every 2 iterations): nothing to resume; "
        f"start again with `maskmatch-med train {tmp_path / 'out'}`"
    )
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    code, _, err = run_cli("train", tmp_path / "out", "--no-progress")
    assert code == 0, err
    # The fresh start's logs hold its own iterations once, not the interrupted start's as well.
    assert [line.split(",")[0] for line in open(tmp_path / "out" / "train_log.csv").read().splitlines()] == ["iteration", "1", "2"]


def test_resume_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path, phantom_root, tiny_manifest, run_cli):
    """A kill after iteration 3 with a checkpoint at 2 leaves iteration 3 (maybe half a line) in the logs;
    the resumed run logs iteration 3 again, so every iteration must appear once, and every line be JSON."""
    import csv
    import json

    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"iterations": 2})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    run = tmp_path / "out"
    with open(run / "metrics.jsonl", "a") as stream:  # what the killed run wrote after its checkpoint
        stream.write('{"kind": "train", "iteration": 3, "loss": 9.0}\n{"kind": "train", "itera')
    with open(run / "train_log.csv", "a") as stream:
        stream.write("3,9.0\n")
    code, _, err = run_cli("train", run, "--no-progress", "--resume", "--set", "train.iterations=4")
    assert code == 0, err
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4] and 9.0 not in [r.get("loss") for r in records]
    assert [int(r["iteration"]) for r in csv.DictReader(open(run / "train_log.csv"))] == [1, 2, 3, 4]
