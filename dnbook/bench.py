"""Side-by-side speed of the norm layers: a MobileNetV2 training step and one layer alone.

Every model (or layer) of a run lives in the same process and is timed in turn, round-robin,
one step each per round, the starting model rotating from round to round; so a slow minute of
a shared machine hits every norm alike, and the figures that matter are the ratios to BN
within the run. Each figure is the median over the timed steps after the warm-up ones.

Two clocks per step: the wall clock (CUDA events on a GPU), and on the CPU also the process's
CPU time (all threads), which does not count the time other programs hold the cores and so is
the steadier figure on a shared machine (it does count threads spinning while they wait for
each other). Results go to ``results/bench/<name>.json`` with the
hardware, versions, command, thread count, load average and wall time, plus a Markdown table.

Usage::

    python -m dnbook.bench --threads 2 --batch-sizes 64 128 --steps 20
    python -m dnbook.bench --quick          # seconds: a smoke test of the whole pipeline

A spec ending in ``@reference`` builds the model with that spec and switches its
:class:`~dnbook.norms.DynamicNorm2d` layers to the step-by-step teaching path
(``impl="reference"``), to measure what the fast path saves. A spec ending in ``@path=REV``
runs its DynamicNorm2d layers through the fast path (``dnbook/norms/fast_*.py``) as it was at the
git revision ``REV`` of this repository (read with ``git show``), so that an earlier fast path and
today's are timed side by side in one process::

    python -m dnbook bench --specs bn dnb:r=16,g=1@path=b30379c dnb:r=16,g=1 --layer-shapes
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from dnbook._io import write_json, write_text
from dnbook.cost.traffic import TrafficCounter as TrafficCounter
from dnbook.cost.traffic import layer_traffic
from dnbook.data.registry import DATASETS
from dnbook.engine import provenance
from dnbook.engine.environment import REPO_ROOT
from dnbook.models import mobilenet_v2
from dnbook.norms import DynamicNorm2d, make_norm
from dnbook.norms.batchnorm import update_running_stats
from dnbook.tables import markdown_table

BASELINE = "bn"
REFERENCE_SUFFIX = "@reference"
DEFAULT_SPECS = (
    BASELINE,
    "dnb:r=16,g=1",
    "dnb:r=16,g=1" + REFERENCE_SUFFIX,
    "dnb:r=16,g=oup",
    "dnc",
    "se",
    "gn",
    "mabn",
)
# Typical MobileNetV2 (CIFAR stem) shapes: an expanded 16x16 layer, a late 4x4 one, the stem.
DEFAULT_LAYER_SHAPES = ((64, 144, 16, 16), (64, 384, 4, 4), (64, 32, 32, 32))
# --quick: these options replace the command line's.
QUICK = {
    "batch_sizes": [4],
    "steps": 2,
    "warmup": 1,
    "width": 0.25,
    "layer_shapes": [(4, 16, 4, 4)],
}
NUM_CLASSES = DATASETS["cifar10"].num_classes
IMAGE_SIZE = 32


def use_reference_path(module: nn.Module) -> nn.Module:
    """Switch every DynamicNorm2d in ``module`` to the teaching path; return ``module``."""
    for layer in module.modules():
        if isinstance(layer, DynamicNorm2d):
            layer.impl = "reference"
    return module


PATH_PREFIX = "path="
# The fast path's files, in the order they import each other (an earlier revision may hold the
# whole path in the last one alone).
FAST_PATH_FILES = {
    "dnbook.norms.fast_passes": "dnbook/norms/fast_passes.py",
    "dnbook.norms.fast_coefficients": "dnbook/norms/fast_coefficients.py",
    "dnbook.norms.fast_dynamic": "dnbook/norms/fast_dynamic.py",
}


def _source_at(revision: str, path: str) -> str | None:
    """The text of ``path`` at git ``revision``, or ``None`` where the revision has no such file."""
    shown = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{revision}:{path}"],
        capture_output=True,
        text=True,
    )
    return shown.stdout if shown.returncode == 0 else None


def fast_path_at(revision: str) -> types.ModuleType:
    """``dnbook.norms.fast_dynamic`` as it was at git ``revision``, loaded as a module of its
    own: each of :data:`FAST_PATH_FILES` that the revision has is run in turn, importing the
    others as they were at that revision (the fast path imports nothing else from dnbook)."""
    saved = {name: sys.modules.get(name) for name in FAST_PATH_FILES}
    module = None
    try:
        for name, path in FAST_PATH_FILES.items():
            source = _source_at(revision, path)
            if source is None:
                continue
            module = types.ModuleType(f"{name}_at_{revision}")
            sys.modules[name] = module  # what the next file's imports find
            exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)  # noqa: S102
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    if module is None or source is None:
        raise ValueError(
            f"git revision {revision!r} has no {FAST_PATH_FILES['dnbook.norms.fast_dynamic']}"
        )
    return module


def use_fast_path_at(module: nn.Module, revision: str) -> nn.Module:
    """Run every DynamicNorm2d in ``module`` through the fast path of git ``revision`` (its
    ``dynamic_norm`` functional, called as DynamicNorm2d.forward calls today's, without the
    base affine, which earlier paths lack); return ``module``."""
    functional = fast_path_at(revision).dynamic_norm

    def forward(layer: DynamicNorm2d, x: torch.Tensor) -> torch.Tensor:
        if layer.base_affine:
            raise ValueError(f"the fast path at {revision} has no base affine")
        use_batch_stats = layer.training or not layer.track_running_stats
        sc = layer.sc_module
        y, mean, var = functional(
            x, layer.running_mean, layer.running_var, sc.fc1.weight, sc.fc1.bias,
            sc.fc2.weight, use_batch_stats, layer.eps, mode=layer.mode,
            activation=layer.activation, scale=layer.scale, shift=layer.shift,
            merge=layer.merge, sc_input=layer.sc_input, detach_sc_input=layer.detach_sc_input,
        )  # fmt: skip
        if layer.training and layer.track_running_stats:
            update_running_stats(layer, mean, var, x.numel() // x.shape[1])
        return y

    for layer in module.modules():
        if isinstance(layer, DynamicNorm2d):
            layer.forward = types.MethodType(forward, layer)
    return module


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``"dnb:r=16@reference"`` -> ``("dnb:r=16", "reference")``; no ``@``: ``(spec, None)``."""
    norm, at, path = spec.partition("@")
    return norm, (path if at else None)


def _use_path(module: nn.Module, path: str | None) -> nn.Module:
    """Switch ``module``'s DynamicNorm2d layers to the path a spec's suffix names."""
    if path is None:
        return module
    if path == REFERENCE_SUFFIX[1:]:
        return use_reference_path(module)
    if path.startswith(PATH_PREFIX):
        return use_fast_path_at(module, path.removeprefix(PATH_PREFIX))
    raise ValueError(f"unknown path @{path}; expected @reference or @path=<git revision>")


def build_mobilenet(spec: str, width: float, device: torch.device) -> nn.Module:
    """The CIFAR-stem MobileNetV2 with ``spec``'s norm, in training mode on ``device``."""
    norm, path = _split_spec(spec)
    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=NUM_CLASSES, norm=norm, width_mult=width, stem="cifar")
    return _use_path(model, path).to(device).train()


def build_layer(spec: str, channels: int, device: torch.device) -> nn.Module:
    """One norm layer of ``spec`` with ``channels`` channels, in training mode on ``device``."""
    norm, path = _split_spec(spec)
    torch.manual_seed(0)
    return _use_path(make_norm(norm)(channels), path).to(device).train()


class Timer:
    """Times one call: wall-clock milliseconds (CUDA events on a GPU) and, on the CPU, the
    process's CPU milliseconds over all its threads."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, step: Callable[[], None]) -> tuple[float, float | None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end), None
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def interleaved(
    steps: dict[str, Callable[[], None]], warmup: int, rounds: int, timer: Timer
) -> dict[str, dict[str, list[float]]]:
    """Run every step ``warmup`` times, then time each once per round for ``rounds`` rounds,
    round-robin, the first one rotating; return the per-step times in milliseconds."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {name: {"wall_ms": [], "cpu_ms": []} for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = timer(steps[name])
            times[name]["wall_ms"].append(wall)
            if cpu is not None:
                times[name]["cpu_ms"].append(cpu)
    return times


def training_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast: bool = False
) -> Callable:
    """One SGD step (forward, cross-entropy, backward, update) of ``model``, as a closure;
    with ``autocast``, the forward runs under bf16 autocast as the trainer's does."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    return step


def layer_step(layer: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> Callable:
    """One forward and backward of ``layer`` on ``x``, as a closure."""

    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad_y)

    return step


def summarize(times: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, dict]:
    """Median and minimum of each clock per entry, and the medians' ratios to ``baseline``."""
    rows = {}
    for name, clocks in times.items():
        row = {}
        for clock, values in clocks.items():
            if values:
                row[f"median_{clock}"] = statistics.median(values)
                row[f"min_{clock}"] = min(values)
                row[clock] = values
        rows[name] = row
    for row in rows.values():
        for clock in ("wall_ms", "cpu_ms"):
            if f"median_{clock}" in row and baseline in rows:
                row[f"ratio_{clock}"] = row[f"median_{clock}"] / rows[baseline][f"median_{clock}"]
    return rows


@dataclass(frozen=True)
class Schedule:
    """How a comparison is timed: untimed ``warmup`` rounds, then ``rounds`` timed ones."""

    warmup: int
    rounds: int
    timer: Timer

    def run(self, steps: dict[str, Callable[[], None]]) -> dict[str, dict]:
        """Time ``steps`` side by side; summarize with the first one as the baseline."""
        times = interleaved(steps, self.warmup, self.rounds, self.timer)
        return summarize(times, next(iter(steps)))


def bench_models(
    specs: Sequence[str],
    batch_size: int,
    width: float,
    device: torch.device,
    schedule: Schedule,
    channels_last: bool = False,
    autocast: bool = False,
) -> dict[str, dict]:
    """Training-step times of MobileNetV2 (CIFAR stem) with each norm, at one batch size, in
    the contiguous or channels_last layout, in float32 or under bf16 autocast."""
    generator = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    images = images.to(device).contiguous(memory_format=layout)
    labels = torch.randint(NUM_CLASSES, (batch_size,), generator=generator).to(device)
    step_of = {
        spec: training_step(
            build_mobilenet(spec, width, device).to(memory_format=layout), images, labels, autocast
        )
        for spec in specs
    }
    rows = schedule.run(step_of)
    for row in rows.values():
        row["images_per_s"] = batch_size / row["median_wall_ms"] * 1e3
    return rows


def bench_layers(
    specs: Sequence[str], shape: Sequence[int], device: torch.device, schedule: Schedule
) -> dict[str, dict]:
    """Forward+backward times of one norm layer of each spec on an input of ``shape``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator).to(device).requires_grad_()
    grad_y = torch.randn(*shape, generator=generator).to(device)
    step_of = {spec: layer_step(build_layer(spec, shape[1], device), x, grad_y) for spec in specs}
    return schedule.run(step_of)


def memory_traffic(spec: str, shape: Sequence[int]) -> dict[str, dict[str, int]]:
    """The cost model of one training forward and backward of ``spec``'s layer on ``shape``:
    kernel counts and activation-sized reads, writes and allocations
    (:func:`dnbook.cost.traffic.layer_traffic`)."""
    return layer_traffic(build_layer(spec, shape[1], torch.device("cpu")), shape)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), where the OS has them."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _load_text(load: list[float] | None) -> str:
    return "unknown" if load is None else " ".join(f"{value:.2f}" for value in load)


def _ratio(row: dict, clock: str) -> str:
    value = row.get(f"ratio_{clock}")
    return "" if value is None else f"{value:.2f}"


def _timing_cells(row: dict, digits: int) -> list[str]:
    """Median wall ms, its ratio to the baseline, median CPU ms, its ratio ('' where absent)."""
    cells = []
    for clock in ("wall_ms", "cpu_ms"):
        value = row.get(f"median_{clock}")
        cells += ["" if value is None else f"{value:.{digits}f}", _ratio(row, clock)]
    return cells


def _table(intro: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table after a line of text; the first two columns left-aligned."""
    return ["", intro, "", markdown_table(rows, header, right=2)]


def markdown(result: dict) -> str:
    """The run's figures as Markdown tables: median milliseconds and ratio to BN per clock,
    and the layers' cost model."""
    settings = result["settings"]
    lines = [
        f"# Norm benchmark: {result['name']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['device']}; {result['hardware']['cpu']}; torch {result['versions']['torch']}; "
        f"{settings['threads']} threads; load average (1, 5, 15 min) before "
        f"{_load_text(result['load_average_before'])}, after "
        f"{_load_text(result['load_average_after'])}; {result['wall_time_s']:.0f} s in all.",
    ]
    timing = ["wall ms", "wall / BN", "CPU ms", "CPU / BN"]
    if result["models"]:
        lines += _table(
            f"MobileNetV2 (CIFAR stem, width {settings['width']}), one SGD training step, "
            f"median over {settings['steps']} interleaved steps after {settings['warmup']} "
            "warm-up rounds:",
            ["batch", "norm", *timing, "images/s"],
            [
                [str(entry["batch_size"]), f"`{spec}`", *_timing_cells(row, 1)]
                + [f"{row['images_per_s']:.0f}"]
                for entry in result["models"]
                for spec, row in entry["norms"].items()
            ],
        )
    if result["layers"]:
        lines += _table(
            f"One layer, forward + backward, median over {settings['layer_steps']} interleaved "
            "steps:",
            ["shape", "norm", *timing],
            [
                [str(tuple(entry["shape"])), f"`{spec}`", *_timing_cells(row, 2)]
                for entry in result["layers"]
                for spec, row in entry["norms"].items()
            ],
        )
    counts = ("kernels", "reads", "writes", "allocations")
    counted = [
        [str(tuple(entry["shape"])), f"`{spec}`"]
        + [f"{row['traffic']['forward'][k]} \\| {row['traffic']['backward'][k]}" for k in counts]
        for entry in result["layers"]
        for spec, row in entry["norms"].items()
        if "traffic" in row
    ]
    if counted:
        lines += _table(
            "Cost model of one layer's training forward | backward, counted at the ATen level: "
            "kernels (non-view ops), and activation-sized reads / writes / new allocations:",
            ["shape", "norm", *counts],
            counted,
        )
    return "\n".join(lines) + "\n"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W of positive integers, got {text!r}")
    return shape


DESCRIPTION = (
    "Time the norm layers side by side: MobileNetV2 training steps and one layer's "
    "forward+backward, as ratios to BN."
)


def parser(prog: str = "python -m dnbook bench") -> argparse.ArgumentParser:
    """The benchmark's own argument parser (see :func:`add_arguments`)."""
    return add_arguments(argparse.ArgumentParser(prog=prog, description=DESCRIPTION))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (a CLI subcommand's, say); return it."""
    parser.add_argument(
        "--specs",
        nargs="+",
        default=list(DEFAULT_SPECS),
        help="norm specs, the first is the baseline; a spec ending in "
        f"{REFERENCE_SUFFIX} uses DynamicNorm2d's teaching path, one ending in @path=REV the "
        "fast path of git revision REV. "
        f"Default: {' '.join(DEFAULT_SPECS)}",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    parser.add_argument(
        "--layer-shapes",
        nargs="*",
        type=_shape,
        default=None,
        help="N,C,H,W inputs of the layer benchmark; none to skip it. Default: "
        + " ".join(",".join(map(str, s)) for s in DEFAULT_LAYER_SHAPES),
    )
    parser.add_argument(
        "--layer-steps",
        type=int,
        default=None,
        help="timed rounds of the layer benchmark (default: 2 x --steps)",
    )
    parser.add_argument("--no-models", action="store_true", help="skip the model benchmark")
    parser.add_argument(
        "--memory-format",
        choices=("contiguous", "channels_last"),
        default="contiguous",
        help="layout of the model benchmark's weights and images (default: contiguous)",
    )
    parser.add_argument(
        "--autocast",
        choices=("off", "bf16"),
        default="off",
        help="bf16 autocast around the model benchmark's forward, as the trainer uses where "
        "the device computes bf16 natively (default: off)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's own choice)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: width 0.25, batch 4, 2 steps, a tiny layer",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "results" / "bench",
        help="output folder (default: <repo>/results/bench)",
    )
    parser.add_argument("--name", default=None, help="file stem (default: <device>-<UTC time>)")
    return parser


def run_benchmark(args: argparse.Namespace, command: str) -> dict:
    """Run the benchmark ``args`` describe; return the result (also written to ``args.out``)."""
    if args.quick:
        vars(args).update(QUICK)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shapes = DEFAULT_LAYER_SHAPES if args.layer_shapes is None else args.layer_shapes
    layer_steps = args.layer_steps or 2 * args.steps
    timer = Timer(device)
    model_schedule = Schedule(args.warmup, args.steps, timer)
    layer_schedule = Schedule(args.warmup, layer_steps, timer)
    started, load_before = time.perf_counter(), load_average()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "name": args.name or f"{device.type}-{stamp}",
        "started_utc": stamp,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        **provenance.record(command),
        "settings": {
            "specs": list(args.specs),
            "batch_sizes": list(args.batch_sizes),
            "steps": args.steps,
            "warmup": args.warmup,
            "width": args.width,
            "layer_shapes": [list(s) for s in shapes],
            "layer_steps": layer_steps,
            "threads": torch.get_num_threads(),
            "baseline": args.specs[0],
            "memory_format": args.memory_format,
            "autocast": args.autocast,
        },
        "load_average_before": load_before,
        "models": [],
        "layers": [],
    }
    for batch_size in [] if args.no_models else args.batch_sizes:
        rows = bench_models(
            args.specs,
            batch_size,
            args.width,
            device,
            model_schedule,
            channels_last=args.memory_format == "channels_last",
            autocast=args.autocast == "bf16",
        )
        result["models"].append({"batch_size": batch_size, "norms": rows})
        _print_rows(f"MobileNetV2, batch {batch_size}", rows)
    for shape in shapes:
        rows = bench_layers(args.specs, shape, device, layer_schedule)
        for spec, row in rows.items():
            row["traffic"] = memory_traffic(spec, shape)
        result["layers"].append({"shape": list(shape), "norms": rows})
        _print_rows(f"one layer, {tuple(shape)}", rows)
    result["load_average_after"] = load_average()
    result["wall_time_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / result["name"]
    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), markdown(result))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return result


def _print_rows(title: str, rows: dict[str, dict]) -> None:
    print(title, flush=True)
    for spec, row in rows.items():
        cpu = row.get("median_cpu_ms")
        cpu_text = "" if cpu is None else f"  cpu {cpu:9.2f} ms  x{row.get('ratio_cpu_ms', 0):.2f}"
        print(
            f"  {spec:<28} wall {row['median_wall_ms']:9.2f} ms  "
            f"x{row.get('ratio_wall_ms', 0):.2f}{cpu_text}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None, prog: str = "python -m dnbook bench") -> int:
    """Entry point for ``python -m dnbook bench`` (``argv`` without the subcommand)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    run_benchmark(parser(prog).parse_args(argv), f"{prog} {shlex.join(argv)}".strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m dnbook.bench"))
