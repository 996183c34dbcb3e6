"""The training loop shared by every method: data draw -> method step -> optimizer -> EMA ->
logging -> validation -> checkpoints. Methods only supply the step (method/steps.py)."""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maskmatch_med.config import Recipe
from maskmatch_med.data.checks import LoadedCase, check_splits, require_clean
from maskmatch_med.data.slices import build_slice_set
from maskmatch_med.data.splits import resolve_splits
from maskmatch_med.engine.checkpoint import load_checkpoint, load_state, save_checkpoint
from maskmatch_med.engine.inference import predict_volume_labels
from maskmatch_med.engine.metrics import dice_per_class
from maskmatch_med.engine.run_log import RunLog
from maskmatch_med.engine.writers import overlay_rgb
from maskmatch_med.errors import UserError
from maskmatch_med.method.ema import ema_update, make_teacher
from maskmatch_med.method.steps import Batch, build_step
from maskmatch_med.models import build_model, size_divisor

CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_score: float
    best_iteration: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def poly_lr(base_lr: float, iteration: int, total: int, power: float) -> float:
    return base_lr * (1.0 - iteration / total) ** power


def write_text_atomic(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temp, path)


def shared_teacher(student: torch.nn.Module):
    """FixMatch's teacher: the student itself, in inference mode, without gradients."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        student.eval()
        try:
            return student(images)
        finally:
            student.train()

    return predict


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = recipe.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


class Validator:
    """3D Dice per class on the validation volumes, each predicted slice by slice on its own grid."""

    def __init__(self, cases: list[LoadedCase], recipe: Recipe, device: torch.device, divisor: int):
        self.cases, self.recipe, self.device, self.divisor = cases, recipe, device, divisor

    def __call__(self, model: torch.nn.Module) -> tuple[dict[str, float], list[np.ndarray]]:
        data = self.recipe.data
        per_case, previews = [], []
        for loaded in self.cases:
            pred = predict_volume_labels(
                model, loaded.image.array, loaded.image.spacing, tuple(data.input_size),
                scales=(1.0,), device=self.device, size_divisor=self.divisor,
            )
            per_case.append(dice_per_class(pred, loaded.label.array, data.num_classes))
            if len(previews) < 3:
                previews.append(self._preview(loaded, pred))
        with np.errstate(all="ignore"):
            per_class = np.nanmean(np.stack(per_case), axis=0)
        per_class = np.nan_to_num(per_class, nan=0.0)
        metrics = {f"dice_{name}": float(value) for name, value in zip(data.class_names, per_class)}
        metrics["dice_mean"] = float(per_class.mean())
        return metrics, previews

    @staticmethod
    def _preview(loaded: LoadedCase, pred: np.ndarray) -> np.ndarray:
        """Middle slice along the slice axis: image with the predicted labels over it."""
        from maskmatch_med.data.preprocess import slice_axis_of

        axis = slice_axis_of(loaded.image.spacing)
        middle = loaded.image.array.shape[axis] // 2
        return overlay_rgb(np.take(loaded.image.array, middle, axis=axis), np.take(pred, middle, axis=axis))


def train(recipe: Recipe, resume: bool = False, progress: bool = True) -> TrainResult:
    started = time.perf_counter()
    run_dir = Path(recipe.output_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if resume and not last_path.is_file():
        raise UserError(f"--resume: no checkpoint at {last_path}")
    if not resume and last_path.exists():
        raise UserError(f"output_dir: {run_dir} already holds a run; pass --resume to continue it or choose another --output")

    t = recipe.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    divisor = size_divisor(recipe.model)
    if any(s % divisor for s in recipe.data.input_size):
        raise UserError(f"data.input_size: {tuple(recipe.data.input_size)} must be a multiple of {divisor} for model.strides")
    step = build_step(recipe.method, t.weak_aug, divisor)

    splits = resolve_splits(recipe.data)
    # The same checks as check-data, test split included, so a broken test file shows up now and not
    # after hours of training; training itself never reads the test volumes.
    loaded, problems = check_splits(splits, recipe.data.num_classes, step.semi_supervised)
    require_clean(problems)
    del loaded["test"]
    input_size = tuple(recipe.data.input_size)
    labeled = build_slice_set(loaded["labeled"], input_size, with_labels=True).to(device)
    unlabeled = build_slice_set(loaded["unlabeled"], input_size, with_labels=False).to(device) if step.semi_supervised else None
    validator = Validator(loaded["validation"], recipe, device, divisor)

    model = build_model(recipe.model, spatial_dims=2, in_channels=1, num_classes=recipe.data.num_classes).to(device)
    teacher = make_teacher(model) if step.semi_supervised and recipe.method.teacher == "ema" else None
    optimizer = build_optimizer(recipe, model)
    generator = torch.Generator().manual_seed(t.seed)
    start, best_score, best_iteration = 0, -math.inf, 0

    if resume:
        state = load_checkpoint(last_path, map_location=device)
        load_state(model, state["model"], last_path, "student")
        if teacher is not None:
            if state.get("teacher") is None:
                raise UserError(f"{last_path}: has no EMA teacher but method.teacher is 'ema'")
            load_state(teacher, state["teacher"], last_path, "teacher")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise UserError(f"{last_path}: optimizer state does not fit ({error})") from None
        generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        start, best_score, best_iteration = state["iteration"], state["best_score"], state["best_iteration"]
        if start >= t.iterations:
            raise UserError(f"--resume: the run already finished {start} of train.iterations={t.iterations}")

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", recipe.to_yaml())
    eval_model = teacher if (teacher is not None and t.eval_model != "student") else model
    teacher_fn = teacher if teacher is not None else shared_teacher(model)
    log = RunLog(run_dir)
    print(
        f"{recipe.method.name}: {len(labeled)} labeled / {len(unlabeled) if unlabeled is not None else 0} unlabeled slices, "
        f"{len(validator.cases)} validation volumes, device {device}, run dir {run_dir}"
    )

    def checkpoint(path: Path, iteration: int) -> None:
        save_checkpoint(path, {
            "recipe": recipe.to_yaml(),
            "num_classes": recipe.data.num_classes,
            "spatial_dims": 2,
            "model": model.state_dict(),
            "teacher": teacher.state_dict() if teacher is not None else None,
            "inference": eval_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "best_score": best_score,
            "best_iteration": best_iteration,
            "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
        })

    model.train()
    checkpoint_every = t.checkpoint_every or t.val_every
    bar = tqdm(total=t.iterations, initial=start, disable=not progress, dynamic_ncols=True, desc="train")
    try:
        for iteration in range(start, t.iterations):
            lr = poly_lr(t.lr, iteration, t.iterations, t.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = labeled.sample(t.batch_size, generator)
            unlabeled_images = unlabeled.sample(t.unlabeled_batch_size, generator)[0] if unlabeled is not None else None
            output = step(model, teacher_fn, Batch(images, labels, unlabeled_images), generator)
            if not torch.isfinite(output.loss):
                bad = [k for k, v in output.logs.items() if not math.isfinite(v)]
                raise UserError(f"iteration {iteration + 1}: loss is not finite ({', '.join(bad)}); stopped, {last_path} is the last good checkpoint")
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            optimizer.step()
            if teacher is not None:
                ema_update(teacher, model, recipe.method.ema_momentum, step=iteration)

            done = iteration + 1
            bar.update(1)
            if done % t.log_every == 0 or done == t.iterations:
                values = {**output.logs, "lr": lr}
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k.startswith("loss") or k == "lr"})
                log.log("train", done, values)
            if done % t.val_every == 0 or done == t.iterations:
                metrics, previews = validator(eval_model)
                if metrics["dice_mean"] > best_score:
                    best_score, best_iteration = metrics["dice_mean"], done
                    checkpoint(best_path, done)
                log.log("val", done, {**metrics, "best_dice_mean": best_score})
                for index, rgb in enumerate(previews):
                    log.image(f"val/case{index}", rgb, done)
                bar.write(f"iteration {done}: validation Dice " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in metrics.items()) + f" (best {best_score:.3f} @ {best_iteration})")
            if done % checkpoint_every == 0 or done % t.val_every == 0 or done == t.iterations:
                checkpoint(last_path, done)
    finally:
        bar.close()
        log.close()
    return TrainResult(run_dir, best_path, best_score, best_iteration, time.perf_counter() - started)
