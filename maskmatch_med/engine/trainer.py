"""The training loop shared by every method: data draw -> method step -> optimizer -> EMA ->
logging -> validation -> checkpoints. Methods only supply the step (method/steps.py)."""

from __future__ import annotations

import functools
import gc
import math
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from maskmatch_med.config import Recipe
from maskmatch_med.data.sampling import EpochSampler
from maskmatch_med.data.splits import resolve_datalist_classes
from maskmatch_med.engine.checkpoint import load_checkpoint, load_state, save_checkpoint
from maskmatch_med.engine.distributed import all_ranks, barrier, gather_states, init_distributed, mean_over_ranks, shutdown, sum_over_ranks
from maskmatch_med.engine.run_log import RunLog, validation_summary
from maskmatch_med.engine.training_data import TrainingData, TrainingDataBuilder
from maskmatch_med.engine.writers import check_output_directory, write_text_atomic
from maskmatch_med.errors import TrainingInterrupted, UserError
from maskmatch_med.method.domain_norm import DomainStatistics
from maskmatch_med.method.ema import ema_update, make_teacher
from maskmatch_med.method.norm_recalibration import recalibrated_copy, spread_indices
from maskmatch_med.method.schedules import unsupervised_weight
from maskmatch_med.method.steps import Batch, build_step
from maskmatch_med.models import build_model, size_divisor
from maskmatch_med.timing import PhaseTimer

CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_score: float
    best_iteration: int
    seconds: float  # wall time of this call: the whole run, or the part since `first_iteration` when resumed
    score_key: str = "dice_mean"  # the validation metric that chose best_checkpoint
    is_main: bool = True  # False on the other ranks of a torchrun job
    first_iteration: int = 0  # the checkpoint's iteration a resumed run started from; 0 for a fresh run
    iterations: int = 0  # train.iterations, the run's budget


DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """The torch device for `name` (auto, cpu, cuda or cuda:N). A name torch does not know, or a CUDA
    device that is not there, is a one-line error naming `option`, the setting the user gave it
    through (train.device for `train`, --device for `predict`)."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_NAME.fullmatch(name):
        raise UserError(f"{option}: {name!r} is not a device; use cpu, cuda, cuda:N or auto")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{option}: {name} requested but no CUDA device is available (use cpu or auto)")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise UserError(f"{option}: {name} requested but this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1})")
    return torch.device(name)


def poly_lr(base_lr: float, iteration: int, total: int, power: float) -> float:
    return base_lr * (1.0 - iteration / total) ** power


def saved_iteration(last_path: Path) -> int | None:
    """The iteration --resume would continue from: read from the file (memory-mapped, so cheap), since
    Ctrl-C may land during a save and only the file says whether the new checkpoint made it."""
    try:
        return int(torch.load(last_path, map_location="cpu", weights_only=True, mmap=True)["iteration"])
    except Exception:  # no checkpoint yet (or not a readable one): nothing to resume from
        return None


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in `run_dir` (its recipe.yaml holds every --set override)."""
    return f"maskmatch-med train {shlex.quote(str(run_dir))} --resume"


def shared_teacher(student: torch.nn.Module):
    """FixMatch's teacher: the student itself, in inference mode, without gradients."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        student.eval()
        try:
            return student(images)
        finally:
            student.train()

    return predict


def all_class_names(recipe: Recipe) -> list[str]:
    """Every class's name, background first where the recipe leaves it implicit (the pseudo-label logs)."""
    names = list(recipe.data.class_names)
    return names if len(names) == recipe.data.num_classes else ["background", *names]


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = recipe.train
    params = model.parameters()
    if t.head_lr_mult != 1.0 and hasattr(model, "head_parameters"):
        # UniMatch's DeepLabV3+ recipe: the pretrained encoder at lr, the new head at lr x head_lr_mult.
        # Each group keeps its multiplier so that the poly schedule scales both (see _train_step).
        head = model.head_parameters()
        head_ids = {id(p) for p in head}
        params = [
            {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr_mult": 1.0},
            {"params": head, "lr": t.lr * t.head_lr_mult, "lr_mult": t.head_lr_mult},
        ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def iterations_per_epoch(data: TrainingData, train, world_size: int) -> int:
    """UniMatch's epoch: one pass over the unlabeled set (the labeled set is repeated alongside it),
    or over the labeled set when training supervised; the last incomplete batch is dropped."""
    if data.unlabeled is not None:
        return max(1, len(data.unlabeled) // (train.unlabeled_batch_size * world_size))
    return max(1, len(data.labeled) // (train.batch_size * world_size))


def warmup_note(recipe: Recipe, semi_supervised: bool) -> str | None:
    """A line when the supervised warm-up fills the whole budget (typically `--set train.iterations=N`
    on a recipe whose warm-up was sized for its own budget): the run would never train the method."""
    m, t = recipe.method, recipe.train
    if not semi_supervised or m.warmup_iterations < t.iterations:
        return None
    return (
        f"note: method.warmup_iterations={m.warmup_iterations} covers all train.iterations={t.iterations}, so this run "
        f"trains the supervised loss only; --set method.warmup_iterations=N (N < {t.iterations}) to train {m.name}"
    )


class Trainer:
    """One run: set-up (data, model, optimizer, optional resume), then `run()` iterates.

    `data` builds what the run trains and validates on: the recipe's scenario
    (scenarios.registry.scenario_for), or synthetic data in the benchmarks.

    Under torchrun every rank builds the same Trainer; the student is wrapped in DDP, each rank draws
    its own share of every epoch, and only rank 0 validates, logs and writes files.
    """

    def __init__(self, recipe: Recipe, data: TrainingDataBuilder, resume: bool = False, progress: bool = True):
        recipe, notes = resolve_datalist_classes(recipe)  # before anything sized by num_classes; recipe.yaml records the result
        self.recipe, t = recipe, recipe.train
        self.run_dir = Path(recipe.output_dir)
        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.last_path, self.best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
        if resume and not self.last_path.is_file():
            raise UserError(f"--resume: no checkpoint at {self.last_path}")
        if not resume and self.last_path.exists():
            raise UserError(f"output_dir: {self.run_dir} already holds a run; pass --resume to continue it or choose another --output")
        check_output_directory(self.run_dir, "output_dir (--output)")

        self.resumed, self.data_builder = resume, data
        device = resolve_device(t.device)
        self.dist = init_distributed(device.type)
        self.device = torch.device(f"cuda:{self.dist.local_rank}") if device.type == "cuda" and self.dist.enabled else device
        self.progress = progress and self.dist.is_main
        for note in notes if self.dist.is_main else []:
            print(f"note: {note}")
        torch.manual_seed(t.seed)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if self.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        divisor = size_divisor(recipe.model)
        if any(s % divisor for s in recipe.data.input_size):
            raise UserError(f"data.input_size: {tuple(recipe.data.input_size)} must be a multiple of {divisor} for model.strides")
        self.step = build_step(recipe.method, t.weak_aug, divisor, class_names=all_class_names(recipe))
        if self.dist.enabled:
            # Class-wise thresholds and alignment pool every rank's pseudo-labels, so the ranks agree.
            self.step.reduce_sum = functools.partial(sum_over_ranks, self.dist)
        self._attach_data(self._build_data(divisor))
        if t.epochs is not None:  # recorded in recipe.yaml, so a resumed run recomputes the same budget
            t.iterations = t.epochs * iterations_per_epoch(self.data, t, self.dist.world_size)

        model = build_model(
            recipe.model, spatial_dims=self.data.spatial_dims, in_channels=self.data.in_channels, num_classes=recipe.data.num_classes
        ).to(self.device)
        if t.channels_last and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled and t.sync_bn:
            if self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif self.dist.is_main:
                print("train.sync_bn: SyncBatchNorm needs CUDA; each CPU process keeps its own batch statistics")
        self.model = model  # the bare student: EMA, checkpoints and the shared teacher use it
        self.teacher = make_teacher(model) if self.step.semi_supervised and recipe.method.teacher == "ema" else None
        # Domain adaptation, `method.domain_norm: separate`: the source view's BatchNorm statistics apart.
        self.source_stats = self.teacher_source_stats = None
        if recipe.method.domain_norm == "separate":
            self.source_stats = DomainStatistics(model)
            self.teacher_source_stats = DomainStatistics(self.teacher) if self.teacher is not None else None
            self.step.source_statistics = self.source_stats.source
            if hasattr(self.validator, "source_statistics"):
                self.validator.source_statistics = self._source_statistics_of
        self.student = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None) if self.dist.enabled else model
        self.optimizer = build_optimizer(recipe, model)
        # Augmentation randomness differs per rank; data order comes from the stateless samplers.
        self.generator = torch.Generator().manual_seed(t.seed * 1000 + self.dist.rank)
        self.start, self.best_score, self.best_iteration = 0, -math.inf, 0
        if resume:
            self._resume()
        self.eval_model = self.teacher if (self.teacher is not None and t.eval_model != "student") else model
        self._calibrated: tuple[int, torch.nn.Module] | None = None  # (iteration, recalibrated eval_model)
        # A supervised baseline run with a semi-supervised recipe (--set method.name=supervised) loads no
        # unlabeled images to re-estimate on; it keeps the trained statistics, and says so.
        self.recalibrate_batches = recipe.method.recalibrate_norm if self.unlabeled is not None else 0
        if recipe.method.recalibrate_norm and not self.recalibrate_batches and self.dist.is_main:
            print(f"note: method.recalibrate_norm={recipe.method.recalibrate_norm} is not used: {recipe.method.name} loads no unlabeled images")
        if self.recalibrate_batches and self.dist.enabled and any(isinstance(x, torch.nn.SyncBatchNorm) for x in model.modules()):
            # Only rank 0 validates; a SyncBatchNorm forward in training mode would wait for the other ranks.
            raise UserError("method.recalibrate_norm: cannot be combined with train.sync_bn under torchrun; set one of them off")

    def _recalibration_batches(self):
        """Clean unlabeled batches (no augmentation; the target's in domain adaptation), spread over the whole
        set and the same at every validation; a generator of their own leaves the training's untouched."""
        t = self.recipe.train
        size = t.unlabeled_batch_size or t.batch_size
        index = spread_indices(len(self.unlabeled), self.recalibrate_batches * size)
        generator = torch.Generator().manual_seed(t.seed)
        for chunk in index.split(size):
            images, _ = self.unlabeled.batch(chunk, generator)
            yield images.to(self.device)

    def _inference_model(self, iteration: int) -> torch.nn.Module:
        """What validation scores and the checkpoint's "inference" weights hold: the eval model, or with
        method.recalibrate_norm its copy with BatchNorm statistics re-estimated on clean unlabeled images
        (once per iteration: validation and the checkpoints written after it share it)."""
        if not self.recalibrate_batches:
            return self.eval_model
        if self._calibrated is None or self._calibrated[0] != iteration:
            self._calibrated = (iteration, recalibrated_copy(self.eval_model, self._recalibration_batches))
        return self._calibrated[1]

    def _source_statistics_of(self, model: torch.nn.Module):
        """The context in which ``model`` (student or teacher) normalises with its source statistics."""
        stats = self.teacher_source_stats if model is self.teacher else self.source_stats
        return stats.source()

    @property
    def timer(self) -> PhaseTimer:
        """Phase timer of the training step ("data", "optimizer" here; "augment", "teacher", "student" in
        the method step), shared with the step. Disabled (free) unless replaced with an enabled one."""
        return self.step.timer

    @timer.setter
    def timer(self, timer: PhaseTimer) -> None:
        self.step.timer = timer

    def _build_data(self, divisor: int) -> TrainingData:
        """The data this run trains and validates on, from the builder it was handed."""
        return self.data_builder.training_data(self.recipe, self.step.semi_supervised, self.device, divisor)

    def _attach_data(self, data: TrainingData) -> None:
        t, rank, world = self.recipe.train, self.dist.rank, self.dist.world_size
        self.data = data
        self.labeled, self.unlabeled, self.validator = data.labeled, data.unlabeled, data.validator
        self.labeled_sampler = EpochSampler(len(self.labeled), t.batch_size, t.seed, rank, world)
        self.unlabeled_sampler = None
        if self.unlabeled is not None:
            self.unlabeled_sampler = EpochSampler(len(self.unlabeled), t.unlabeled_batch_size, t.seed + 1, rank, world)

    def _resume(self) -> None:
        path = self.last_path
        state = load_checkpoint(path, map_location=self.device)
        if state["num_classes"] != self.recipe.data.num_classes:
            raise UserError(f"{path}: trained for {state['num_classes']} classes, the recipe has data.num_classes={self.recipe.data.num_classes}")
        load_state(self.model, state["model"], path, "student")
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise UserError(f"{path}: has no EMA teacher but method.teacher is 'ema'")
            load_state(self.teacher, state["teacher"], path, "teacher")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as error:
            raise UserError(f"{path}: optimizer state does not fit ({error})") from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step.load_state_dict(state.get("step_state") or {})
        if self.source_stats is not None:
            stats = state.get("source_statistics") or {}
            try:
                self.source_stats.load_state_dict(stats.get("student"))
                if self.teacher_source_stats is not None:
                    self.teacher_source_stats.load_state_dict(stats.get("teacher"))
            except ValueError as error:
                raise UserError(f"{path}: {error}") from None
        generators = state["rng"]["generators"]
        if len(generators) == self.dist.world_size:
            self.generator.set_state(generators[self.dist.rank])
        torch.set_rng_state(state["rng"]["torch"])
        self.start, self.best_score, self.best_iteration = state["iteration"], state["best_score"], state["best_iteration"]
        if self.start >= self.recipe.train.iterations:
            raise UserError(f"--resume: the run already finished {self.start} of train.iterations={self.recipe.train.iterations}")

    def _checkpoint(self, paths: list[Path], iteration: int, generators: list[torch.Tensor]) -> None:
        payload = {
            "recipe": self.recipe.to_yaml(),
            "num_classes": self.recipe.data.num_classes,
            "spatial_dims": self.data.spatial_dims,
            "in_channels": self.data.in_channels,
            "model": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "inference": self._inference_model(iteration).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step_state": self.step.state_dict(),  # what the method step learns over time (class-wise thresholds)
            # method.domain_norm separate: the source view's BatchNorm statistics (the model's own are the target's)
            "source_statistics": {
                "student": self.source_stats.state_dict(),
                "teacher": self.teacher_source_stats.state_dict() if self.teacher_source_stats is not None else None,
            } if self.source_stats is not None else None,
            "iteration": iteration,
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "rng": {"generators": generators, "torch": torch.get_rng_state()},
        }
        for path in paths:
            save_checkpoint(path, payload)

    def _prune_snapshots(self) -> None:
        snapshots = sorted(self.last_path.parent.glob("iter_*.pt"))
        for old in snapshots[: max(0, len(snapshots) - self.recipe.train.keep_last)]:
            old.unlink(missing_ok=True)

    def _train_step(self, iteration: int) -> dict[str, float]:
        t = self.recipe.train
        lr = poly_lr(t.lr, iteration, t.iterations, t.poly_power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        m = self.recipe.method
        weight = unsupervised_weight(iteration, m.warmup_iterations, m.rampup_iterations) if self.step.semi_supervised else 0.0
        if self.teacher is not None and iteration == m.warmup_iterations > 0:
            # The warm-up is over: the EMA teacher restarts from the warmed-up student (BCP, SSL4MIS).
            self.teacher.load_state_dict(self.model.state_dict())
        timer = self.timer
        with timer.section("data"):
            images, labels = self.labeled.batch(self.labeled_sampler.indices(iteration), self.generator)
            unlabeled = unlabeled_ignore = truth = None
            if self.unlabeled is not None and weight > 0:
                index = self.unlabeled_sampler.indices(iteration)
                # A source may return a map that is 255 where the unlabeled image is padding (natural images).
                unlabeled, unlabeled_ignore = self.unlabeled.batch(index, self.generator)
                # Ground truth on disk for unlabeled images, if any: for the pl_* logs only.
                truth = self.unlabeled.truth(index) if hasattr(self.unlabeled, "truth") else None
        teacher = self.teacher if self.teacher is not None else shared_teacher(self.model)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            batch = Batch(images, labels, unlabeled, unlabeled_ignore, truth)
            # Only the iterations the run log keeps pay for the pseudo-label statistics.
            logged = (iteration + 1) % t.log_every == 0 or iteration + 1 == t.iterations
            output = self.step(self.student, teacher, batch, self.generator, weight=weight, log=logged)
        if not all_ranks(self.dist, bool(torch.isfinite(output.loss)), self.device):
            # Only the loss terms: a pl_* quality value is NaN whenever it is undefined for a batch.
            bad = [k for k, v in output.logs.items() if k.startswith("loss") and not math.isfinite(v)] or ["loss"]
            raise UserError(
                f"iteration {iteration + 1}: loss is not finite ({', '.join(bad)}); stopped without saving, "
                f"{self.last_path} is the last good checkpoint"
            )
        with timer.section("student"):  # the backward pass belongs to the student's phase
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(output.loss).backward()
        with timer.section("optimizer"):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.teacher is not None:
                # The teacher follows the student during the warm-up too (it is what validation scores),
                # and its EMA warm-up starts again with the restart.
                since = iteration - m.warmup_iterations if iteration >= m.warmup_iterations else iteration
                used = ema_update(self.teacher, self.model, m.ema_momentum, step=since)
                if self.teacher_source_stats is not None:
                    self.teacher_source_stats.follow(self.source_stats, used)
        return {**output.logs, "lr": lr}

    def run(self) -> TrainResult:
        started = time.perf_counter()
        recipe, t, main = self.recipe, self.recipe.train, self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(recipe.to_yaml(), self.run_dir / "recipe.yaml")
            for line in self._opening_lines():
                print(line)
        # A fresh run (start 0) starts its logs afresh; a resumed one drops what was logged after its checkpoint.
        log = RunLog(self.run_dir, keep_until=self.start) if main else None
        checkpoint_every = t.checkpoint_every or t.val_every
        bar = tqdm(total=t.iterations, initial=self.start, disable=not self.progress, dynamic_ncols=True, desc="train")
        self.model.train()
        done = self.start  # iterations completed, for the line an interruption prints
        try:
            for iteration in range(self.start, t.iterations):
                logs = self._train_step(iteration)
                done = iteration + 1
                bar.update(1)
                if done % t.log_every == 0 or done == t.iterations:
                    logs = mean_over_ranks(self.dist, logs, self.device)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k.startswith("loss") or k == "lr"})
                    if log:
                        log.log("train", done, logs)
                validate = done % t.val_every == 0 or done == t.iterations
                save = validate or done % checkpoint_every == 0
                generators = gather_states(self.dist, self.generator.get_state(), self.device) if save else []
                if validate and main:
                    self._validate(done, log, bar, generators)
                if save and main:
                    snapshot = [self.last_path.parent / f"iter_{done:07d}.pt"] if t.keep_last else []
                    self._checkpoint([self.last_path, *snapshot], done, generators)
                    self._prune_snapshots()
                if save:
                    barrier(self.dist)
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interruption_line(done)) from None
        finally:
            bar.close()
            if log:
                log.close()
            if self.dist.enabled:
                # DDP's reducer keeps the process group alive; left to interpreter exit, gloo's worker
                # threads are torn down mid-finalisation and a finished rank aborts ("terminate called
                # without an active exception"), failing the torchrun job. Release it first.
                self.student = self.model
                gc.collect()
            shutdown(self.dist)
        return TrainResult(
            self.run_dir, self.best_path, self.best_score, self.best_iteration, time.perf_counter() - started,
            self.validator.score_key if self.validator is not None else "", self.dist.is_main, self.start, t.iterations,
        )

    def _opening_lines(self) -> list[str]:
        """What the run is about to do: a resumed run says so first (which checkpoint, at which iteration
        of how many), then the data, device and run directory, then a warning the budget calls for."""
        recipe, t = self.recipe, self.recipe.train
        lines = [f"resuming {self.last_path} at iteration {self.start} of {t.iterations}"] if self.resumed else []
        lines.append(
            f"{recipe.method.name}: {len(self.labeled)} labeled / {len(self.unlabeled) if self.unlabeled is not None else 0} "
            f"unlabeled {self.data.unit}, {len(self.validator)} validation cases, device {self.device}"
            + (f", {self.dist.world_size} processes" if self.dist.enabled else "") + f", run dir {self.run_dir}"
        )
        note = warmup_note(recipe, self.step.semi_supervised)
        return lines + ([note] if note else [])

    def _interruption_line(self, done: int) -> str:
        """Ctrl-C after `done` iterations: what survives (the last checkpoint, or none yet) and the exact
        command that continues, so that nobody has to guess whether --resume will work."""
        t = self.recipe.train
        saved = saved_iteration(self.last_path)
        if saved is None:
            return (
                f"interrupted after {done} of {t.iterations} iterations, before the first checkpoint (one every "
                f"{t.checkpoint_every or t.val_every} iterations): nothing to resume; start again with "
                f"`maskmatch-med train {shlex.quote(str(self.run_dir))}`"
            )
        return (
            f"interrupted after {done} of {t.iterations} iterations; the last checkpoint is {self.last_path} "
            f"(iteration {saved}); continue with `{resume_command(self.run_dir)}`"
        )

    def _validate(self, done: int, log: RunLog, bar: tqdm, generators: list[torch.Tensor]) -> None:
        metrics, previews = self.validator(self._inference_model(done))
        score_key = self.validator.score_key
        if metrics[score_key] > self.best_score:
            self.best_score, self.best_iteration = metrics[score_key], done
            self._checkpoint([self.best_path], done, generators)
        log.log("val", done, {**metrics, f"best_{score_key}": self.best_score})
        for index, rgb in enumerate(previews):
            log.image(f"val/case{index}", rgb, done)
        bar.write(f"iteration {done}: validation {validation_summary(metrics)}; best {score_key} {self.best_score:.3f} @ {self.best_iteration}")


def train(recipe: Recipe, data: TrainingDataBuilder, resume: bool = False, progress: bool = True) -> TrainResult:
    return Trainer(recipe, data, resume=resume, progress=progress).run()
