"""Metric functions on small synthetic arrays with hand-worked answers."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from maskmatch_med.evaluation.metrics import CLASS_METRICS, DISTANCE_METRICS, case_metrics, dice_per_class


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force directed surface distances a->b and b->a (border counts as background)."""
    sa = np.argwhere(a ^ binary_erosion(a)) * np.asarray(spacing, float)
    sb = np.argwhere(b ^ binary_erosion(b)) * np.asarray(spacing, float)
    d = cdist(sa, sb)
    return d.min(axis=1), d.min(axis=0)


def _cubes(shift_axis: int, shift: int, shape=(16, 16, 14), size=6):
    pred = np.zeros(shape, np.int64)
    gt = np.zeros(shape, np.int64)
    lo = [4, 4, 3]
    sl = tuple(slice(l, l + size) for l in lo)
    gt[sl] = 1
    lo[shift_axis] += shift
    pred[tuple(slice(l, l + size) for l in lo)] = 1
    return pred, gt


def test_overlapping_squares_dice_jaccard_by_hand():
    pred = np.zeros((10, 10), np.int64)
    gt = np.zeros((10, 10), np.int64)
    pred[2:6, 2:6] = 1  # 16 pixels
    gt[4:8, 4:8] = 1  # 16 pixels, overlap 2x2 = 4
    r = case_metrics(pred, gt, num_classes=2, spacing=(1.0, 1.0))
    assert set(r) == {1} and set(r[1]) == set(CLASS_METRICS)
    assert r[1]["dice"] == pytest.approx(2 * 4 / 32)
    assert r[1]["jaccard"] == pytest.approx(4 / 28)


def test_multiclass_overlap_per_class():
    gt = np.zeros((8, 8), np.int64)
    pred = np.zeros((8, 8), np.int64)
    gt[0:4, 0:4] = 1  # 16
    pred[0:4, 0:2] = 1  # 8, all inside -> dice 16/24
    gt[5:8, 5:8] = 2  # 9
    pred[5:8, 5:8] = 2  # identical
    r = case_metrics(pred, gt, num_classes=3, spacing=(1.0, 1.0))
    assert r[1]["dice"] == pytest.approx(2 * 8 / 24)
    assert r[1]["jaccard"] == pytest.approx(8 / 16)
    assert r[2]["dice"] == pytest.approx(1.0) and r[2]["hd95_vox"] == 0.0


def test_shifted_slabs_distances_equal_shift_anisotropic():
    # one-voxel-thick squares two slices apart: every voxel is on the surface and its nearest
    # counterpart is exactly the shift away, so HD95 = ASD = shift
    pred = np.zeros((12, 12, 10), np.int64)
    gt = np.zeros_like(pred)
    gt[3:9, 3:9, 3] = 1
    pred[3:9, 3:9, 5] = 1
    r = case_metrics(pred, gt, num_classes=2, spacing=(1.0, 1.0, 5.0))[1]
    assert r["dice"] == 0.0 and r["jaccard"] == 0.0
    assert r["hd95_mm"] == pytest.approx(10.0) and r["asd_mm"] == pytest.approx(10.0)
    assert r["hd95_vox"] == pytest.approx(2.0) and r["asd_vox"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("axis", "shift", "spacing", "expected_mm"),
    [(2, 2, (1.0, 1.0, 5.0), 10.0), (0, 3, (2.0, 1.0, 5.0), 6.0)],
)
def test_shifted_cubes_hd95_is_shift_and_asd_matches_brute_force(axis, shift, spacing, expected_mm):
    pred, gt = _cubes(axis, shift)
    r = case_metrics(pred, gt, num_classes=2, spacing=spacing)[1]
    assert r["hd95_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert r["hd95_vox"] == pytest.approx(float(shift), rel=1e-5)
    for sp, key in ((spacing, "asd_mm"), ((1, 1, 1), "asd_vox")):
        d1, d2 = _surface_distances(pred.astype(bool), gt.astype(bool), sp)
        assert r[key] == pytest.approx(np.concatenate([d1, d2]).mean(), rel=1e-5)
        assert 0 < r[key] < r["hd95_" + key.split("_")[1]]
    overlap = 6 * 6 * (6 - shift)
    assert r["dice"] == pytest.approx(2 * overlap / (2 * 216))


def test_identical_masks_dice_one_distances_zero():
    pred, gt = _cubes(2, 0)
    gt[10:12, 10:12, 10:12] = 2
    r = case_metrics(gt.copy(), gt, num_classes=3, spacing=(1.5, 1.5, 8.0))
    for c in (1, 2):
        assert r[c]["dice"] == pytest.approx(1.0) and r[c]["jaccard"] == pytest.approx(1.0)
        for m in DISTANCE_METRICS:
            assert r[c][m] == 0.0


def test_class_absent_from_both_is_all_nan():
    gt = np.zeros((6, 6, 4), np.int64)
    gt[1:3, 1:3, 1:3] = 1
    r = case_metrics(gt.copy(), gt, num_classes=3, spacing=(1, 1, 1))
    assert all(math.isnan(v) for v in r[2].values())
    assert r[1]["dice"] == pytest.approx(1.0)


def test_all_background_case_is_all_nan():
    z = np.zeros((5, 5), np.int64)
    r = case_metrics(z, z, num_classes=4, spacing=(1, 1))
    assert set(r) == {1, 2, 3}
    assert all(math.isnan(v) for cls in r.values() for v in cls.values())


@pytest.mark.parametrize("present_in", ["pred", "gt"])
def test_class_in_only_one_gives_zero_overlap_and_nan_distances(present_in):
    a = np.zeros((6, 6, 4), np.int64)
    b = np.zeros_like(a)
    a[1:4, 1:4, 1:3] = 1
    pred, gt = (a, b) if present_in == "pred" else (b, a)
    r = case_metrics(pred, gt, num_classes=2, spacing=(1, 1, 2))[1]
    assert r["dice"] == 0.0 and r["jaccard"] == 0.0
    assert all(math.isnan(r[m]) for m in DISTANCE_METRICS)


def test_distances_false_skips_distance_metrics():
    pred, gt = _cubes(2, 1)
    r = case_metrics(pred, gt, num_classes=2, spacing=(1, 1, 1), distances=False)[1]
    assert r["dice"] > 0
    assert all(math.isnan(r[m]) for m in DISTANCE_METRICS)


def test_mask_touching_border_has_surface_there():
    gt = np.zeros((8, 8), np.int64)
    gt[0:3, :] = 1  # touches three borders
    r = case_metrics(gt.copy(), gt, num_classes=2, spacing=(1, 1))[1]
    assert r["hd95_vox"] == 0.0 and r["dice"] == pytest.approx(1.0)


def test_input_validation():
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 5), int), 2, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int), 2, (1, 1, 1))
    with pytest.raises(ValueError, match="labels"):
        case_metrics(np.full((4, 4), 3), np.zeros((4, 4), int), 3, (1, 1))
    with pytest.raises(ValueError, match="2D or 3D"):
        case_metrics(np.zeros((4,), int), np.zeros((4,), int), 2, (1,))
    with pytest.raises(ValueError, match="non-integer"):
        case_metrics(np.full((4, 4), 0.5), np.zeros((4, 4), int), 2, (1, 1))
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)


def test_dice_per_class_matches_case_metrics_and_convention():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=(12, 12, 4))
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.3] = 0
    ref = case_metrics(pred, gt, num_classes=4, spacing=(1, 1, 1), distances=False)
    fast = dice_per_class(pred, gt, num_classes=4)
    assert fast.shape == (3,) and fast.dtype == np.float64
    np.testing.assert_allclose(fast[:2], [ref[1]["dice"], ref[2]["dice"]], rtol=1e-6)
    assert math.isnan(fast[2]) and math.isnan(ref[3]["dice"])  # class 3 absent from both
    fast_t = dice_per_class(torch.from_numpy(pred), torch.from_numpy(gt), num_classes=4)
    np.testing.assert_allclose(fast_t, fast, rtol=1e-6, equal_nan=True)
    # present in one only -> 0
    only = dice_per_class(np.ones((3, 3), int), np.zeros((3, 3), int), num_classes=2)
    assert only.tolist() == [0.0]
