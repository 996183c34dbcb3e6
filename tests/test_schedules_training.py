"""The schedules and pseudo-label logs in real (tiny) training runs through the CLI: the warm-up restarts
the teacher, resume stays exact with every new option on, and ground truth of unlabeled patients is
logged but changes nothing else."""

from __future__ import annotations

import csv
import json
import shutil

import torch

from conftest import tiny_recipe, train_interrupted_after

NEW_OPTIONS = {
    "name": "maskmatch", "conf_thresh": 0.5, "mask": {"patch_size": 4}, "warmup_iterations": 2, "rampup_iterations": 2,
    "mix": "bcp", "pseudo_label": {"threshold": "classwise", "align": "labeled"}, "ensemble": {"fuse": "vote"},
}


def rows(run, kind="train"):
    with open(run / f"{kind}_log.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_warmup_then_ramp_in_the_logs(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "run", method=NEW_OPTIONS,
                         train={"iterations": 5, "val_every": 5})
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 0, err
    log = rows(tmp_path / "run")
    # warm-up rows have no unsupervised columns (blank after the CSV widened), the ramp rises to 1
    assert [r["unsup_weight"] for r in log[:2]] == ["", ""] and log[0]["loss"] == log[0]["loss_x"]
    weights = [float(r["unsup_weight"]) for r in log[2:]]
    assert weights[0] < weights[1] < weights[2] == 1.0
    for key in ("pl_valid_frac", "pl_share_background", "pl_share_RV", "pl_thresh_LV", "pl_align_RV", "pl_dice_RV", "pl_recall_LV"):
        assert key in log[-1], key
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert "pl_precision_Myo" in [r for r in records if r["kind"] == "train"][-1]


def test_teacher_restarts_from_the_student_after_the_warmup(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    from maskmatch_med.engine import trainer

    seen = {}
    real = trainer.Trainer._train_step

    def spy(self, iteration):
        if iteration == 2:  # the first step after a 2-iteration warm-up
            out = real(self, iteration)
            seen["teacher"] = {k: v.clone() for k, v in self.teacher.state_dict().items()}
            seen["student"] = {k: v.clone() for k, v in self.model.state_dict().items()}
            return out
        return real(self, iteration)

    monkeypatch.setattr(trainer.Trainer, "_train_step", spy)
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "run", method=NEW_OPTIONS, train={"iterations": 3})
    assert run_cli("train", recipe, "--no-progress")[0] == 0
    # restarted, then one EMA update with the warm-up momentum 0: the teacher is the student
    for key, value in seen["student"].items():
        torch.testing.assert_close(seen["teacher"][key], value, msg=key)


def test_resume_is_exact_with_warmup_classwise_thresholds_and_bcp(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    train = {"iterations": 6, "val_every": 3}
    full = tiny_recipe(tmp_path / "full.yaml", phantom_root, tiny_manifest, tmp_path / "full", method=NEW_OPTIONS, train=train)
    assert run_cli("train", full, "--no-progress")[0] == 0
    split = tiny_recipe(tmp_path / "split.yaml", phantom_root, tiny_manifest, tmp_path / "split", method=NEW_OPTIONS, train=train)
    assert train_interrupted_after(run_cli, monkeypatch, split, 3)[0] == 130
    assert run_cli("train", split, "--no-progress", "--resume")[0] == 0
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for kind, key in (("classwise_threshold", "ema"), ("distribution_alignment", "predicted"), ("distribution_alignment", "target")):
        torch.testing.assert_close(a["step_state"][kind][key], b["step_state"][kind][key], equal_nan=True, rtol=0, atol=0)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], msg=f"student {key}")
        torch.testing.assert_close(a["teacher"][key], b["teacher"][key], msg=f"teacher {key}")
    assert [r["loss"] for r in rows(tmp_path / "full")[3:]] == [r["loss"] for r in rows(tmp_path / "split")[3:]]


def test_unlabeled_ground_truth_is_logged_and_nothing_else(tmp_path, phantom_root, tiny_manifest, run_cli):
    """The same run with and without the unlabeled patients' label files on disk: identical losses,
    validation scores and checkpoint choice; only the pl_* quality columns differ."""
    blind = tmp_path / "blind_data"
    shutil.copytree(phantom_root, blind)
    labeled = {"patient001", "patient002", "patient003"}  # test, validation, labeled (tiny_manifest, num_labeled 1)
    removed = [p for p in blind.glob("patient*/*_gt.nii.gz") if p.parent.name not in labeled]
    assert removed
    for path in removed:
        path.unlink()
    runs = {}
    for name, root in (("seen", phantom_root), ("blind", blind)):
        recipe = tiny_recipe(tmp_path / f"{name}.yaml", root, tiny_manifest, tmp_path / name, method=NEW_OPTIONS,
                             train={"iterations": 5, "val_every": 5})
        code, _, err = run_cli("train", recipe, "--no-progress")
        assert code == 0, err
        runs[name] = tmp_path / name
    seen, blind_log = rows(runs["seen"]), rows(runs["blind"])
    quality = [k for k in seen[-1] if k.startswith(("pl_precision_", "pl_recall_", "pl_dice_", "pl_as_background_"))]
    assert quality and not any(k in blind_log[-1] for k in quality)
    for a, b in zip(seen, blind_log):
        assert {k: v for k, v in a.items() if k not in quality} == b
    assert rows(runs["seen"], "val") == rows(runs["blind"], "val")
    best = [torch.load(r / "checkpoints" / "best.pt", weights_only=True) for r in runs.values()]
    assert best[0]["best_iteration"] == best[1]["best_iteration"]
    for key in best[0]["model"]:
        assert torch.equal(best[0]["model"][key], best[1]["model"][key]), key
