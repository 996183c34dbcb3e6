"""Pseudo-label selection and its logs (method/pseudo_labels.py) and the schedules (method/schedules.py)."""

from __future__ import annotations

import math

import pytest
import torch

from maskmatch_med.method.pseudo_labels import (
    ClasswiseThreshold, class_thresholds, confident, pseudo_label_stats, quality_weights, vote_valid,
    foreground_islands, with_background_threshold,
)
from maskmatch_med.method.schedules import sigmoid_rampup, unsupervised_weight


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0
    with pytest.raises(ValueError):
        sigmoid_rampup(-1, 10)


def test_unsupervised_weight_waits_for_the_warmup_then_ramps():
    assert [unsupervised_weight(i, 3, 0) for i in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    ramp = [unsupervised_weight(i, 2, 4) for i in range(8)]
    assert ramp[:2] == [0.0, 0.0]
    assert ramp[2] == pytest.approx(math.exp(-5)) and ramp[6] == 1.0
    assert all(a < b for a, b in zip(ramp[2:6], ramp[3:7]))  # strictly increasing during the ramp


def test_class_thresholds_scale_with_relative_confidence():
    thresholds = class_thresholds(torch.tensor([0.99, 0.66, float("nan"), 0.495]), 0.9)
    assert thresholds.tolist() == pytest.approx([0.9, 0.6, 0.9, 0.45])
    assert class_thresholds(torch.full((3,), float("nan")), 0.8).tolist() == pytest.approx([0.8] * 3)


def test_classwise_threshold_tracks_each_class_confidence():
    tracker = ClasswiseThreshold(3, momentum=0.5)
    labels = torch.tensor([[0, 0, 1, 1]])
    tracker.update(labels, torch.tensor([[1.0, 0.8, 0.6, 0.4]]))
    # first sight: the batch mean; class 2 never seen keeps NaN (and the full threshold)
    assert tracker.ema[:2].tolist() == pytest.approx([0.9, 0.5]) and math.isnan(tracker.ema[2])
    assert tracker.thresholds(0.9).tolist() == pytest.approx([0.9, 0.5, 0.9])
    tracker.update(labels, torch.tensor([[0.9, 0.9, 0.7, 0.7]]))
    assert tracker.ema[:2].tolist() == pytest.approx([0.9, 0.6])
    # padding does not count
    tracker.update(torch.tensor([[1, 1]]), torch.tensor([[0.0, 0.6]]), include=torch.tensor([[False, True]]))
    assert tracker.ema[1].item() == pytest.approx(0.6)
    copy = ClasswiseThreshold(3, momentum=0.5)
    copy.load_state_dict(tracker.state_dict())
    assert torch.equal(copy.ema.nan_to_num(-1), tracker.ema.nan_to_num(-1))
    with pytest.raises(ValueError, match="classes"):
        ClasswiseThreshold(4).load_state_dict(tracker.state_dict())


def test_confident_uses_the_threshold_of_the_pixel_label():
    labels = torch.tensor([[0, 1, 1]])
    conf = torch.tensor([[0.9, 0.6, 0.4]])
    assert confident(labels, conf, torch.tensor([0.95, 0.5])).tolist() == [[False, True, False]]


def test_background_threshold_replaces_only_the_background_bar():
    bars = torch.tensor([0.95, 0.6, 0.8])
    assert with_background_threshold(bars, None) is bars
    assert with_background_threshold(bars, 0.99).tolist() == pytest.approx([0.99, 0.6, 0.8])
    assert bars.tolist() == pytest.approx([0.95, 0.6, 0.8])  # the input is left alone
    with pytest.raises(ValueError, match="background threshold"):
        with_background_threshold(bars, 1.5)


@pytest.mark.parametrize("threshold", ["fixed", "classwise"])
def test_step_background_threshold_drops_background_that_is_not_sure_enough(threshold):
    from maskmatch_med.config import MethodConfig, WeakAugConfig
    from maskmatch_med.method.steps import build_step

    # One image, 4 pixels: background at 0.999 and 0.97, foreground (class 1) at 0.97 and 0.999.
    p_background = torch.tensor([0.999, 0.97, 0.03, 0.001])
    logits = torch.stack([p_background, 1 - p_background]).log()[None, :, None, :]  # (1, 2, 1, 4)
    teacher = lambda images: logits.expand(images.shape[0], -1, -1, -1)
    images = torch.zeros(1, 1, 1, 4)

    def valid(background_threshold):
        method = MethodConfig(
            name="fixmatch", conf_thresh=0.95,
            pseudo_label={"threshold": threshold, "background_threshold": background_threshold},
        )
        step = build_step(method, WeakAugConfig(), 1, class_names=["background", "RV"])
        pl = step.pseudo_label(teacher, images)
        return pl.labels.tolist(), pl.confident.tolist(), step.class_threshold_values(2).tolist()

    labels, kept, bars = valid(None)
    assert labels == [[[0, 0, 1, 1]]] and kept == [[[True, True, True, True]]] and bars[0] == pytest.approx(0.95)
    labels, kept, bars = valid(0.99)
    # the 0.97-sure background pixel leaves the loss; foreground keeps its own bar
    assert labels == [[[0, 0, 1, 1]]] and kept == [[[True, False, True, True]]]
    assert bars[0] == pytest.approx(0.99) and bars[1] <= 0.95


def test_background_threshold_recipe_value_is_checked():
    from pydantic import ValidationError

    from maskmatch_med.config import MethodConfig

    assert MethodConfig().pseudo_label.background_threshold is None
    with pytest.raises(ValidationError, match="background_threshold"):
        MethodConfig(pseudo_label={"background_threshold": 1.2})


def test_foreground_islands_are_what_lies_outside_the_largest_foreground_region():
    labels = torch.zeros(3, 6, 6, dtype=torch.long)
    labels[0, 0:3, 0:3] = 1
    labels[0, 1, 1] = 2  # another class inside the same region: one region
    labels[0, 3, 3] = 3  # touches the region diagonally: full connectivity keeps it
    labels[0, 5, 0] = 1  # far off: an island
    labels[0, 0:2, 4:6] = 2  # a 4-pixel island of another class
    labels[1, 2:4, 2:4] = 2  # a single region
    islands = foreground_islands(labels)
    expected = torch.zeros(3, 6, 6, dtype=torch.bool)
    expected[0, 5, 0] = True
    expected[0, 0:2, 4:6] = True
    assert torch.equal(islands, expected)
    # padding does not join or make regions: excluded, the larger part is the region
    include = torch.ones(3, 6, 6, dtype=torch.bool)
    include[0, 0:3, 0:2] = False
    include[0, 0, 2] = False  # leaves 3 pixels of the first region, fewer than the 4-pixel block
    islands = foreground_islands(labels, include)
    assert not islands[0, 0:2, 4:6].any() and islands[0, 1:3, 2].all() and islands[0, 3, 3] and islands[0, 5, 0]
    assert not (islands[0] & ~include[0]).any() and islands[0].sum() == 4
    # 3D: the same rule over the volume
    volume = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    volume[0, 0:2, 0:2, 0:2] = 1
    volume[0, 3, 3, 3] = 2
    assert foreground_islands(volume).nonzero().tolist() == [[0, 3, 3, 3]]


@pytest.mark.parametrize("weighting", ["threshold", "quality"])
def test_step_ignores_foreground_islands_only_when_asked(weighting):
    from maskmatch_med.config import MethodConfig, WeakAugConfig
    from maskmatch_med.method.steps import build_step

    # A teacher sure of a 3x3 "heart" (class 2 around class 1) and of one far-off class-1 pixel.
    truth = torch.zeros(1, 8, 8, dtype=torch.long)
    truth[0, 1:4, 1:4] = 2
    truth[0, 2, 2] = 1
    truth[0, 7, 7] = 1
    logits = torch.nn.functional.one_hot(truth, 3).movedim(-1, 1).float() * 20  # (1, 3, 8, 8), confident everywhere
    teacher = lambda images: logits.expand(images.shape[0], -1, -1, -1)
    images = torch.zeros(1, 1, 8, 8)

    def pseudo_labels(islands):
        method = MethodConfig(name="fixmatch", pseudo_label={"foreground_islands": islands, "weighting": weighting})
        return build_step(method, WeakAugConfig(), 1).pseudo_label(teacher, images)

    kept = pseudo_labels("keep")
    assert kept.confident.all() and kept.weights[0, 7, 7] > 0
    dropped = pseudo_labels("ignore")
    assert torch.equal(dropped.labels, truth)  # labels stay, only their weight goes
    assert not dropped.confident[0, 7, 7] and dropped.weights[0, 7, 7] == 0
    assert dropped.confident.sum() == 63 and (dropped.weights > 0).sum() == 63


def test_foreground_islands_recipe_value_is_checked():
    from pydantic import ValidationError

    from maskmatch_med.config import MethodConfig

    assert MethodConfig().pseudo_label.foreground_islands == "keep"
    with pytest.raises(ValidationError, match="foreground_islands"):
        MethodConfig(pseudo_label={"foreground_islands": "drop"})


def two_scales():
    # 2 classes, 3 pixels; probabilities of class 1 per scale
    p1 = [torch.tensor([0.99, 0.97, 0.60]), torch.tensor([0.97, 0.60, 0.99])]
    return [torch.stack([1 - p, p])[None] for p in p1]  # (1, 2, 3) each


def test_vote_valid_counts_confident_scales():
    per_scale = two_scales()
    labels = torch.ones(1, 3, dtype=torch.long)
    bars = torch.tensor([0.95, 0.95])
    assert vote_valid(per_scale, labels, bars).tolist() == [[True, True, True]]  # majority of 2 = 1 vote
    assert vote_valid(per_scale, labels, bars, min_votes=2).tolist() == [[True, False, False]]
    # mean fusion then one threshold would keep only the first pixel
    mean = torch.stack(per_scale).mean(0)
    assert (mean.max(1).values >= 0.95).tolist() == [[True, False, False]]
    # one scale: the plain threshold
    assert vote_valid(per_scale[:1], labels, bars).tolist() == [[True, True, False]]
    with pytest.raises(ValueError):
        vote_valid(per_scale, labels, bars, min_votes=3)


def test_quality_weights_are_the_confident_share_per_image():
    valid = torch.tensor([[[True, False], [False, False]], [[True, True], [True, False]]])
    include = torch.tensor([[[True, True], [False, False]], [[True, True], [True, True]]])
    weights = quality_weights(valid, include)
    assert weights[0].tolist() == [[0.5, 0.5], [0.0, 0.0]]
    assert weights[1].tolist() == [[0.75, 0.75], [0.75, 0.75]]


def test_pseudo_label_stats_against_truth():
    labels = torch.tensor([[0, 1, 1, 2, 2, 0]])
    valid = torch.tensor([[True, True, True, True, False, True]])
    truth = torch.tensor([[0, 1, 0, 2, 2, 1]])
    stats = pseudo_label_stats(labels, valid, ["background", "RV", "LV"], truth)
    assert stats["pl_valid_frac"] == pytest.approx(5 / 6)
    assert [stats[f"pl_share_{c}"] for c in ("background", "RV", "LV")] == pytest.approx([0.4, 0.4, 0.2])
    assert stats["pl_precision_RV"] == pytest.approx(0.5) and stats["pl_recall_RV"] == pytest.approx(0.5)
    assert stats["pl_dice_RV"] == pytest.approx(0.5)
    assert stats["pl_precision_LV"] == 1.0 and stats["pl_recall_LV"] == 0.5 and stats["pl_dice_LV"] == pytest.approx(2 / 3)
    assert "pl_dice_background" not in stats
    # RV pixels: index 1 (labelled RV) and 5 (validly labelled background); LV: index 4 is not valid
    assert stats["pl_as_background_RV"] == pytest.approx(0.5) and stats["pl_as_background_LV"] == 0.0
    # unknown truth (255) and no class present give NaN, not a made-up number
    stats = pseudo_label_stats(labels, valid, ["background", "RV", "LV"], torch.full_like(truth, 255))
    assert math.isnan(stats["pl_recall_RV"]) and math.isnan(stats["pl_precision_RV"])
    assert "pl_dice_RV" not in pseudo_label_stats(labels, valid, ["background", "RV", "LV"])


def test_distribution_alignment_moves_the_teacher_towards_the_labeled_frequencies():
    from maskmatch_med.method.pseudo_labels import DistributionAlignment

    align = DistributionAlignment(2, momentum=0.5)
    probs = torch.tensor([[0.9, 0.8, 0.9, 0.6], [0.1, 0.2, 0.1, 0.4]])[None]  # (1, 2, 4): mean 0.8 / 0.2
    assert torch.equal(align.align(probs), probs)  # no target yet: unchanged
    align.update_target(torch.tensor([[0, 1, 1, 255]]))  # labeled: 1/3 background, 2/3 foreground
    out = align.align(probs, update=False)
    ratio = torch.tensor([1 / 3 / 0.8, 2 / 3 / 0.2])
    expected = probs * ratio.view(1, 2, 1)
    torch.testing.assert_close(out, expected / expected.sum(1, keepdim=True))
    assert bool((out.argmax(1) == 1).any()) and not bool((probs.argmax(1) == 1).any())  # foreground recovered
    # running means: the predicted mean takes in the next batch with the momentum
    align.align(torch.tensor([[0.6], [0.4]])[None])
    torch.testing.assert_close(align.predicted, torch.tensor([0.7, 0.3]))
    copy = DistributionAlignment(2)
    copy.load_state_dict(align.state_dict())
    torch.testing.assert_close(copy.align(probs, update=False), align.align(probs, update=False))
    with pytest.raises(ValueError, match="classes"):
        DistributionAlignment(3).load_state_dict(align.state_dict())


def test_min_votes_is_validated_against_the_scales():
    from pydantic import ValidationError

    from maskmatch_med.config import EnsembleConfig

    assert EnsembleConfig(scales=[0.75, 1.0, 1.25], min_votes=3).min_votes == 3
    with pytest.raises(ValidationError, match="min_votes 2 exceeds the 1 scale"):
        EnsembleConfig(scales=[1.0], min_votes=2)


def test_classwise_threshold_pools_ranks_through_reduce_sum():
    g = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 3, (2, 6, 6), generator=g) for _ in range(2)]
    conf = [torch.rand(2, 6, 6, generator=g) for _ in range(2)]
    # rank 1's statistics, queued for rank 0's reduce_sum to add
    queue = []
    rank1 = ClasswiseThreshold(3, reduce_sum=lambda t: queue.append(t.clone()) or t)
    rank0 = ClasswiseThreshold(3, reduce_sum=lambda t: t + queue.pop(0))
    single = ClasswiseThreshold(3)
    for _ in range(3):
        rank1.update(labels[1], conf[1])
        rank0.update(labels[0], conf[0])
        single.update(torch.cat(labels), torch.cat(conf))
    assert torch.allclose(rank0.ema, single.ema) and not torch.allclose(rank1.ema, single.ema)


def test_distribution_alignment_pools_ranks_through_reduce_sum():
    from maskmatch_med.method.pseudo_labels import DistributionAlignment

    g = torch.Generator().manual_seed(1)
    truth = [torch.randint(0, 3, (2, 6, 6), generator=g) for _ in range(2)]
    probs = [torch.softmax(torch.randn(2, 3, 6, 6, generator=g), 1) for _ in range(2)]
    queue = []
    rank1 = DistributionAlignment(3, reduce_sum=lambda t: queue.append(t.clone()) or t)
    rank0 = DistributionAlignment(3, reduce_sum=lambda t: t + queue.pop(0))
    single = DistributionAlignment(3)
    for _ in range(2):
        rank1.update_target(truth[1]), rank1.align(probs[1])
        rank0.update_target(truth[0]), rank0.align(probs[0])
        single.update_target(torch.cat(truth)), single.align(torch.cat(probs))
    assert torch.allclose(rank0.target, single.target) and torch.allclose(rank0.predicted, single.predicted)
    assert not torch.allclose(rank1.predicted, single.predicted)


def test_class_statistics_update_without_reading_values_back(monkeypatch):
    """No .cpu(), .item() or bool() of a tensor in the per-step updates: on a GPU each is a host sync."""
    from maskmatch_med.method.pseudo_labels import DistributionAlignment

    tracker, alignment = ClasswiseThreshold(3), DistributionAlignment(3)
    labels, conf = torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0.9, 0.5, 0.7, 0.6]])
    probs = torch.softmax(torch.randn(1, 3, 4), 1)

    def refuse(*args, **kwargs):
        raise AssertionError("host sync")

    for name in ("cpu", "item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(2):
        tracker.update(labels, conf, include=torch.tensor([[True, True, True, False]]))
        alignment.update_target(labels)
        alignment.align(probs)
        tracker.thresholds(0.9)
    monkeypatch.undo()
    assert tracker.ema.tolist() == pytest.approx([0.9, 0.6, float("nan")], nan_ok=True)
    assert class_thresholds(torch.tensor([float("nan"), float("nan")]), 0.9).tolist() == pytest.approx([0.9, 0.9])


def test_agree_labels_keeps_a_class_one_scale_is_sure_of_and_drops_contradictions():
    from maskmatch_med.method.pseudo_labels import agree_labels

    # 4 pixels, 2 classes, 3 scales, threshold 0.9. Pixel 0: all sure of 0. Pixel 1: scale A sure of 1,
    # B and C unsure (their mean says 0). Pixel 2: A sure of 1, B sure of 0. Pixel 3: nobody sure.
    a = torch.tensor([[[0.99, 0.08, 0.05, 0.6], [0.01, 0.92, 0.95, 0.4]]])
    b = torch.tensor([[[0.99, 0.89, 0.99, 0.6], [0.01, 0.11, 0.01, 0.4]]])
    c = torch.tensor([[[0.99, 0.89, 0.50, 0.6], [0.01, 0.11, 0.50, 0.4]]])
    fallback = torch.stack([a, b, c]).mean(0).argmax(1)
    assert fallback[0, 1].item() == 0  # the mean's label would teach background at pixel 1
    bars = torch.tensor([0.9, 0.9])
    labels, valid = agree_labels([a, b, c], fallback, bars)
    assert valid.tolist() == [[True, True, False, False]]
    assert labels.tolist() == [[0, 1, fallback[0, 2].item(), fallback[0, 3].item()]]
    # with min_votes 2, one sure scale is not enough
    assert agree_labels([a, b, c], fallback, bars, min_votes=2)[1].tolist() == [[True, False, False, False]]
    with pytest.raises(ValueError, match="min_votes"):
        agree_labels([a, b, c], fallback, bars, min_votes=4)


def test_background_votes_make_background_need_more_scales_than_foreground():
    from maskmatch_med.method.pseudo_labels import agree_labels

    # 2 pixels labelled background by the mean, 1 pixel labelled RV; 3 scales, threshold 0.9.
    # Pixel 0: all scales sure of background. Pixel 1: only one scale sure of background. Pixel 2: one scale sure of RV.
    a = torch.tensor([[[0.95, 0.95, 0.05], [0.05, 0.05, 0.95]]])
    b = torch.tensor([[[0.95, 0.60, 0.60], [0.05, 0.40, 0.40]]])
    c = torch.tensor([[[0.95, 0.60, 0.45], [0.05, 0.40, 0.55]]])
    labels = torch.tensor([[0, 0, 1]])
    bars = torch.tensor([0.9, 0.9])
    assert vote_valid([a, b, c], labels, bars, min_votes=1).tolist() == [[True, True, True]]
    assert vote_valid([a, b, c], labels, bars, min_votes=1, background_votes=3).tolist() == [[True, False, True]]
    fused, valid = agree_labels([a, b, c], labels, bars, min_votes=1, background_votes=3)
    assert valid.tolist() == [[True, False, True]] and fused.tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="background_votes"):
        vote_valid([a, b, c], labels, bars, background_votes=4)


def test_background_votes_recipe_values():
    from pydantic import ValidationError

    from maskmatch_med.config import EnsembleConfig

    assert EnsembleConfig(background_votes="all").background_votes_of(3) == 3
    assert EnsembleConfig().background_votes_of(3) is None  # "same": min_votes
    assert EnsembleConfig(background_votes=2).background_votes_of(3) == 2
    with pytest.raises(ValidationError, match="background_votes 4 must be in 1..3"):
        EnsembleConfig(background_votes=4)
