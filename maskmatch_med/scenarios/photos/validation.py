"""Validation on natural images: mIoU and per-class IoU over the whole validation set, ignoring 255.

As in UniMatch, intersections and unions are summed over all images before dividing (dataset-level
IoU, not a mean of per-image IoUs). A class with an empty union over the whole set (absent from both
the ground truth and the predictions) has no IoU and is left out of the mean.
"""

from __future__ import annotations

import numpy as np
import torch

from maskmatch_med.config import Recipe
from maskmatch_med.data.natural import IGNORE_INDEX, Sample, palette_for, read_image, read_mask
from maskmatch_med.scenarios.photos.inference import predict_labels


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; target pixels equal to ignore_index skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class; NaN where the union is empty."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_metrics(confusion: np.ndarray, names: list[str]) -> dict[str, float]:
    """{"miou": mean over classes with a defined IoU, "iou_<name>": ...}; undefined IoUs are NaN."""
    iou = iou_per_class(confusion)
    metrics = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0}
    metrics.update({f"iou_{name.replace(' ', '_')}": float(value) for name, value in zip(names, iou)})
    return metrics


def class_names_of(recipe: Recipe) -> list[str]:
    """All class names, index 0 first: VOC has an implicit background, Cityscapes names all 19."""
    data = recipe.data
    return list(data.class_names) if len(data.class_names) == data.num_classes else ["background", *data.class_names]


class NaturalImageValidator:
    score_key = "miou"

    def __init__(self, samples: list[Sample], recipe: Recipe, device: torch.device):
        self.samples, self.recipe, self.device = samples, recipe, device
        data = recipe.data
        self.mode, self.window = data.eval_mode, data.eval_window or data.crop_size

    def __len__(self) -> int:
        return len(self.samples)

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        k = self.recipe.data.num_classes
        confusion = np.zeros((k, k), dtype=np.int64)
        previews = []
        was_training = model.training
        model.eval()
        try:
            for sample in self.samples:
                rgb, target = read_image(sample.image), read_mask(sample.mask, k)
                pred = predict_labels(model, rgb, self.device, self.mode, self.window)
                confusion += confusion_matrix(pred, target, k)
                if len(previews) < 3:
                    previews.append(self._preview(rgb, pred))
        finally:
            model.train(was_training)
        return miou_metrics(confusion, class_names_of(self.recipe)), previews

    def _preview(self, rgb: np.ndarray, pred: np.ndarray) -> np.ndarray:
        palette = np.asarray(palette_for(self.recipe.data.layout), dtype=np.float32).reshape(256, 3)
        return (0.5 * rgb + 0.5 * palette[pred]).astype(np.uint8)
