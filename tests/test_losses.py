import pytest
import torch
import torch.nn.functional as F

from maskmatch_med.method.losses import masked_soft_dice, pseudo_label_dice_loss, pseudo_label_loss, supervised_loss


def _data(shape=(2, 3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return logits, target


@pytest.mark.parametrize("kind", ["ce", "ce_dice"])
def test_ignored_pixels_do_not_change_loss(kind):
    logits, target = _data()
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[:, :3] = True
    target_ign = target.masked_fill(ignore, 255)
    base = supervised_loss(logits, target_ign, kind=kind)
    # change the logits only where labels are ignored: the loss must not move
    logits2 = torch.where(ignore.unsqueeze(1), torch.randn_like(logits) * 10, logits)
    assert torch.allclose(supervised_loss(logits2, target_ign, kind=kind), base, atol=1e-6)
    if kind == "ce":
        keep = ~ignore
        ref = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
        assert torch.allclose(base, ref, atol=1e-6)


def test_ce_dice_is_average_of_terms_and_dice_zero_for_perfect_prediction():
    _, target = _data()
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40.0
    assert supervised_loss(perfect, target, kind="ce_dice").item() < 1e-4
    logits, target = _data(seed=1)
    ce = supervised_loss(logits, target, kind="ce")
    both = supervised_loss(logits, target, kind="ce_dice")
    # Dice part in [0, 1] and positive for a random prediction
    dice = 2 * both - ce
    assert 0.05 < dice.item() <= 1.0


def test_all_ignored_is_finite():
    logits, target = _data()
    logits.requires_grad_(True)
    loss = supervised_loss(logits, torch.full_like(target, 255))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_supervised_3d_and_bad_kind():
    logits, target = _data(shape=(1, 4, 6, 6, 3))
    logits.requires_grad_(True)
    loss = supervised_loss(logits, target)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError):
        supervised_loss(logits, target, kind="focal")


def test_pseudo_label_loss_normalised_by_all_pixels():
    # uniform logits -> every pixel has CE = log(K)
    logits = torch.zeros(2, 4, 6, 6)
    labels = torch.randint(0, 4, (2, 6, 6))
    all_valid = torch.ones(2, 6, 6, dtype=torch.bool)
    half_valid = all_valid.clone()
    half_valid[:, :3] = False
    full = pseudo_label_loss(logits, labels, all_valid)
    half = pseudo_label_loss(logits, labels, half_valid)
    assert torch.allclose(full, torch.log(torch.tensor(4.0)))
    assert torch.allclose(half, full / 2)


def test_pseudo_label_loss_all_invalid_is_zero_with_gradient():
    logits = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4, 2))
    loss = pseudo_label_loss(logits, labels, torch.zeros(2, 4, 4, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_pseudo_label_loss_3d_matches_reference():
    logits = torch.randn(2, 3, 4, 4, 2)
    labels = torch.randint(0, 3, (2, 4, 4, 2))
    valid = torch.rand(2, 4, 4, 2) > 0.5
    ce = F.cross_entropy(logits, labels, reduction="none")
    ref = (ce * valid).sum() / valid.numel()
    assert torch.allclose(pseudo_label_loss(logits, labels, valid), ref, atol=1e-6)


def test_pseudo_label_dice_loss_ignores_invalid_pixels_and_is_zero_when_perfect():
    logits, labels = _data(seed=2)
    valid = torch.zeros_like(labels, dtype=torch.bool)
    valid[:, :, :5] = True
    base = pseudo_label_dice_loss(logits, labels, valid)
    assert 0.05 < base.item() <= 1.0
    moved = torch.where(valid.unsqueeze(1), logits, torch.randn_like(logits) * 10)
    assert torch.allclose(pseudo_label_dice_loss(moved, labels, valid), base, atol=1e-6)
    # Confidently right on the valid pixels, wrong everywhere else: no loss.
    perfect = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 40.0
    wrong_outside = torch.where(valid.unsqueeze(1), perfect, perfect.roll(1, dims=1))
    assert pseudo_label_dice_loss(wrong_outside, labels, valid).item() < 1e-4


def test_pseudo_label_dice_loss_weights_a_small_class_like_a_large_one():
    # 1 pixel of class 1 in 64, predicted as background: CE averages it away, Dice does not.
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3, 3] = 1
    logits = F.one_hot(torch.zeros_like(labels), 2).permute(0, 3, 1, 2).float() * 10.0
    valid = torch.ones_like(labels, dtype=torch.bool)
    assert pseudo_label_loss(logits, labels, valid).item() < 0.2
    assert pseudo_label_dice_loss(logits, labels, valid).item() > 0.45


def test_pseudo_label_dice_loss_all_invalid_is_finite_with_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = pseudo_label_dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.bool))
    assert torch.isfinite(loss) and loss.item() < 1e-4
    loss.backward()
    assert logits.grad is not None


def test_ce_dice_ignored_pixels_do_not_dilute_the_dice_term():
    _, target = _data(seed=3)
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40.0
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[:, :4] = True
    # wrong where ignored, right elsewhere: both terms ~0
    logits = torch.where(ignore.unsqueeze(1), perfect.roll(1, dims=1), perfect)
    assert supervised_loss(logits, target.masked_fill(ignore, 255), kind="ce_dice").item() < 1e-4


def test_pseudo_label_loss_float_weights_and_bool_agree():
    logits = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(1))
    valid = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(2)) > 0.5
    torch.testing.assert_close(pseudo_label_loss(logits, labels, valid), pseudo_label_loss(logits, labels, valid.float()))
    half = pseudo_label_loss(logits, labels, valid.float() * 0.5)
    torch.testing.assert_close(half, pseudo_label_loss(logits, labels, valid) / 2)


def test_class_balanced_pseudo_label_loss_gives_each_class_equal_weight():
    # 9 background pixels with CE a, 1 foreground pixel with CE b: balanced = total weight 10 split 5 / 5
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 1, 0, 9] = 2.0  # the foreground pixel
    labels = torch.zeros(1, 1, 10, dtype=torch.long)
    labels[0, 0, 9] = 1
    valid = torch.ones(1, 1, 10, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")[0, 0]
    a, b = ce[0].item(), ce[9].item()
    plain = pseudo_label_loss(logits, labels, valid)
    balanced = pseudo_label_loss(logits, labels, valid, balance="class")
    assert plain.item() == pytest.approx((9 * a + b) / 10)
    assert balanced.item() == pytest.approx((5 * a + 5 * b) / 10)
    # nothing valid: exactly zero either way
    assert pseudo_label_loss(logits, labels, torch.zeros_like(valid), balance="class").item() == 0.0
    with pytest.raises(ValueError, match="balance"):
        pseudo_label_loss(logits, labels, valid, balance="focal")


def test_pseudo_label_dice_ignores_classes_absent_from_the_targets():
    """An absent class must not be pushed to zero everywhere (the collapse of an unseen RV)."""
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2] = 2  # classes 0 and 2 present, class 1 absent
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    loss = pseudo_label_dice_loss(logits, labels, valid)
    loss.backward()
    probs = torch.softmax(logits.detach(), 1)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    dice = lambda c: (2 * (probs[:, c] * onehot[:, c]).sum()) / (probs[:, c].sum() + onehot[:, c].sum())
    assert loss.item() == pytest.approx(1 - (dice(0) + dice(2)).item() / 2, abs=1e-4)
    # all invalid: zero, with a gradient path
    zero = pseudo_label_dice_loss(logits, labels, torch.zeros_like(valid))
    assert zero.item() == 0.0 and zero.requires_grad


def test_ce_dice_unsupervised_loss_is_the_mean_of_cross_entropy_and_dice():
    from maskmatch_med.config import MethodConfig, WeakAugConfig
    from maskmatch_med.method.steps import build_step

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    valid = torch.rand(2, 8, 8) > 0.3
    step = lambda kind: build_step(MethodConfig(name="fixmatch", unsupervised_loss=kind), WeakAugConfig(), 1)
    ce, dice = step("ce").unsupervised(logits, labels, valid), step("dice").unsupervised(logits, labels, valid)
    assert not torch.allclose(ce, dice)
    assert torch.allclose(step("ce_dice").unsupervised(logits, labels, valid), (ce + dice) / 2)


@pytest.mark.parametrize("present_only", [False, True])
@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 4)])
def test_masked_soft_dice_equals_monai_dice_of_the_weighted_maps(present_only, spatial):
    # The reference: MONAI's DiceLoss on the weighted softmax and the weighted one-hot target.
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(7)
    k = 4
    logits = torch.randn(3, k, *spatial, generator=g, requires_grad=True)
    target = torch.randint(0, k - 1, (3, *spatial), generator=g)  # class 3 absent everywhere
    weight = torch.rand(3, *spatial, generator=g) * (torch.rand(3, *spatial, generator=g) > 0.3)
    target = target.masked_fill(weight == 0, 255)  # invalid pixels may hold any value
    ours = masked_soft_dice(logits, target, weight, present_only=present_only)

    reference_logits = logits.detach().clone().requires_grad_(True)
    w = weight.unsqueeze(1)
    probs = torch.softmax(reference_logits, dim=1) * w
    onehot = torch.nn.functional.one_hot(target.masked_fill(weight == 0, 0), k).movedim(-1, 1).float() * w
    per_class = DiceLoss(include_background=True, batch=True, reduction="none")(probs, onehot).flatten()
    reference = per_class[:3].mean() if present_only else per_class.mean()
    assert torch.allclose(ours, reference, atol=1e-6)
    ours.backward()
    reference.backward()
    assert torch.allclose(logits.grad, reference_logits.grad, atol=1e-6)
