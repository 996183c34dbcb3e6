"""method.domain_norm separate: the source view's own BatchNorm statistics (method/domain_norm.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskmatch_med.config import MethodConfig, WeakAugConfig
from maskmatch_med.method.domain_norm import DomainStatistics, norm_buffers
from maskmatch_med.method.steps import Batch, build_step


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3))


def first_mean(model):
    return model[1].running_mean.mean().item()


def test_a_source_pass_updates_only_the_source_statistics():
    model = net().train()
    stats = DomainStatistics(model)
    own_before = {k: v.clone() for k, v in norm_buffers(model).items()}
    with stats.source():
        model(torch.full((2, 1, 6, 6), 1.0) + torch.randn(2, 1, 6, 6))
    for key, value in norm_buffers(model).items():  # the model's own (target) statistics untouched
        assert torch.equal(value, own_before[key]), key
    assert stats.stored["1.num_batches_tracked"].item() == 1 and not torch.equal(stats.stored["1.running_mean"], own_before["1.running_mean"])
    source_mean = stats.stored["1.running_mean"].clone()
    model(torch.randn(2, 1, 6, 6) - 5.0)  # a target pass: the other set
    assert torch.equal(stats.stored["1.running_mean"], source_mean)
    assert model[1].num_batches_tracked.item() == 1
    # in eval mode the source context normalises with the source set
    model.eval()
    x = torch.randn(1, 1, 6, 6)
    plain = model(x)
    with stats.source():
        assert not torch.allclose(model(x), plain)
    assert torch.equal(model(x), plain)


def test_follow_is_an_ema_that_starts_with_a_copy():
    student, teacher = net(), net()
    s, t = DomainStatistics(student), DomainStatistics(teacher)
    t.follow(s, 0.9)
    assert t.stored is None  # nothing to follow yet
    with s.source():
        student.train()(torch.randn(2, 1, 6, 6) + 3)
    t.follow(s, 0.9)
    assert torch.equal(t.stored["1.running_mean"], s.stored["1.running_mean"])
    before = t.stored["1.running_mean"].clone()
    s.stored["1.running_mean"] += 10
    t.follow(s, 0.9)
    torch.testing.assert_close(t.stored["1.running_mean"], 0.9 * before + 0.1 * s.stored["1.running_mean"])


def test_state_round_trip_and_a_foreign_state_is_refused():
    model = net()
    stats = DomainStatistics(model)
    assert stats.state_dict() is None
    with stats.source():
        model.train()(torch.randn(2, 1, 6, 6))
    other = DomainStatistics(net())
    other.load_state_dict(stats.state_dict())
    assert all(torch.equal(other.stored[k], v) for k, v in stats.stored.items())
    with pytest.raises(ValueError, match="do not fit"):
        DomainStatistics(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))).load_state_dict(stats.state_dict())


def test_a_model_without_batchnorm_is_unaffected():
    model = nn.Conv2d(1, 2, 1)
    stats = DomainStatistics(model)
    with stats.source():
        out = model(torch.ones(1, 1, 2, 2))
    assert stats.stored == {} and out.shape == (1, 2, 2, 2)


@pytest.mark.parametrize("base", ["fixmatch", "unimatch"])
def test_the_step_normalises_the_labeled_view_with_the_source_statistics(base):
    """Labeled images far brighter than unlabeled ones: after one step the source set has seen only
    the labeled view, the model's own set only the unlabeled views."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    student = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0, norm="batch").train()
    teacher = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0, norm="batch").eval()
    method = MethodConfig(name="maskmatch", base=base, conf_thresh=0.4, mask={"patch_size": 4})
    step = build_step(method, WeakAugConfig(rotate_deg=0, scale_range=(1, 1), flip_prob=0), 1)
    stats = DomainStatistics(student)
    step.source_statistics = stats.source
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(2, 1, 16, 16, generator=g) + 20, torch.randint(0, 3, (2, 16, 16), generator=g),
                  torch.randn(2, 1, 16, 16, generator=g) - 20)
    out = step(student, teacher, batch, torch.Generator().manual_seed(2))
    out.loss.backward()
    first = next(name for name in norm_buffers(student) if name.endswith("running_mean"))
    own, source = norm_buffers(student)[first], stats.stored[first]
    conv = next(m for m in student.modules() if isinstance(m, nn.Conv2d))
    bright = conv(torch.full((1, 1, 4, 4), 20.0)).mean((0, 2, 3))  # the first layer's response to each domain
    dark = conv(torch.full((1, 1, 4, 4), -20.0)).mean((0, 2, 3))
    # momentum 0.1 from zero: one pass puts a tenth of the batch mean in the running mean
    assert torch.allclose(source, 0.1 * bright, atol=0.5) and torch.allclose(own, 0.1 * dark, atol=0.5)


def test_frozen_statistics_normalise_by_the_batch_and_keep_the_running_values():
    from maskmatch_med.method.domain_norm import frozen_statistics

    model = net().train()
    x = torch.randn(4, 1, 6, 6) * 3 + 2
    before = {k: v.clone() for k, v in norm_buffers(model).items() if "running" in k}
    with frozen_statistics(model):
        inside = model(x)
    for key, value in before.items():
        assert torch.equal(norm_buffers(model)[key], value), key
    assert model[1].momentum == 0.1  # restored
    torch.testing.assert_close(inside, model(x))  # the same batch normalisation as outside
    assert not torch.equal(norm_buffers(model)["1.running_mean"], before["1.running_mean"])


@pytest.mark.parametrize("base", ["fixmatch", "unimatch"])
@pytest.mark.parametrize("where", ["shared", "apart"])
def test_the_masked_view_can_keep_out_of_the_running_statistics(base, where):
    """apart: the masked view is one pass of its own, made with momentum 0; the other views share one."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    student = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0, norm="batch").train()
    method = MethodConfig(name="maskmatch", base=base, conf_thresh=0.4, mask={"patch_size": 4, "norm_statistics": where})
    step = build_step(method, WeakAugConfig(), 1)
    first_bn = next(m for m in student.modules() if isinstance(m, nn.BatchNorm2d))
    passes = []
    student.register_forward_pre_hook(lambda module, args: passes.append((args[0].shape[0], first_bn.momentum)))
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randn(2, 1, 16, 16, generator=g), torch.randint(0, 3, (2, 16, 16), generator=g), torch.randn(3, 1, 16, 16, generator=g))
    out = step(student, student, batch, torch.Generator().manual_seed(2))
    assert "loss_m" in out.logs
    views = 2 + 3 * (3 if base == "unimatch" else 1)  # labeled + strong (two for UniMatch) + weak (UniMatch's fp)
    student_passes = passes[-2:] if where == "apart" else passes[-1:]
    assert student_passes == ([(views, 0.1), (3, 0.0)] if where == "apart" else [(views + 3, 0.1)])
