"""Resident memory of a long training run: does it grow?

Runs the real training loop (logging, validation, checkpoints included) on the demo phantom for
--iterations steps and samples the process's resident set size as it goes. A leak shows as steady
growth after warm-up; allocator noise as small jitter.

    .venv/bin/python benchmarks/memory.py --iterations 1200 --method maskmatch
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, ensure_demo_data, save

from maskmatch_med.config import load_recipe
from maskmatch_med.engine.trainer import Trainer
from maskmatch_med.scenarios.registry import scenario_for


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def last_iteration(log: Path) -> int:
    try:
        rows = open(log).read().splitlines()
        return int(rows[-1].split(",")[0]) if len(rows) > 1 else 0
    except (OSError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--method", default="maskmatch", choices=["supervised", "fixmatch", "maskmatch"])
    parser.add_argument("--every", type=int, default=100, help="sample every N iterations")
    args = parser.parse_args()

    root = ensure_demo_data()
    with tempfile.TemporaryDirectory() as work:
        recipe = load_recipe(REPO / "recipes" / "demo.yaml", [
            f"data.root={root}", f"data.manifest={REPO / 'data_manifests' / 'demo'}", f"method.name={args.method}",
            f"train.iterations={args.iterations}", "train.val_every=200", "train.log_every=10", f"output_dir={work}/run",
        ])
        trainer = Trainer(recipe, scenario_for(recipe), progress=False)
        samples: list[tuple[int, float]] = [(0, rss_mib())]
        thread = threading.Thread(target=trainer.run)
        thread.start()
        log = Path(work) / "run" / "train_log.csv"
        next_mark = args.every
        while thread.is_alive():
            done = last_iteration(log)
            if done >= next_mark:
                samples.append((done, rss_mib()))
                next_mark += args.every
            time.sleep(0.2)
        thread.join()
        samples.append((args.iterations, rss_mib()))

    warm = next(rss for it, rss in samples if it >= min(200, args.iterations))
    rows = ["| iteration | RSS (MiB) |", "| ---: | ---: |"] + [f"| {it} | {rss:.0f} |" for it, rss in samples]
    growth = samples[-1][1] - warm
    per_k = growth / max(1, args.iterations - 200) * 1000
    table = "\n".join(rows) + (
        f"\n\n{args.method}, demo recipe: RSS after warm-up (iteration 200) {warm:.0f} MiB, at the end "
        f"{samples[-1][1]:.0f} MiB: growth {growth:+.0f} MiB ({per_k:+.1f} MiB per 1000 iterations)."
    )
    save(f"memory_{args.method}", table, {"method": args.method, "iterations": args.iterations, "samples": samples,
                                          "growth_mib_after_warmup": growth})


if __name__ == "__main__":
    main()
