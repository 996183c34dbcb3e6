"""BatchNorm statistics re-estimated on clean unlabeled images (method.recalibrate_norm): the pure
functions, then tiny CLI runs that validate and save the re-estimated copy while training and resume
stay as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import tiny_recipe, train_interrupted_after
from maskmatch_med.method.norm_recalibration import recalibrate_statistics, recalibrated_copy, spread_indices


def net() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm first, so its statistics are those of the images themselves; dropout to catch a train-mode forward
    return nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))


def images(n=12, mean=3.0, std=2.0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * std + mean


def test_spread_indices_cover_the_set_evenly():
    assert spread_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_indices(3, 8).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no images"):
        spread_indices(0, 4)


def test_recalibration_is_the_plain_average_over_the_batches_and_touches_nothing_else():
    model = net().train()
    model(torch.randn(4, 1, 8, 8))  # running statistics of other data
    weights = {k: v.clone() for k, v in model.named_parameters()}
    x = images()
    batches = list(x.split(4))
    rng = torch.get_rng_state()
    assert recalibrate_statistics(model, batches) == 3
    first = model[0]
    # momentum None: the mean over batches of each batch's mean and unbiased variance
    torch.testing.assert_close(first.running_mean, torch.stack([b.mean() for b in batches]).mean().reshape(1))
    torch.testing.assert_close(first.running_var, torch.stack([b.var() for b in batches]).mean().reshape(1))
    assert first.momentum == 0.1 and model[2].momentum == 0.1
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert torch.equal(rng, torch.get_rng_state())  # dropout stayed off: no random draw
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]), key
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_statistics(model, [])


def test_recalibrated_copy_leaves_the_model_alone():
    model = net().eval()
    before = copy.deepcopy(model.state_dict())
    calibrated = recalibrated_copy(model, lambda: images().split(6))
    assert calibrated is not model and not calibrated.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.allclose(calibrated[0].running_mean, model[0].running_mean)


def test_a_model_without_batchnorm_is_left_as_it_is():
    model = nn.Conv2d(1, 2, 3)
    assert recalibrate_statistics(model, images().split(4)) == 0


def test_a_supervised_run_of_a_recalibrating_recipe_says_it_keeps_its_statistics(tmp_path, phantom_root, tiny_manifest, run_cli):
    method = {"name": "supervised", "recalibrate_norm": 2}
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "run", method=method, train={"iterations": 2})
    code, out, err = run_cli("train", recipe, "--no-progress")
    assert code == 0, err
    assert "note: method.recalibrate_norm=2 is not used: supervised loads no unlabeled images" in out
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    for key, value in state["model"].items():
        assert torch.equal(state["inference"][key], value), key


RECALIBRATED = {"name": "maskmatch", "conf_thresh": 0.5, "mask": {"patch_size": 4}, "recalibrate_norm": 2}


def test_training_validates_and_saves_the_recalibrated_teacher_and_resumes_exactly(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    from maskmatch_med.engine import trainer

    scored = []
    real_validate = trainer.Trainer._validate

    def spy(self, done, log, bar, generators):
        real_validate(self, done, log, bar, generators)
        scored.append((self._calibrated[1], self.teacher))

    monkeypatch.setattr(trainer.Trainer, "_validate", spy)
    train = {"iterations": 4, "val_every": 2}
    full = tiny_recipe(tmp_path / "full.yaml", phantom_root, tiny_manifest, tmp_path / "full", method=RECALIBRATED, train=train)
    code, _, err = run_cli("train", full, "--no-progress")
    assert code == 0, err
    calibrated, teacher = scored[-1]
    state = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    # the teacher keeps its EMA statistics; the inference weights are its copy with re-estimated statistics
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(state["teacher"][key], value, msg=key)
        torch.testing.assert_close(state["inference"][key], calibrated.state_dict()[key], msg=key)
    means = [k for k in state["teacher"] if k.endswith("running_mean")]
    assert means and all(not torch.equal(state["inference"][k], state["teacher"][k]) for k in means)
    weights = [k for k in state["teacher"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(state["inference"][k], state["teacher"][k]) for k in weights)

    split = tiny_recipe(tmp_path / "split.yaml", phantom_root, tiny_manifest, tmp_path / "split", method=RECALIBRATED, train=train)
    assert train_interrupted_after(run_cli, monkeypatch, split, 2)[0] == 130
    assert run_cli("train", split, "--no-progress", "--resume")[0] == 0
    resumed = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "teacher", "inference"):
        for key in state[part]:
            torch.testing.assert_close(state[part][key], resumed[part][key], rtol=0, atol=0, msg=f"{part} {key}")


def test_recalibration_changes_what_is_scored_and_saved_not_the_training(tmp_path, phantom_root, tiny_manifest, run_cli):
    states = {}
    for name, extra in (("plain", {}), ("recalibrated", {"recalibrate_norm": 2})):
        method = {"name": "maskmatch", "conf_thresh": 0.5, "mask": {"patch_size": 4}, **extra}
        recipe = tiny_recipe(tmp_path / f"{name}.yaml", phantom_root, tiny_manifest, tmp_path / name, method=method, train={"iterations": 4})
        assert run_cli("train", recipe, "--no-progress")[0] == 0
        states[name] = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "teacher"):
        for key, value in states["plain"][part].items():
            assert torch.equal(value, states["recalibrated"][part][key]), f"{part} {key}"
    means = [k for k in states["plain"]["inference"] if k.endswith("running_mean")]
    assert all(not torch.equal(states["plain"]["inference"][k], states["recalibrated"]["inference"][k]) for k in means)


def test_recipe_refuses_recalibration_beside_separate_domain_statistics(tmp_path):
    from maskmatch_med.config import load_recipe
    from maskmatch_med.errors import UserError

    path = tmp_path / "r.yaml"
    path.write_text("data: {root: x}\nmethod: {recalibrate_norm: 4, domain_norm: separate}\n")
    with pytest.raises(UserError, match="method.recalibrate_norm: cannot be combined with method.domain_norm"):
        load_recipe(path)
