"""3D volumes: training step time and peak memory per method, and inference time per volume.

Training: the real `Trainer._train_step` (method step, optimizer, EMA) of recipes/acdc3d.yaml's
network on random in-memory volumes cropped by the real patch source (scenarios/volumes/data.py), at patch
96 x 96 x 16 (ACDC-like: anisotropic strides, in-plane ensemble scales, (16, 16, 2) mask patches) and
96 x 96 x 96 (CT-like: isotropic strides and scales, (16, 16, 16) mask patches), batch 2 labeled + 2
unlabeled. Each (patch, method) runs in its own process so its peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the growth of the peak resident set size over the process's
size before the first step (model and data included in the baseline).

Inference: seconds per volume through `predict_volume_3d` (normalisation, resampling to the recipe
spacing, MONAI sliding windows with Gaussian blending, inverse resampling): an ACDC-sized volume
(216 x 256 x 10 at 1.5 x 1.5 x 10 mm, acdc3d recipe) and a 256 x 256 x 128 CT-sized volume
(1.5 mm isotropic, 96^3 windows), with scale 1 and with the three-scale ensemble.

    .venv/bin/python benchmarks/speed3d.py                     # full size
    .venv/bin/python benchmarks/speed3d.py --channels-div 2 --ct-size 128 128 64   # reduced, for a small CPU
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from common import REPO, save

from maskmatch_med.config import load_recipe
from maskmatch_med.engine.trainer import Trainer
from maskmatch_med.engine.training_data import TrainingData
from maskmatch_med.models import build_model
from maskmatch_med.scenarios.volumes.data import PatchSource
from maskmatch_med.scenarios.volumes.inference import axis_scales, predict_volume_3d

METHODS = ("supervised", "fixmatch", "maskmatch")
PATCHES = {
    "96x96x16": {"patch": [96, 96, 16], "volume": [160, 160, 20]},
    "96x96x96": {"patch": [96, 96, 96], "volume": [128, 128, 128]},
}


def overrides(patch_name: str, channels_div: int) -> list[str]:
    """acdc3d.yaml, adapted to the CT-like patch where needed."""
    channels = [max(4, c // channels_div) for c in (16, 32, 64, 128, 256)]
    sets = [f"model.channels={channels}", "data.root=/nonexistent", "train.batch_size=2", "train.unlabeled_batch_size=2",
            "train.device=auto"]
    if patch_name == "96x96x96":
        sets += ["model.axis_strides=null", "volume.patch_size=[96,96,96]", "volume.spacing=[1.5,1.5,1.5]",
                 "method.ensemble.scales=[0.75,1.0,1.25]", "method.mask.patch_size=[16,16,16]"]
    return sets


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class SyntheticVolumes:
    """For the real Trainer: random volumes of `shape` (one per sample) cropped by the real PatchSource."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape

    def training_data(self, recipe, semi_supervised: bool, device: torch.device, size_divisor: int) -> TrainingData:
        shape = self.shape
        generator = torch.Generator().manual_seed(0)
        images = [torch.randn(1, *shape, generator=generator).to(device) for _ in range(4)]
        labels = [torch.randint(0, recipe.data.num_classes, shape, generator=generator).to(torch.uint8).to(device) for _ in range(4)]
        labeled = PatchSource(images, labels, recipe.volume.patch_size, recipe.volume.pos, recipe.volume.neg)
        unlabeled = PatchSource(images, None, recipe.volume.patch_size) if semi_supervised else None
        return TrainingData(labeled, unlabeled, validator=None, spatial_dims=3, in_channels=1, unit="volumes")


def train_worker(patch_name: str, method: str, steps: int, warmup: int, channels_div: int) -> dict:
    """One (patch, method) in this process: median step seconds and peak memory."""
    # No warm-up: the steps measured are the method's own, not the supervised warm-up's.
    recipe = load_recipe(REPO / "recipes" / "acdc3d.yaml", overrides(patch_name, channels_div) + [
        f"method.name={method}", "method.warmup_iterations=0", "method.rampup_iterations=0"])
    recipe.output_dir = REPO / "benchmarks" / ".cache" / "speed3d_unused"
    trainer = Trainer(recipe, SyntheticVolumes(tuple(PATCHES[patch_name]["volume"])), progress=False)
    device = trainer.device
    cuda = device.type == "cuda"
    times, cpu_times = [], []
    baseline = rss_mib()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.model.train()
    for iteration in range(warmup + steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer._train_step(iteration)
        if cuda:
            torch.cuda.synchronize()
        if iteration >= warmup:
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib() - baseline
    return {"patch": patch_name, "method": method, "step_s": statistics.median(times), "steps": times,
            "step_cpu_s": statistics.median(cpu_times),
            "peak_mib": peak, "memory": "cuda max allocated" if cuda else "CPU peak RSS growth"}


def bench_training(steps: int, warmup: int, channels_div: int, patches: list[str]) -> list[dict]:
    results = []
    for patch_name in patches:
        for method in METHODS:
            command = [sys.executable, __file__, "--worker", patch_name, method, "--steps", str(steps), "--warmup", str(warmup),
                       "--channels-div", str(channels_div)]
            out = subprocess.run(command, capture_output=True, text=True, cwd=REPO / "benchmarks")
            if out.returncode:
                raise SystemExit(f"worker {patch_name} {method} failed:\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {patch_name} {method}: {record['step_s']:.2f} s/step ({record['step_cpu_s']:.2f} CPU s), peak {record['peak_mib']:.0f} MiB", flush=True)
            results.append(record)
    return results


def bench_inference(repeats: int, channels_div: int, ct_size: list[int]) -> list[dict]:
    rows = []
    cases = [
        ("ACDC-sized 216x256x10 @ 1.5x1.5x10 mm", "96x96x16", (216, 256, 10), (1.5, 1.5, 10.0)),
        (f"CT-sized {'x'.join(map(str, ct_size))} @ 1.5 mm", "96x96x96", tuple(ct_size), (1.5, 1.5, 1.5)),
    ]
    rng = np.random.default_rng(0)
    for name, patch_name, shape, spacing in cases:
        recipe = load_recipe(REPO / "recipes" / "acdc3d.yaml", overrides(patch_name, channels_div))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = build_model(recipe.model, 3, 1, recipe.data.num_classes).to(device).eval()
        volume = rng.normal(size=shape).astype(np.float32)
        for label, scales in (("scale 1", [1.0]), ("3 scales", [0.75, 1.0, 1.25])):
            per_axis = axis_scales(scales, recipe.volume) if patch_name == "96x96x16" else [(s, s, s) for s in scales]
            times, cpu_times = [], []
            for _ in range(repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                predict_volume_3d(model, volume, spacing, recipe.volume, per_axis, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
                cpu_times.append(time.process_time() - cpu_started)
            record = {"volume": name, "scales": label, "per_axis": per_axis, "s_per_volume": statistics.median(times), "runs": times,
                      "cpu_s_per_volume": statistics.median(cpu_times),
                      "overlap": recipe.volume.sw_overlap, "window": recipe.volume.patch_size}
            print(f"  {name}, {label}: {record['s_per_volume']:.2f} s ({record['cpu_s_per_volume']:.2f} CPU s)", flush=True)
            rows.append(record)
    return rows


def tables(training: list[dict], inference: list[dict]) -> str:
    lines = ["## Training step (batch 2 labeled + 2 unlabeled patches)", "",
             "| patch | method | s/step | CPU s/step | peak memory (MiB) | CPU time vs supervised | memory vs supervised |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for record in training:
        base = next(r for r in training if r["patch"] == record["patch"] and r["method"] == "supervised")
        lines.append(f"| {record['patch']} | {record['method']} | {record['step_s']:.2f} | {record['step_cpu_s']:.2f} | {record['peak_mib']:.0f} | "
                     f"{record['step_cpu_s'] / base['step_cpu_s']:.2f}x | {record['peak_mib'] / max(base['peak_mib'], 1e-9):.2f}x |")
    lines += ["", f"Memory: {training[0]['memory']}. CPU s: process CPU time (all threads), less sensitive than wall "
              "time to other processes on a shared machine; on a dedicated machine s/step is the number to use.", "", "## Inference (sliding window, Gaussian blending)", "",
              "| volume | scales | window | overlap | s/volume | CPU s/volume |", "| --- | --- | --- | --- | --- | --- |"]
    for record in inference:
        lines.append(f"| {record['volume']} | {record['scales']} | {'x'.join(map(str, record['window']))} | {record['overlap']} | "
                     f"{record['s_per_volume']:.2f} | {record['cpu_s_per_volume']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("PATCH", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--channels-div", type=int, default=1, help="divide the acdc3d UNet's channels (reduced runs)")
    parser.add_argument("--patches", nargs="+", default=list(PATCHES), choices=list(PATCHES))
    parser.add_argument("--ct-size", type=int, nargs=3, default=[256, 256, 128], help="the CT-sized inference volume")
    parser.add_argument("--inference-repeats", type=int, default=1)
    parser.add_argument("--name", default="speed3d")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(train_worker(*args.worker, args.steps, args.warmup, args.channels_div)))
        return
    print("training steps:", flush=True)
    training = bench_training(args.steps, args.warmup, args.channels_div, args.patches)
    print("inference:", flush=True)
    inference = bench_inference(args.inference_repeats, args.channels_div, args.ct_size)
    note = "" if args.channels_div == 1 and args.ct_size == [256, 256, 128] else (
        f"\n\nReduced run: network channels / {args.channels_div}, CT-sized volume {'x'.join(map(str, args.ct_size))}.")
    settings = {"steps": args.steps, "warmup": args.warmup, "channels_div": args.channels_div, "ct_size": args.ct_size}
    save(args.name, tables(training, inference) + note, {"settings": settings, "training": training, "inference": inference})


if __name__ == "__main__":
    main()
