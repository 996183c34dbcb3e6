"""Segmentation metrics for one case (2D or 3D), computed with MONAI on one-hot tensors.

Metrics, per foreground class ``c = 1 .. num_classes - 1``:

- ``dice``, ``jaccard``: overlap, in [0, 1] (MONAI ``compute_dice`` / ``compute_iou``).
- ``hd95_mm``, ``hd95_vox``: 95th-percentile symmetric Hausdorff distance between the surfaces of the
  prediction and the ground truth (MONAI ``compute_hausdorff_distance(percentile=95)``: the larger of the
  two directed 95th percentiles), in millimetres (voxel spacing applied) and in voxels (spacing 1).
- ``asd_mm``, ``asd_vox``: average symmetric surface distance (MONAI
  ``compute_average_surface_distance(symmetric=True)``: the mean over the surface voxels of both masks
  of the distance to the other mask's surface), in millimetres and in voxels.

Surfaces are the mask voxels removed by one binary erosion; the image border counts as background, so a
mask touching the border (or the first/last slice of a volume) has a surface there.

Empty-class convention (as nnU-Net):

- class absent from both the ground truth and the prediction: every metric is NaN (not applicable; the
  case is left out of that class's averages);
- class absent from exactly one of them: Dice = Jaccard = 0, and the distances are NaN (undefined).

NaN therefore always means "no value", never "bad value"; averages use ``nanmean`` and report how many
cases contributed.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)

__all__ = ["CLASS_METRICS", "DISTANCE_METRICS", "OVERLAP_METRICS", "case_metrics", "dice_per_class"]

CLASS_METRICS = ("dice", "jaccard", "hd95_mm", "asd_mm", "hd95_vox", "asd_vox")
OVERLAP_METRICS = ("dice", "jaccard")
DISTANCE_METRICS = ("hd95_mm", "asd_mm", "hd95_vox", "asd_vox")


@contextlib.contextmanager
def quiet_monai_internal_warnings() -> Iterator[None]:
    """Hide the deprecation warning MONAI 1.6 raises from its own surface-distance code (nothing a user can act on).

    ``warnings.catch_warnings`` swaps process-wide state and is not thread-safe, so it is only entered on
    the main thread; code that runs these metrics in worker threads wraps the whole pool in it instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        yield


def _as_label_array(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == bool:
        return x.astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{name}: expected an integer label map, got dtype {x.dtype}")
        rounded = np.rint(x)
        if not np.array_equal(rounded, x):  # also catches NaN
            raise ValueError(f"{name}: expected an integer label map, found non-integer values")
        x = rounded
    return x.astype(np.int64, copy=False)


def _check_labels(arr: np.ndarray, num_classes: int, name: str) -> None:
    if arr.size == 0:
        raise ValueError(f"{name}: empty array")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name}: labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), found {lo}..{hi}")


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin`` (clipped to the array), None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _one_hot(labels: np.ndarray, classes: Sequence[int]) -> torch.Tensor:
    """(1, len(classes), *spatial) float one-hot tensor of the given label values."""
    lab = torch.from_numpy(np.ascontiguousarray(labels))
    return torch.stack([lab == c for c in classes]).unsqueeze(0).double()


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    distances: bool = True,
) -> dict[int, dict[str, float]]:
    """Per foreground class c=1..num_classes-1, the metrics of ``CLASS_METRICS`` for one 2D or 3D case.

    Args:
        pred, gt: integer label maps of the same 2D or 3D shape (no batch or channel axis).
        num_classes: number of classes including background (label 0); labels must lie in 0..num_classes-1.
        spacing: voxel size per axis (mm), used for ``*_mm``; the ``*_vox`` metrics use spacing 1.
        distances: False skips the (slower) surface-distance metrics, which are then NaN.

    Returns:
        ``{c: {metric: value}}``; NaN follows the empty-class convention of the module docstring.

    Raises:
        ValueError: mismatched shapes, wrong dimensionality, bad spacing, or labels out of range.
    """
    pred_a = _as_label_array(pred, "pred")
    gt_a = _as_label_array(gt, "gt")
    if pred_a.shape != gt_a.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred_a.shape} and {gt_a.shape}")
    if pred_a.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {pred_a.shape}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    num_classes = int(num_classes)
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != pred_a.ndim:
        raise ValueError(f"spacing {spacing_t} has {len(spacing_t)} values for a {pred_a.ndim}D image")
    if not all(np.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing must be positive and finite, got {spacing_t}")
    _check_labels(pred_a, num_classes, "pred")
    _check_labels(gt_a, num_classes, "gt")

    nan = float("nan")
    result = {c: {m: nan for m in CLASS_METRICS} for c in range(1, num_classes)}

    # Everything happens inside the bounding box of all foreground (plus a one-voxel background margin),
    # which leaves every metric unchanged and makes the surface computations cheap.
    box = _bounding_box((pred_a > 0) | (gt_a > 0), margin=1)
    if box is None:
        return result
    pred_c, gt_c = pred_a[box], gt_a[box]

    fg = list(range(1, num_classes))
    p1h, g1h = _one_hot(pred_c, fg), _one_hot(gt_c, fg)
    in_pred = p1h.flatten(2).any(-1)[0].tolist()
    in_gt = g1h.flatten(2).any(-1)[0].tolist()

    # ignore_empty=False: empty gt gives 1 if the prediction is empty too, else 0; "both empty" is then
    # overwritten with NaN below.
    dice = compute_dice(p1h, g1h, include_background=True, ignore_empty=False)[0].tolist()
    iou = compute_iou(p1h, g1h, include_background=True, ignore_empty=False)[0].tolist()

    both = []
    for i, c in enumerate(fg):
        if not in_pred[i] and not in_gt[i]:
            continue  # all NaN
        result[c]["dice"] = float(dice[i])
        result[c]["jaccard"] = float(iou[i])
        if in_pred[i] and in_gt[i]:
            both.append(i)

    if distances and both:
        ndim = pred_c.ndim
        for i in both:
            c = fg[i]
            # crop again to this class, so that the one-hot tensors MONAI works on are as small as possible
            cbox = _bounding_box((pred_c == c) | (gt_c == c), margin=1)
            yp = torch.from_numpy(np.ascontiguousarray(pred_c[cbox] == c))[None, None].float()
            yt = torch.from_numpy(np.ascontiguousarray(gt_c[cbox] == c))[None, None].float()
            # batch of two identical samples: spacing in mm for the first, in voxels for the second
            yp, yt = yp.expand(2, -1, *yp.shape[2:]), yt.expand(2, -1, *yt.shape[2:])
            spacings = [list(spacing_t), [1.0] * ndim]
            with quiet_monai_internal_warnings():
                hd = compute_hausdorff_distance(
                    yp, yt, include_background=True, percentile=95, spacing=spacings
                )[:, 0].tolist()
                asd = compute_average_surface_distance(
                    yp, yt, include_background=True, symmetric=True, spacing=spacings
                )[:, 0].tolist()
            result[c]["hd95_mm"], result[c]["hd95_vox"] = float(hd[0]), float(hd[1])
            result[c]["asd_mm"], result[c]["asd_vox"] = float(asd[0]), float(asd[1])
    return result


def dice_per_class(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each foreground class between two label maps, shape ``(num_classes - 1,)``.

    The fast path for validation during training: no distances, no cropping, works on any device. The
    arrays may have any (equal) shape, including a batch axis; all their voxels are pooled as one case.
    Empty-class convention as in :func:`case_metrics`: NaN where a class is absent from both, 0 where it
    is absent from exactly one.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    p = pred if isinstance(pred, torch.Tensor) else torch.from_numpy(np.asarray(pred))
    g = gt if isinstance(gt, torch.Tensor) else torch.from_numpy(np.asarray(gt))
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    g = g.to(p.device)
    p = p.reshape(1, 1, -1).long()
    g = g.reshape(1, 1, -1).long()
    # Label maps with num_classes given: MONAI one-hot encodes them itself.
    d = compute_dice(p, g, include_background=False, ignore_empty=False, num_classes=num_classes)[0]
    counts = torch.bincount(p.flatten(), minlength=num_classes) + torch.bincount(g.flatten(), minlength=num_classes)
    present = counts[1:num_classes] > 0
    d = torch.where(present, d.float(), torch.full_like(d.float(), float("nan")))
    return d.detach().cpu().numpy().astype(np.float64)
