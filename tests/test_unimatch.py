"""UniMatch as a base: feature perturbation on encoder features, and the loss weights."""

import copy

import pytest
import torch

from maskmatch_med.config import MethodConfig, ModelConfig, WeakAugConfig
from maskmatch_med.method.perturbation import channel_dropout, feature_taps, perturbed_encoder
from maskmatch_med.method.steps import Batch, UniMatchStep, build_step
from maskmatch_med.models import build_model


NETWORKS = {
    "unet": ModelConfig(name="unet", channels=[4, 8, 16], strides=[2, 2], num_res_units=0),
    "basicunet": ModelConfig(name="basicunet", channels=[4, 4, 8, 8, 16, 4], strides=[2, 2, 2, 2, 2]),
    "dynunet": ModelConfig(name="dynunet", spatial_dims=3, channels=[4, 8, 16], strides=[2, 2]),
}
TAPS = {"unet": 3, "basicunet": 4, "dynunet": 2}  # hooks reading every encoder level (skips and bottleneck)


def _network(name):
    torch.manual_seed(0)
    config = NETWORKS[name]
    model = build_model(config, config.spatial_dims, 1, 3).eval()
    return model, torch.randn(4, 1, *([32, 32] if config.spatial_dims == 2 else [16, 16, 16]))


@pytest.mark.parametrize("name", NETWORKS)
def test_perturbation_changes_only_the_chosen_rows_and_only_when_on(name):
    model, x = _network(name)
    assert len(feature_taps(model)) == TAPS[name]
    with torch.no_grad():
        plain = model(x)
        with perturbed_encoder(model, 0.5, torch.Generator().manual_seed(1), rows=slice(2, None)):
            perturbed = model(x)
        with perturbed_encoder(model, 0.0):
            unperturbed = model(x)
        after = model(x)
    assert torch.equal(perturbed[:2], plain[:2])  # eval mode: rows outside `rows` are untouched
    assert not torch.allclose(perturbed[2:], plain[2:])
    assert torch.equal(plain, unperturbed) and torch.equal(plain, after)
    assert all(not tap.module._forward_hooks and not tap.module._forward_pre_hooks for tap in feature_taps(model))


def test_encoder_stays_clean_under_perturbation():
    """UniMatch drops channels of the features the decoder reads; the encoder itself runs cleanly, so the
    deepest encoder block sees the same input with and without perturbation."""
    model, x = _network("unet")
    bottom = feature_taps(model)[-1].module
    seen = []
    bottom.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        plain = model(x)
        with perturbed_encoder(model, 0.5, torch.Generator().manual_seed(1)):
            perturbed = model(x)
    assert torch.equal(seen[0], seen[1]) and not torch.allclose(plain, perturbed)


def test_channel_dropout_drops_whole_channels_and_rescales():
    x = torch.ones(4, 16, 5, 5)
    y = channel_dropout(x, 0.5, torch.Generator().manual_seed(0))
    per_channel = y.flatten(2)
    assert ((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1)).all()
    assert 0.2 < (per_channel[..., 0] == 0).float().mean() < 0.8
    rows = channel_dropout(x, 0.5, torch.Generator().manual_seed(0), rows=slice(1, 3))
    assert torch.equal(rows[0], x[0]) and torch.equal(rows[3], x[3]) and not torch.equal(rows[1:3], x[1:3])
    first = channel_dropout(x, 0.5, torch.Generator().manual_seed(0), rows=slice(1, 3), channels=10)
    sliced = channel_dropout(x[:, :10], 0.5, torch.Generator().manual_seed(0), rows=slice(1, 3))
    assert torch.equal(first[:, :10], sliced)  # the same draws as dropping a slice of the first 10 channels...
    assert torch.equal(first[:, 10:], x[:, 10:])  # ...and the skip connection's inner channels pass unchanged


def test_unimatch_step_is_one_forward_pass():
    """The perturbed view shares the pass (and BatchNorm statistics) of the other views, so running
    statistics are never updated from a perturbed-only batch."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[4, 8, 16], strides=[2, 2], num_res_units=0), 2, 1, 4)
    teacher = copy.deepcopy(model).eval()
    calls = []
    model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    step = build_step(MethodConfig(name="unimatch", conf_thresh=0.0), WeakAugConfig(), size_divisor=4)
    batch = Batch(torch.randn(2, 1, 32, 32), torch.randint(0, 4, (2, 32, 32)), torch.randn(3, 1, 32, 32))
    step(model, teacher, batch, torch.Generator().manual_seed(0))
    assert calls == [2 + 3 * 3]  # labeled, two strong views, the perturbed weak view


def run_step(method: MethodConfig):
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=[4, 8, 16], strides=[2, 2], num_res_units=0), 2, 1, 4)
    step = build_step(method, WeakAugConfig(), size_divisor=4)
    batch = Batch(torch.randn(2, 1, 32, 32), torch.randint(0, 4, (2, 32, 32)), torch.randn(2, 1, 32, 32))
    return step, step(model, model, batch, torch.Generator().manual_seed(0))


def test_unimatch_loss_weights():
    step, out = run_step(MethodConfig(name="unimatch", conf_thresh=0.0))
    assert isinstance(step, UniMatchStep) and not step.masked and step.scales == [1.0]
    logs = out.logs
    expected = (logs["loss_x"] + 0.25 * logs["loss_s1"] + 0.25 * logs["loss_s2"] + 0.5 * logs["loss_fp"]) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert logs["loss_fp"] > 0 and logs["loss_s1"] != logs["loss_s2"]  # two different strong views
    out.loss.backward()


def test_maskmatch_on_unimatch_adds_the_masked_term():
    step, out = run_step(MethodConfig(name="maskmatch", base="unimatch", conf_thresh=0.0, lambda_m=2.0, mask={"patch_size": 4}))
    assert isinstance(step, UniMatchStep) and step.masked and step.scales == [0.75, 1.0, 1.25]
    logs = out.logs
    expected = (logs["loss_x"] + 0.25 * logs["loss_s1"] + 0.25 * logs["loss_s2"] + 0.5 * logs["loss_fp"] + 2.0 * logs["loss_m"]) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_unsupervised_loss_dice_replaces_every_pseudo_label_term(monkeypatch):
    from maskmatch_med.method import steps

    calls = []
    real = steps.pseudo_label_dice_loss
    monkeypatch.setattr(steps, "pseudo_label_dice_loss", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(steps, "pseudo_label_loss", lambda *a: pytest.fail("cross-entropy used with unsupervised_loss=dice"))
    _, out = run_step(MethodConfig(name="maskmatch", base="unimatch", conf_thresh=0.0, unsupervised_loss="dice", mask={"patch_size": 4}))
    assert len(calls) == 4  # s1, s2, fp, m
    assert all(0.0 <= out.logs[k] <= 1.0 for k in ("loss_s1", "loss_s2", "loss_fp", "loss_m"))
    out.loss.backward()
