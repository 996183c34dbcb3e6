"""DDP through torchrun on CPU (gloo), and the sampler that deals each epoch to the ranks."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import tiny_recipe
from maskmatch_med.data.sampling import EpochSampler


def test_sampler_covers_each_epoch_once_across_ranks():
    samplers = [EpochSampler(10, batch_size=5, seed=0, rank=r, world_size=2) for r in range(2)]
    epoch0 = torch.cat([s.indices(0) for s in samplers])
    assert sorted(epoch0.tolist()) == list(range(10))  # ranks see disjoint halves of the epoch
    epoch1 = torch.cat([s.indices(1) for s in samplers])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch0, epoch1)  # reshuffled


def test_sampler_is_a_function_of_the_iteration():
    a, b = EpochSampler(7, 3, seed=5), EpochSampler(7, 3, seed=5)
    forward = [a.indices(i).tolist() for i in range(6)]
    assert [b.indices(i).tolist() for i in (5, 2, 0)] == [forward[5], forward[2], forward[0]]
    assert all(len(batch) == 3 for batch in forward)
    assert EpochSampler(7, 3, seed=6).indices(0).tolist() != forward[0]


def test_small_sets_repeat_to_fill_a_batch():
    sampler = EpochSampler(2, batch_size=5, seed=0)
    assert len(sampler.indices(0)) == 5 and set(sampler.indices(0).tolist()) == {0, 1}


def test_two_process_ddp_run_with_torchrun(tmp_path, phantom_root, tiny_manifest):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"sync_bn": True})  # a no-op with a note on CPU
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "maskmatch_med", "train", str(recipe), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    report = f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    assert "2 processes" in result.stdout and result.stdout.count("done in") == 1, report  # rank 0 alone reports
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "last.pt"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "train_log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]  # one writer, not two
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["rng"]["generators"]) == 2 and state["iteration"] == 4
