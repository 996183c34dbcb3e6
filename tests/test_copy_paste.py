"""Bidirectional copy-paste (BCP), the supervised warm-up, and the rule that ground truth of unlabeled
images only ever reaches the logs."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from maskmatch_med.config import MethodConfig, WeakAugConfig
from maskmatch_med.method.augment import copy_paste, copy_paste_box_mask
from maskmatch_med.method.steps import Batch, ConsistencyStep, build_step


@pytest.mark.parametrize("spatial", [(12, 9), (8, 10, 6)])
def test_copy_paste_box_has_bcp_size_inside_the_image(spatial):
    box = copy_paste_box_mask(5, spatial, 2 / 3, generator=torch.Generator().manual_seed(0))
    assert box.shape == (5, 1, *spatial) and box.dtype == torch.bool
    side = [round(2 / 3 * s) for s in spatial]
    for sample in box[:, 0]:
        extents = [int(sample.any(dim=tuple(d for d in range(len(spatial)) if d != k)).sum()) for k in range(len(spatial))]
        assert extents == side
        assert int(sample.sum()) == torch.tensor(side).prod().item()  # one solid box
    with pytest.raises(ValueError, match="fraction"):
        copy_paste_box_mask(1, spatial, 0.0)


def test_copy_paste_keeps_image_and_label_aligned():
    gen = torch.Generator().manual_seed(1)
    labeled = torch.full((2, 1, 8, 8), 1.0)
    unlabeled = torch.full((2, 1, 8, 8), -1.0)
    truth = torch.full((2, 8, 8), 3)
    pseudo = torch.full((2, 8, 8), 1)
    box = copy_paste_box_mask(2, (8, 8), 0.5, generator=gen)
    inward_image, inward_label = copy_paste(labeled, unlabeled, box), copy_paste(truth, pseudo, box)
    outward_image, outward_label = copy_paste(unlabeled, labeled, box), copy_paste(pseudo, truth, box)
    # every pixel's target comes from the image its intensity came from
    assert torch.equal(inward_image[:, 0] > 0, inward_label == 3)
    assert torch.equal(outward_image[:, 0] > 0, outward_label == 3)
    assert torch.equal(inward_image + outward_image, torch.zeros_like(inward_image))  # the two directions are complements
    with pytest.raises(ValueError):
        copy_paste(labeled, unlabeled[:1], box)


class Identity(torch.nn.Module):
    """A 'network' whose logits are the image repeated per class plus a learned bias (tiny, deterministic)."""

    def __init__(self, classes=3):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(-1, 1, classes))

    def forward(self, x):
        return x.repeat(1, self.bias.numel(), 1, 1) * torch.arange(1, self.bias.numel() + 1).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def batch(truth=False):
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 1, 16, 16, generator=g)
    labels = torch.randint(0, 3, (2, 16, 16), generator=g)
    unlabeled = torch.randn(2, 1, 16, 16, generator=g)
    gt = torch.randint(0, 3, (2, 16, 16), generator=g)
    return Batch(images, labels, unlabeled, None, gt if truth else None)


@pytest.mark.parametrize("config", [
    dict(name="maskmatch", conf_thresh=0.4, mix="bcp", pseudo_label={"threshold": "classwise"}, ensemble={"fuse": "vote"}),
    dict(name="maskmatch", base="unimatch", conf_thresh=0.4, mix="bcp", pseudo_label={"weighting": "quality", "balance": "class"}),
    dict(name="fixmatch", conf_thresh=0.4),
    dict(name="maskmatch", conf_thresh=0.4, ensemble={"fuse": "agree"}),
    dict(name="maskmatch", conf_thresh=0.4, ensemble={"fuse": "vote", "background_votes": "all"}),
])
def test_ground_truth_of_unlabeled_images_only_reaches_the_logs(config):
    method = MethodConfig(**config, mask={"patch_size": 4})
    outputs = []
    for truth in (False, True):
        step = build_step(method, WeakAugConfig(), 1, class_names=["background", "RV", "LV"])
        torch.manual_seed(0)
        net = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)
        out = step(net, net, batch(truth), torch.Generator().manual_seed(5))
        out.loss.backward()
        outputs.append((out, torch.cat([p.grad.flatten() for p in net.parameters()])))
    (plain, grad_plain), (audited, grad_audited) = outputs
    assert torch.equal(plain.loss, audited.loss) and torch.equal(grad_plain, grad_audited)
    assert {k: v for k, v in audited.logs.items() if not k.startswith("pl_") or k in plain.logs} == plain.logs
    assert "pl_dice_RV" in audited.logs and "pl_dice_RV" not in plain.logs
    assert "pl_share_background" in plain.logs


def test_zero_weight_is_the_supervised_step():
    method = MethodConfig(name="maskmatch", conf_thresh=0.4, mask={"patch_size": 4})
    net = Identity()
    warm = build_step(method, WeakAugConfig(), 1)(net, net, batch(), torch.Generator().manual_seed(5), weight=0.0)
    sup = build_step(MethodConfig(name="supervised"), WeakAugConfig(), 1)(net, None, batch(), torch.Generator().manual_seed(5))
    assert torch.equal(warm.loss, sup.loss) and warm.logs == sup.logs


def test_weight_scales_only_the_unsupervised_terms():
    method = MethodConfig(name="maskmatch", conf_thresh=0.4, mask={"patch_size": 4})
    net = Identity()
    run = lambda w: build_step(method, WeakAugConfig(), 1)(net, net, batch(), torch.Generator().manual_seed(5), weight=w)
    full, half = run(1.0), run(0.5)
    unsup = full.logs["loss_s"] + full.logs["loss_m"]
    assert full.logs["loss_x"] == half.logs["loss_x"]
    assert half.loss.item() == pytest.approx(full.logs["loss_x"] + 0.5 * unsup, rel=1e-5)


def test_bcp_targets_follow_the_pasted_content():
    """Inside the pasted box of the strong view the target is the labeled image's ground truth, with
    weight 1; in the labeled view the box's ground truth is ignored (255)."""
    method = MethodConfig(name="fixmatch", conf_thresh=1.0, mix="bcp", bcp_box=0.5, pseudo_label={"threshold": "fixed"})  # no pixel confident
    step = ConsistencyStep(method, WeakAugConfig(rotate_deg=0, scale_range=(1, 1), flip_prob=0), 1, masked=False, scales=[1.0])
    b = batch()
    net = Identity()
    labeled, labels, weak_u, pl, _ = step.weak_views(net, b, torch.Generator().manual_seed(0))
    strong, targets, weights = step.strong_view(weak_u, pl, torch.Generator().manual_seed(1), labeled, labels)
    pasted = weights > 0  # only ground truth carries weight here
    assert 0 < pasted.float().mean() < 1
    assert torch.equal(targets[pasted], labels[pasted])
    images, sup_labels, (out_targets, out_weights) = step.labeled_view(labeled, labels, weak_u, pl, torch.Generator().manual_seed(2))
    boxed = sup_labels == 255
    assert torch.equal(images[:, 0][boxed], weak_u[:, 0][boxed]) and torch.equal(images[:, 0][~boxed], labeled[:, 0][~boxed])
    assert torch.equal(out_weights[~boxed], torch.zeros_like(out_weights[~boxed]))


def test_bcp_inward_only_keeps_the_labeled_view_whole():
    method = MethodConfig(name="fixmatch", conf_thresh=0.5, mix="bcp", bcp_outward=False)
    step = ConsistencyStep(method, WeakAugConfig(), 1, masked=False, scales=[1.0])
    b, net = batch(), Identity()
    labeled, labels, weak_u, pl, _ = step.weak_views(net, b, torch.Generator().manual_seed(0))
    images, sup_labels, outward = step.labeled_view(labeled, labels, weak_u, pl, torch.Generator().manual_seed(2))
    assert images is labeled and sup_labels is labels and outward is None
    out = step(net, net, b, torch.Generator().manual_seed(0))
    assert "loss_bcp_out" not in out.logs


@pytest.mark.parametrize("name", ["fixmatch", "maskmatch"])
def test_a_step_not_logged_skips_the_pseudo_label_statistics_only(name):
    method = MethodConfig(name=name, conf_thresh=0.4, mask={"patch_size": 4})
    runs = []
    for log in (True, False):
        torch.manual_seed(0)
        net = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)
        step = build_step(method, WeakAugConfig(), 1, class_names=["background", "RV", "LV"])
        runs.append([step(net, net, batch(truth=True), torch.Generator().manual_seed(5), log=log) for _ in range(2)])
    for logged, quiet in zip(*runs):
        assert torch.equal(logged.loss, quiet.loss)
        assert "pl_dice_RV" in logged.logs and not any(k.startswith("pl_") for k in quiet.logs)
        assert {k: v for k, v in logged.logs.items() if not k.startswith("pl_")} == quiet.logs
