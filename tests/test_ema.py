import pytest
import torch
from torch import nn

from maskmatch_med.method.ema import ema_update, make_teacher


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())


def _perturb(student):
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()
    student(torch.randn(4, 1, 6, 6))  # updates BN running stats and num_batches_tracked


def test_make_teacher():
    student = _net()
    teacher = make_teacher(student)
    assert teacher is not student and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for a, b in zip(teacher.state_dict().values(), student.state_dict().values()):
        assert torch.equal(a, b)
    teacher(torch.randn(1, 1, 5, 5)).sum()  # no grad graph through teacher params
    assert all(p.grad is None for p in teacher.parameters())


def test_ema_formula_params_and_buffers():
    student = _net()
    teacher = make_teacher(student)
    _perturb(student)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    m = ema_update(teacher, student, 0.9)
    assert m == 0.9
    t, s = teacher.state_dict(), student.state_dict()
    for k in before:
        if before[k].is_floating_point():
            assert torch.allclose(t[k], 0.9 * before[k] + 0.1 * s[k], atol=1e-6), k
        else:
            assert torch.equal(t[k], s[k]), k  # num_batches_tracked copied
    assert t["1.num_batches_tracked"].item() == 1
    assert not torch.equal(t["1.running_mean"], before["1.running_mean"])


def test_warmup_momentum():
    student = _net()
    teacher = make_teacher(student)
    assert ema_update(teacher, student, 0.99, step=0) == 0.0
    assert ema_update(teacher, student, 0.99, step=1) == pytest.approx(0.5)
    assert ema_update(teacher, student, 0.99, step=9) == pytest.approx(0.9)
    assert ema_update(teacher, student, 0.99, step=10_000) == 0.99
    _perturb(student)
    ema_update(teacher, student, 0.99, step=0)  # first step copies the student
    for a, b in zip(teacher.state_dict().values(), student.state_dict().values()):
        assert torch.equal(a, b)


def test_momentum_one_keeps_teacher():
    student = _net()
    teacher = make_teacher(student)
    _perturb(student)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 1.0)
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, before[k])
    with pytest.raises(ValueError):
        ema_update(teacher, student, 1.5)
