"""Which CPU training path is fastest: layout, bf16 autocast, torch.compile, threads.

Training steps (forward, backward, SGD with Nesterov momentum) of ResNet-18 and MobileNetV2
(CIFAR stem, BN, batch 64, 32 px) are timed side by side in one process, round-robin
(``dnbook.bench.interleaved``), so a busy minute of a shared machine hits every path alike.
Paths: float32 in the contiguous layout (the engine's earlier CPU path), float32 channels_last,
bf16 autocast with channels_last (today's path where the CPU computes bf16 natively), and the
last one under ``torch.compile`` (its compile time, the first calls, reported separately).
Then the same newest path at 1 and at 2 threads, to decide between one process with two
threads and two processes with one thread each (two one-thread processes train
``2 / t1`` steps per second if they do not slow each other, one two-thread process
``1 / t2``).

    OMP_NUM_THREADS=1 python benchmarks/cpu_path.py --name cpu-path

writes ``results/bench/speed/<name>.json`` with the hardware, versions and load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from dnbook._io import write_json
from dnbook.bench import Timer, interleaved, load_average
from dnbook.engine import provenance
from dnbook.engine.environment import REPO_ROOT, cpu_bf16_native
from dnbook.models import build_model

WIDTH = 0.25
BATCH = 64
PATHS = {
    # name: (channels_last, bf16 autocast, torch.compile)
    "fp32 contiguous": (False, False, False),
    "fp32 channels_last": (True, False, False),
    "bf16 channels_last": (True, True, False),
    "bf16 channels_last compiled": (True, True, True),
}


def make_step(model_name: str, channels_last: bool, autocast: bool, compiled: bool):
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, num_classes=10, norm="bn", width_mult=WIDTH, stem="cifar")
    model = model.to(memory_format=layout).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    forward = torch.compile(model) if compiled else model
    images = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = forward(images)
        nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--name", default="cpu-path")
    args = parser.parse_args()
    timer = Timer(torch.device("cpu"))
    started, load_before = time.perf_counter(), load_average()
    result = {
        **provenance.record(" ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv])),
        "cpu_bf16_native": cpu_bf16_native(),
        "settings": vars(args) | {"width": WIDTH, "batch_size": BATCH},
        "load_average_before": load_before,
        "models": {},
    }
    for model_name in args.models:
        torch.set_num_threads(1)
        steps, compile_s = {}, None
        for name, (channels_last, autocast, compiled) in PATHS.items():
            if compiled and args.no_compile:
                continue
            steps[name] = make_step(model_name, channels_last, autocast, compiled)
            if compiled:
                first = time.perf_counter()
                steps[name]()  # compiles the forward and the backward
                steps[name]()
                compile_s = time.perf_counter() - first
        times = interleaved(steps, args.warmup, args.rounds, timer)
        base = statistics.median(times["fp32 contiguous"]["wall_ms"])
        rows = {
            name: {
                "median_wall_ms": statistics.median(t["wall_ms"]),
                "median_cpu_ms": statistics.median(t["cpu_ms"]),
                "images_per_s": BATCH / statistics.median(t["wall_ms"]) * 1e3,
                "speedup_vs_fp32_contiguous": base / statistics.median(t["wall_ms"]),
            }
            for name, t in times.items()
        }
        # threads: the newest eager path at 1 and 2 threads, timed alternately
        newest = make_step(model_name, True, True, False)
        per_threads = {1: [], 2: []}
        for _ in range(args.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                per_threads[threads].append(timer(newest)[0])
        torch.set_num_threads(1)
        t1, t2 = (statistics.median(per_threads[k]) for k in (1, 2))
        result["models"][model_name] = {
            "paths": rows,
            "compile_time_s": compile_s,
            "threads": {
                "one_thread_ms": t1,
                "two_threads_ms": t2,
                "two_processes_images_per_s": 2 * BATCH / t1 * 1e3,
                "one_process_two_threads_images_per_s": BATCH / t2 * 1e3,
            },
        }
        print(model_name, json.dumps(result["models"][model_name], indent=1), flush=True)
    result["load_average_after"] = load_average()
    result["wall_time_s"] = time.perf_counter() - started
    out = REPO_ROOT / "results" / "bench" / "speed" / f"{args.name}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
