"""Training step time with 1 and 2 CPU processes under torchrun (gloo), on the demo recipe.

Each configuration runs twice, with a short and a long iteration budget; the difference divided by the
extra iterations is the steady-state step time, free of start-up and data loading. Batches are per
process, so 2 processes train on twice the slices per step.

    .venv/bin/python benchmarks/ddp_speed.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, ensure_demo_data, save

from maskmatch_med.config import load_recipe

TORCHRUN = Path(sys.executable).parent / "torchrun"


def wall_time(processes: int, iterations: int, threads: int, method: str, work: Path) -> float:
    out = work / f"run_{processes}_{iterations}"
    command = [
        str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}", "-m", "maskmatch_med", "train",
        str(REPO / "recipes" / "demo.yaml"), "--no-progress", "--output", str(out),
        "--set", f"data.root={ensure_demo_data()}", "--set", f"data.manifest={REPO / 'data_manifests' / 'demo'}",
        "--set", f"method.name={method}", "--set", f"train.iterations={iterations}",
        "--set", f"train.val_every={iterations}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="maskmatch", choices=["supervised", "fixmatch", "maskmatch"])
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=120)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    demo = load_recipe(REPO / "recipes" / "demo.yaml").train
    per_process = demo.batch_size + demo.unlabeled_batch_size
    configs = [(1, cores), (2, max(1, cores // 2))]
    results = []
    with tempfile.TemporaryDirectory() as work:
        for processes, threads in configs:
            short = wall_time(processes, args.short, threads, args.method, Path(work))
            long = wall_time(processes, args.long, threads, args.method, Path(work))
            step = (long - short) / (args.long - args.short)
            results.append({"processes": processes, "threads_per_process": threads, "step_s": step,
                            "slices_per_s": processes * per_process / step})
    base = results[0]
    rows = ["| processes | threads each | step (s) | slices/s | throughput vs 1 process |", "| ---: | ---: | ---: | ---: | ---: |"]
    rows += [f"| {r['processes']} | {r['threads_per_process']} | {r['step_s']:.3f} | {r['slices_per_s']:.1f} | "
             f"{r['slices_per_s'] / base['slices_per_s']:.2f}x |" for r in results]
    table = "\n".join(rows) + (
        f"\n\n{args.method}, demo recipe ({demo.batch_size} + {demo.unlabeled_batch_size} slices per process), gloo, {cores} cores in all."
    )
    save(f"ddp_speed_{args.method}", table, {"method": args.method, "results": results})


if __name__ == "__main__":
    main()
