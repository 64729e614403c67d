"""Data-parallel training: two processes under torchrun with gloo on the CPU train one short
epoch, agree on the result, and only rank 0 writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dnbook.engine.distributed import DistContext, shard

TESTS = Path(__file__).resolve().parent

WORKER = """
import json, sys
import torch
sys.path.insert(0, {tests!r})
from test_engine import config, tiny_cnn, tiny_splits
from dnbook.engine import distributed, run

torch.set_num_threads(1)
result = run(
    config(epochs=1, batch_size=8),
    profile="ddp",
    results_root={results!r},
    progress=False,
    device="cpu",
    splits=tiny_splits(),
    model_fn=lambda num_classes: tiny_cnn(),
)
rank = distributed.context_from_env().rank
print("RESULT", rank, json.dumps({{"hash": result["hash"], "curves": result["curves"]}}))
distributed.teardown()
"""


def test_shards_are_disjoint_and_cover_the_split():
    import torch

    x, y = torch.arange(7), torch.arange(7)
    shards = [shard(x, y, DistContext(rank=r, world_size=3))[0] for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(7))


@pytest.mark.slow
def test_two_processes_with_gloo_train_and_write_one_result(tmp_path):
    script = tmp_path / "worker.py"
    results = tmp_path / "results"
    script.write_text(textwrap.dedent(WORKER.format(tests=str(TESTS), results=str(results))))
    env = os.environ | {"DNBOOK_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(script)], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    reports = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            _, rank, payload = line.split(" ", 2)
            reports[int(rank)] = json.loads(payload)
    assert sorted(reports) == [0, 1]
    assert reports[0] == reports[1], "every process returns rank 0's result"

    (written,) = (results / "ddp").glob("*.json")
    result = json.loads(written.read_text())
    assert result["status"] == "finished" and result["world_size"] == 2
    assert result["hash"] == reports[0]["hash"]
    # 48 training images, 24 per process, batch 8 per process: 3 steps.
    assert result["steps"] == 3
    assert not any((tmp_path / "cache" / "checkpoints").glob("*.pt"))
