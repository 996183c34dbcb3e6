import pytest
import torch
import torch.nn.functional as F

from maskmatch_med.method.ensemble import multiscale_probabilities, pseudo_labels, scaled_size


def _conv_predictor(in_ch, n_cls, nd, seed=0):
    torch.manual_seed(seed)
    conv = (torch.nn.Conv2d if nd == 2 else torch.nn.Conv3d)(in_ch, n_cls, 3, padding=1)
    return conv


def test_single_scale_is_identity():
    net = _conv_predictor(2, 4, 2)
    x = torch.randn(2, 2, 12, 10)
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)
        for fuse in ("mean", "max"):
            assert torch.equal(multiscale_probabilities(net, x, [1.0], fuse=fuse), expected)


@pytest.mark.parametrize(
    "shape,scales",
    [
        ((2, 1, 16, 12), [0.75, 1.0, 1.25]),
        ((1, 1, 8, 8, 4), [0.5, 1.0, 1.5]),
        ((1, 2, 8, 8, 4), [(1.25, 1.25, 1.0), 1.0, (0.75, 0.75, 1.0)]),
    ],
)
def test_shapes_and_rescaled_inputs(shape, scales):
    nd = len(shape) - 2
    net = _conv_predictor(shape[1], 3, nd)
    seen = []

    def predict(t):
        seen.append(tuple(t.shape[2:]))
        return net(t)

    x = torch.randn(*shape)
    with torch.no_grad():
        probs = multiscale_probabilities(predict, x, scales)
    assert probs.shape == (shape[0], 3, *shape[2:])
    assert seen == [scaled_size(shape[2:], s) for s in scales]
    if nd == 3 and isinstance(scales[0], tuple):
        assert seen[0] == (10, 10, 4)  # slice axis kept
    assert torch.allclose(probs.sum(1), torch.ones(()), atol=1e-5)


def test_mean_of_scale_invariant_predictor_equals_single_scale():
    logits = torch.tensor([1.0, -0.5, 2.0])

    def predict(t):  # spatially constant logits: invariant to resampling
        b = t.shape[0]
        return logits.view(1, 3, 1, 1).expand(b, 3, *t.shape[2:]).clone()

    x = torch.randn(2, 1, 16, 16)
    single = multiscale_probabilities(predict, x, [1.0])
    multi = multiscale_probabilities(predict, x, [0.5, 0.75, 1.0, 1.25])
    assert torch.allclose(multi, single, atol=1e-6)


def test_max_fusion_sums_to_one_and_dominates():
    net = _conv_predictor(1, 4, 2, seed=3)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        pmax = multiscale_probabilities(net, x, [0.5, 1.0, 2.0], fuse="max")
    assert torch.allclose(pmax.sum(1), torch.ones(()), atol=1e-5)
    assert (pmax >= 0).all()
    with pytest.raises(ValueError):
        multiscale_probabilities(net, x, [1.0], fuse="median")
    with pytest.raises(ValueError):
        multiscale_probabilities(net, x, [])


def test_runs_under_caller_grad_mode():
    net = _conv_predictor(1, 2, 2)
    x = torch.randn(1, 1, 8, 8)
    assert multiscale_probabilities(net, x, [0.5, 1.0]).requires_grad
    with torch.no_grad():
        assert not multiscale_probabilities(net, x, [0.5, 1.0]).requires_grad


def test_scaled_size_rounding():
    assert scaled_size((256, 256), 0.75) == (192, 192)
    assert scaled_size((10, 10), 1.25) == (13, 13)  # 12.5 rounds half up
    assert scaled_size((100, 60, 8), (1.25, 1.25, 1.0)) == (125, 75, 8)
    assert scaled_size((100, 60), 1.0, size_divisor=16) == (96, 64)
    assert scaled_size((20, 20), 0.1, size_divisor=8) == (8, 8)  # at least size_divisor
    assert scaled_size((321, 321), 0.75, size_divisor=8) == (240, 240)
    with pytest.raises(ValueError):
        scaled_size((8, 8), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        scaled_size((8, 8), 0.0)


def test_size_divisor_applies_to_predict_input():
    seen = []

    def predict(t):
        seen.append(tuple(t.shape[2:]))
        return torch.zeros(t.shape[0], 2, *t.shape[2:])

    x = torch.randn(1, 1, 30, 30)
    out = multiscale_probabilities(predict, x, [1.0, 0.75], size_divisor=8)
    assert seen == [(32, 32), (24, 24)]
    assert out.shape == (1, 2, 30, 30)


def test_pseudo_labels_threshold_is_inclusive():
    probs = torch.tensor([[0.95, 0.2, 0.5], [0.05, 0.8, 0.5]]).view(1, 2, 1, 3)
    labels, conf, valid = pseudo_labels(probs, 0.8)
    assert labels.dtype == torch.long and labels.shape == (1, 1, 3)
    assert labels.flatten().tolist() == [0, 1, 0]
    assert torch.allclose(conf.flatten(), torch.tensor([0.95, 0.8, 0.5]))
    assert valid.dtype == torch.bool
    assert valid.flatten().tolist() == [True, True, False]
    _, _, none_valid = pseudo_labels(probs, 0.96)
    assert not none_valid.any()
    p3 = F.softmax(torch.randn(2, 3, 4, 4, 2), 1)
    lab, c, v = pseudo_labels(p3, 0.0)
    assert lab.shape == (2, 4, 4, 2) and v.all()
