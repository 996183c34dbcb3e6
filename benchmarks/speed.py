"""Where a training step's time goes, per method, against the network floor; and inference speed.

Training: the real `Trainer._train_step` and method steps, with their phase timer enabled
(maskmatch_med/timing.py), on in-memory random slices of the recipe's shapes (no dataset is read:
the Trainer is handed synthetic TrainingData in place of the recipe's scenario). Phases:

    data       index draw + batch gather (the data wait)
    augment    weak and strong augmentation, CutMix, patch masking
    teacher    pseudo-labelling: resampling to each scale, teacher forwards, softmax, fusion, argmax
    student    student forward(s) over the concatenated views, losses, backward
    optimizer  optimizer step + EMA update of the teacher
    other      the rest of the step (learning rate, finiteness check, bookkeeping)

The network floor repeats the same network work on ready tensors of the same shapes and nothing
else: the teacher's no-grad forwards at each scale, the student's forward(s) over as many images as
the step's views, one cross-entropy, backward, and the optimizer step (no EMA). step/floor is the
overhead of everything the method adds around the network.

Inference: seconds per ACDC-sized volume (216 x 256 x 10, spacing 1.5 x 1.5 x 10 mm) through
`predict_files` (NIfTI read, preprocessing, prediction, NIfTI write) against a plain loop: MONAI's
SliceInferer with the same network on the same normalised volume, resized in-plane to the network's
input size and back.

Everything compared is measured side by side in one run, interleaved (the order rotates between
repeats), and reported as medians and medians of per-repeat ratios.

    .venv/bin/python benchmarks/speed.py                       # demo + acdc + inference, ~10 min on 2 cores
    .venv/bin/python benchmarks/speed.py --steps 2 --demo-steps 8 --inference-repeats 3
    .venv/bin/python benchmarks/speed.py --recipes demo --no-inference --output speed_demo   # the demo table alone
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from common import REPO, save

import monai
from maskmatch_med.config import load_recipe
from maskmatch_med.data.preprocess import normalise_intensity
from maskmatch_med.engine.trainer import Trainer, shared_teacher
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.method.ensemble import scaled_size
from maskmatch_med.method.steps import UniMatchStep
from maskmatch_med.models import build_model, size_divisor
from maskmatch_med.scenarios.slices.data import SliceSet
from maskmatch_med.scenarios.slices.inference import predict_files, predict_volume_labels
from maskmatch_med.timing import PhaseTimer

METHODS = ("supervised", "fixmatch", "unimatch", "maskmatch")
PHASES = ("data", "augment", "teacher", "student", "optimizer", "other")
RECIPES = {"demo": REPO / "recipes" / "demo.yaml", "acdc": REPO / "recipes" / "acdc.yaml"}
MASKMATCH_TARGET = 1.10  # step/floor for maskmatch on CPU
INFERENCE_TARGET = 1.20  # predict_files / plain SliceInferer loop, one scale

# ACDC-sized test volume for inference
VOLUME_SHAPE = (216, 256, 10)
VOLUME_SPACING = (1.5, 1.5, 10.0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------------------ training


class SyntheticSlices:
    """For the real Trainer (model, optimizer, EMA teacher, method step): random in-memory slices of the
    recipe's input size in place of a dataset. Validation is never run."""

    slices = (64, 128)  # labeled, unlabeled

    def training_data(self, recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        size, classes = tuple(recipe.data.input_size), recipe.data.num_classes
        generator = torch.Generator().manual_seed(recipe.train.seed)
        n_l, n_u = self.slices
        labeled = SliceSet(
            torch.randn(n_l, 1, *size, generator=generator),
            torch.randint(0, classes, (n_l, *size), generator=generator).to(torch.uint8),
        ).to(device)
        unlabeled = None
        if semi_supervised:
            unlabeled = SliceSet(torch.randn(n_u, 1, *size, generator=generator), None).to(device)
        return TrainingData(labeled, unlabeled, validator=None, spatial_dims=2, in_channels=1, unit="slices")


class NetworkFloor:
    """The step's network work on ready tensors: teacher forwards at each scale (no grad), student
    forward(s) over as many images as the step's views, cross-entropy, backward, optimizer step."""

    def __init__(self, trainer: Trainer):
        step, t, data = trainer.step, trainer.recipe.train, trainer.recipe.data
        device = trainer.device
        size, classes = tuple(data.input_size), data.num_classes
        generator = torch.Generator().manual_seed(1)

        def images(n: int, spatial=size) -> torch.Tensor:
            return torch.randn(n, 1, *spatial, generator=generator).to(device)

        def targets(n: int) -> torch.Tensor:
            return torch.randint(0, classes, (n, *size), generator=generator).to(device)

        b_l, b_u = t.batch_size, t.unlabeled_batch_size
        n_student, self.teacher_inputs = b_l, []
        if step.semi_supervised:
            self.teacher_inputs = [images(b_u, scaled_size(size, s, step.size_divisor)) for s in step.scales]
            # UniMatch: two strong views and the feature-perturbed weak view, all in the one student pass
            unsupervised_views = 3 if isinstance(step, UniMatchStep) else 1
            n_student += b_u * (unsupervised_views + (1 if step.masked else 0))
        self.views = (images(n_student), targets(n_student))
        self.student_images = n_student
        self.teacher = trainer.teacher if trainer.teacher is not None else shared_teacher(trainer.model)
        self.student, self.optimizer, self.device = trainer.student, trainer.optimizer, device
        self.timer = PhaseTimer(enabled=True, device=device)

    def __call__(self) -> tuple[float, dict[str, float]]:
        timer = self.timer
        timer.reset()
        sync(self.device)
        started = time.perf_counter()
        with timer.section("teacher"), torch.no_grad():
            for x in self.teacher_inputs:
                self.teacher(x)
        with timer.section("student"):
            x, y = self.views
            loss = F.cross_entropy(self.student(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with timer.section("optimizer"):
            self.optimizer.step()
        sync(self.device)
        total = time.perf_counter() - started
        return total, {name: timer.totals.get(name, 0.0) for name in ("teacher", "student", "optimizer")}


def timed_step(trainer: Trainer, iteration: int) -> tuple[float, dict[str, float]]:
    timer = trainer.timer
    timer.reset()
    sync(trainer.device)
    started = time.perf_counter()
    trainer._train_step(iteration)
    sync(trainer.device)
    total = time.perf_counter() - started
    phases = {name: timer.totals.get(name, 0.0) for name in PHASES[:-1]}
    phases["other"] = total - sum(phases.values())
    return total, phases


def bench_training(name: str, steps: int, warmup: int, methods: list[str], device: str, work: Path) -> dict:
    path = RECIPES[name]
    trainers, floors = {}, {}
    for method in methods:
        # No warm-up: the steps measured are the method's own, not the supervised warm-up's.
        recipe = load_recipe(path, [f"method.name={method}", f"train.device={device}", f"output_dir={work / name / method}",
                                    "method.warmup_iterations=0", "method.rampup_iterations=0"])
        trainer = Trainer(recipe, SyntheticSlices(), progress=False)
        trainer.timer = PhaseTimer(enabled=True, device=trainer.device)
        trainer.model.train()
        trainers[method], floors[method] = trainer, NetworkFloor(trainer)
    first = trainers[methods[0]].recipe
    shapes = {
        "input_size": list(first.data.input_size), "batch_size": first.train.batch_size,
        "unlabeled_batch_size": first.train.unlabeled_batch_size, "scales": first.method.ensemble.scales,
        "device": str(trainers[methods[0]].device),
        "student_images": {m: floors[m].student_images for m in methods},
    }
    iteration = dict.fromkeys(methods, 0)
    records: dict[str, list] = {m: [] for m in methods}
    for rep in range(-warmup, steps):
        shift = rep % len(methods)
        for method in methods[shift:] + methods[:shift]:  # rotate the order between repeats
            trainer, floor = trainers[method], floors[method]
            if rep % 2 == 0:
                step_s, phases = timed_step(trainer, iteration[method])
                floor_s, floor_phases = floor()
            else:
                floor_s, floor_phases = floor()
                step_s, phases = timed_step(trainer, iteration[method])
            iteration[method] += 1
            if rep >= 0:
                records[method].append({"step_s": step_s, "phases": phases, "floor_s": floor_s, "floor_phases": floor_phases})
            log(f"{name} {'warm-up' if rep < 0 else f'repeat {rep + 1}/{steps}'} {method}: step {step_s:.3f}s, floor {floor_s:.3f}s")
    return {"recipe": name, "shapes": shapes, "summary": summarise(records, methods), "records": records}


def summarise(records: dict[str, list], methods: list[str]) -> dict:
    out = {}
    for method in methods:
        rows = records[method]
        s = {
            "step_s": median(r["step_s"] for r in rows),
            "floor_s": median(r["floor_s"] for r in rows),
            "phases": {p: median(r["phases"][p] for r in rows) for p in PHASES},
            "floor_phases": {p: median(r["floor_phases"][p] for r in rows) for p in ("teacher", "student", "optimizer")},
            "step_over_floor": median(r["step_s"] / r["floor_s"] for r in rows),
        }
        # Seconds each phase adds over the floor's share of the same work (data, augment and other
        # have no network work, so all of them is overhead).
        excess = {}
        for p in PHASES:
            excess[p] = median(r["phases"][p] - r["floor_phases"].get(p, 0.0) for r in rows)
        s["excess_s"] = excess
        for ref in ("supervised", "fixmatch"):
            if ref in records and ref != method:
                s[f"vs_{ref}"] = median(a["step_s"] / b["step_s"] for a, b in zip(rows, records[ref]))
        out[method] = s
    return out


def training_tables(result: dict) -> str:
    name, shapes, summary = result["recipe"], result["shapes"], result["summary"]
    methods = list(summary)
    lines = [
        f"### Training step, `recipes/{name}.yaml`: batch {shapes['batch_size']} + {shapes['unlabeled_batch_size']} at "
        f"{shapes['input_size'][0]}x{shapes['input_size'][1]}, ensemble scales {shapes['scales']}, device {shapes['device']}, "
        f"{len(result['records'][methods[0]])} repeats",
        "",
        "Median seconds per step and per phase (share of the step in brackets; phase medians need not add up to the step's).",
        "",
        "| method | step (s) | data | augment | teacher | student | optimizer | other | floor (s) | step/floor | x supervised | x fixmatch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, s in summary.items():
        phases = " | ".join(f"{s['phases'][p]:.3f} ({100 * s['phases'][p] / s['step_s']:.0f}%)" for p in PHASES)
        ratios = " | ".join(f"{s[k]:.2f}" if k in s else "-" for k in ("vs_supervised", "vs_fixmatch"))
        lines.append(f"| {method} | {s['step_s']:.3f} | {phases} | {s['floor_s']:.3f} | {s['step_over_floor']:.2f} | {ratios} |")
    lines += [
        "",
        "Overhead over the network floor, by phase: median seconds the phase adds beyond the floor's share of the "
        "same work, as % of the floor (teacher: resampling, softmax, fusion; student: losses, view concatenation, "
        "logging; optimizer: EMA). Floor split as teacher / student / optimizer seconds.",
        "",
        "| method | floor split (s) | data | augment | teacher | student | optimizer | other |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, s in summary.items():
        split = " / ".join(f"{s['floor_phases'][p]:.3f}" for p in ("teacher", "student", "optimizer"))
        cells = " | ".join(f"{100 * s['excess_s'][p] / s['floor_s']:+.1f}%" for p in PHASES)
        lines.append(f"| {method} | {split} | {cells} |")
    if "maskmatch" in summary:
        s = summary["maskmatch"]
        verdict = "within" if s["step_over_floor"] <= MASKMATCH_TARGET else "above"
        worst = max(PHASES, key=lambda p: s["excess_s"][p])
        lines += ["", f"maskmatch step/floor {s['step_over_floor']:.2f}: {verdict} the {MASKMATCH_TARGET:.2f} target; "
                  f"largest overhead: {worst} (+{100 * s['excess_s'][worst] / s['floor_s']:.1f}% of the floor)."]
        if "unimatch" in summary:
            u = summary["unimatch"]
            lines.append(f"Cost ratios: maskmatch / fixmatch {s.get('vs_fixmatch', float('nan')):.2f}, maskmatch / supervised "
                         f"{s.get('vs_supervised', float('nan')):.2f}, unimatch / fixmatch {u.get('vs_fixmatch', float('nan')):.2f} "
                         f"(medians of per-repeat ratios).")
    return "\n".join(lines)


def disabled_timer_cost(calls: int = 200_000) -> float:
    """Seconds per `with timer.section(...)` block of a disabled timer (the default training path)."""
    timer = PhaseTimer()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            with timer.section("x"):
                pass
        empty_started = time.perf_counter()
        for _ in range(calls):
            pass
        best = min(best, (empty_started - started - (time.perf_counter() - empty_started)) / calls)
    return max(best, 0.0)


# ----------------------------------------------------------------------------------------- inference


def phantom_volume(seed: int = 0) -> np.ndarray:
    """An MRI-like 216 x 256 x 10 volume: nested ellipses of different intensity, plus noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, VOLUME_SHAPE[0]), np.linspace(-1, 1, VOLUME_SHAPE[1]), indexing="ij")
    volume = np.empty(VOLUME_SHAPE, np.float32)
    for z in range(VOLUME_SHAPE[2]):
        r = 0.25 + 0.02 * z
        plane = 200.0 * ((x / 0.8) ** 2 + (y / 0.7) ** 2 < 1)
        plane += 300.0 * ((x - 0.1) ** 2 + y ** 2 < r ** 2)
        plane += 250.0 * ((x + 0.2) ** 2 + (y - 0.1) ** 2 < (r * 0.7) ** 2)
        volume[..., z] = plane + rng.normal(0, 20, plane.shape)
    return volume


def bench_inference(repeats: int, device: str, work: Path) -> dict:
    from monai.inferers import SliceInferer

    recipe = load_recipe(RECIPES["acdc"])
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    classes, input_size = recipe.data.num_classes, tuple(recipe.data.input_size)
    divisor = size_divisor(recipe.model)
    torch.manual_seed(0)
    model = build_model(recipe.model, spatial_dims=2, in_channels=1, num_classes=classes).to(dev).eval()

    volume = phantom_volume()
    source = work / "in" / "case001.nii.gz"
    source.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(volume, np.diag([*VOLUME_SPACING, 1.0])), str(source))
    out_dir = work / "out"

    # The plain loop gets the volume already normalised (the same preprocessing predict_files applies).
    prepared = torch.from_numpy(normalise_intensity(volume))[None, None].to(dev)  # (1, 1, X, Y, Z)
    depth = VOLUME_SHAPE[2]
    inferer = SliceInferer(spatial_dim=2, roi_size=input_size, sw_batch_size=16, progress=False)

    def plain() -> np.ndarray:
        with torch.no_grad():
            x = F.interpolate(prepared, size=(*input_size, depth), mode="trilinear", align_corners=False)
            probs = torch.softmax(inferer(x, model), dim=1)
            probs = F.interpolate(probs, size=VOLUME_SHAPE, mode="trilinear", align_corners=False)
            return probs.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)

    def files(scales) -> None:
        predict_files(model, [source], out_dir, input_size, scales, classes, None, device=dev, progress=False,
                      size_divisor=divisor)

    def in_memory() -> np.ndarray:
        return predict_volume_labels(model, volume, VOLUME_SPACING, input_size, (1.0,), device=dev, size_divisor=divisor)

    cases = {
        "plain_sliceinferer": plain,
        "predict_volume_1scale": in_memory,
        "predict_files_1scale": lambda: files((1.0,)),
        "predict_files_3scales": lambda: files((0.75, 1.0, 1.25)),
    }
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(-1, repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            sync(dev)
            started = time.perf_counter()
            cases[name]()
            sync(dev)
            if rep >= 0:
                times[name].append(time.perf_counter() - started)
        log(f"inference {'warm-up' if rep < 0 else f'repeat {rep + 1}/{repeats}'} done")

    # Same network, same resampling: the two pipelines should give (nearly) the same labels.
    files((1.0,))
    ours = np.asanyarray(nib.load(str(out_dir / source.name)).dataobj)
    agreement = float((ours == plain()).mean())
    base = times["plain_sliceinferer"]
    return {
        "volume_shape": list(VOLUME_SHAPE), "spacing": list(VOLUME_SPACING), "input_size": list(input_size),
        "device": str(dev), "repeats": repeats,
        "median_s": {n: median(times[n]) for n in names},
        "ratio_to_plain": {n: median(t / b for t, b in zip(times[n], base)) for n in names},
        "label_agreement": agreement,
        "times": times,
    }


def inference_table(result: dict) -> str:
    shape = "x".join(str(n) for n in result["volume_shape"])
    labels = {
        "plain_sliceinferer": "plain loop: resize, MONAI SliceInferer, softmax, resize back, argmax (volume preprocessed, no file IO)",
        "predict_volume_1scale": "predict_volume_labels, 1 scale (preprocessing included, no file IO)",
        "predict_files_1scale": "predict_files, 1 scale (NIfTI read + write included)",
        "predict_files_3scales": "predict_files, 3 scales (0.75, 1.0, 1.25)",
    }
    lines = [
        f"### Inference, one ACDC-sized volume ({shape}, spacing {tuple(result['spacing'])} mm, network input "
        f"{result['input_size'][0]}x{result['input_size'][1]}, acdc UNet), device {result['device']}, {result['repeats']} repeats",
        "",
        "| pipeline | s / volume | x plain loop |",
        "| --- | ---: | ---: |",
    ]
    for name, label in labels.items():
        lines.append(f"| {label} | {result['median_s'][name]:.3f} | {result['ratio_to_plain'][name]:.2f} |")
    ratio = result["ratio_to_plain"]["predict_files_1scale"]
    lines += ["", f"predict_files / plain loop at one scale: {ratio:.2f} ({'within' if ratio <= INFERENCE_TARGET else 'above'} the "
              f"{INFERENCE_TARGET:.2f} target); the two pipelines' labels agree on {100 * result['label_agreement']:.2f}% of voxels."]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per method for recipes/acdc.yaml (after warm-up)")
    parser.add_argument("--demo-steps", type=int, default=10, help="measured steps per method for recipes/demo.yaml")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps per method first (acdc)")
    parser.add_argument("--demo-warmup", type=int, default=2, help="unmeasured steps per method first (demo)")
    parser.add_argument("--inference-repeats", type=int, default=5)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), help="none: inference only")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument(
        "--output", default="speed",
        help="table name in benchmarks/results/ (a partial run, e.g. --recipes demo --no-inference, saved apart from the full speed.md)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    data: dict = {"versions": {"monai": monai.__version__, "numpy": np.__version__}, "args": vars(args), "training": {}}
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.recipes:
            steps, warmup = (args.steps, args.warmup) if name == "acdc" else (args.demo_steps, args.demo_warmup)
            result = bench_training(name, steps, warmup, list(args.methods), args.device, work)
            data["training"][name] = result
            sections.append(training_tables(result))
        if not args.no_inference:
            data["inference"] = bench_inference(args.inference_repeats, args.device, work / "inference")
            sections.append(inference_table(data["inference"]))

    cost = disabled_timer_cost()
    per_step = 7  # sections a consistency step passes through (5 for supervised)
    fastest = min((s["step_s"] for r in data["training"].values() for s in r["summary"].values()), default=None)
    data["disabled_timer_s_per_section"] = cost
    note = f"Disabled phase timer (the default training path): {cost * 1e9:.0f} ns per section, {per_step} sections per step"
    if fastest:
        note += f" = {100 * per_step * cost / fastest:.4f}% of the fastest step measured ({fastest:.3f} s)"
    sections.append(note + ".")
    data["wall_s"] = time.perf_counter() - started
    sections.append(f"monai {monai.__version__}, numpy {np.__version__}; whole benchmark {data['wall_s']:.0f} s.")
    save(args.output, "\n\n".join(sections), data)


if __name__ == "__main__":
    main()
