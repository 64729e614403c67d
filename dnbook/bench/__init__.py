"""Side-by-side speed of the norm layers: a model's training step and one layer alone.

Every model (or layer) of a run lives in the same process and is timed in turn, round-robin,
one step each per round, the starting model rotating from round to round
(:mod:`~dnbook.bench.timing`); so a slow minute of a shared machine hits every norm alike, and
the figures that matter are the ratios to BN within the run. Each figure is the median over
the timed steps after the warm-up ones.

Two clocks per step: the wall clock (``torch.utils.benchmark``'s, which waits for a GPU to
finish), and on the CPU also the process's
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

A last suffix ``@compile`` (or ``@compile-nodn``) times the model under ``torch.compile``
(:mod:`~dnbook.bench.compiled`); with ``--eval-batch`` the run also times evaluation forwards
and estimates a whole training run, compile time included::

    python -m dnbook bench --specs bn bn@compile --batch-sizes 64 --eval-batch 1000 --layer-shapes

A spec's precision is ``--autocast``'s unless the spec ends in ``@autocast=bf16`` or
``@autocast=off`` (after any other suffix), so that one process times a norm in both::

    python -m dnbook bench --specs bn@autocast=off bn@autocast=bf16 --memory-format channels_last

``--model resnet18`` times the CIFAR-stem ResNet-18 in place of MobileNetV2, and
``--layer-eval`` makes the layer benchmark time evaluation forwards (eval mode, no gradients,
in ``--memory-format`` and each spec's precision) in place of training forwards and backwards.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from dnbook._io import write_json, write_text
from dnbook.bench.compiled import (
    EVAL_BATCH,
    RUN_EVAL_BATCHES,
    RUN_STEPS,
    DynamoCounts,
    compile_model,
    split_compile,
    summarize_run,
)
from dnbook.bench.compiled import prepare as prepare_compile
from dnbook.bench.report import MODEL_TITLES, print_rows
from dnbook.bench.report import markdown as markdown
from dnbook.bench.specs import (
    BASELINE,
    IMAGE_SIZE,
    MODELS,
    NUM_CLASSES,
    REFERENCE_SUFFIX,
    build_layer,
    build_network,
    memory_traffic,
    split_autocast,
)
from dnbook.bench.specs import FAST_PATH_FILES as FAST_PATH_FILES
from dnbook.bench.specs import build_mobilenet as build_mobilenet
from dnbook.bench.specs import fast_path_at as fast_path_at
from dnbook.bench.specs import use_fast_path_at as use_fast_path_at
from dnbook.bench.specs import use_reference_path as use_reference_path
from dnbook.bench.timing import (
    Schedule,
    Timer,
    eval_step,
    first_calls,
    layer_eval_step,
    layer_step,
    load_average,
    training_step,
)
from dnbook.bench.timing import interleaved as interleaved
from dnbook.bench.timing import summarize as summarize
from dnbook.cost.traffic import TrafficCounter as TrafficCounter
from dnbook.engine import provenance
from dnbook.engine.environment import REPO_ROOT

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


def bench_models(
    specs: Sequence[str],
    batch_size: int,
    width: float,
    device: torch.device,
    schedule: Schedule,
    channels_last: bool = False,
    autocast: bool = False,
    eval_batch: int = 0,
    eval_steps: int = 2,
    model_name: str = "mobilenet_v2",
) -> dict[str, dict]:
    """Training-step times of ``model_name`` (CIFAR stem) with each norm, at one batch size, in
    the contiguous or channels_last layout, in float32 or under bf16 autocast (``autocast``,
    or the spec's own ``@autocast=`` suffix).

    Every model's first call is timed on its own first (where a compiled one compiles; a spec
    whose first call raises gets a row with its ``error`` only), then the steps round-robin. With
    ``eval_batch``, each model also runs evaluation forwards of that batch size (the first one
    timed apart, then ``eval_steps`` round-robin) and one more training step, and the rows get the
    estimate of a whole run (:func:`dnbook.bench.compiled.summarize_run`)."""
    generator = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    images = images.to(device).contiguous(memory_format=layout)
    labels = torch.randint(NUM_CLASSES, (batch_size,), generator=generator).to(device)
    models, counts, amp = {}, DynamoCounts(), {}
    for spec in specs:
        model_spec, amp[spec] = split_autocast(spec, autocast)
        norm_spec, suffix = split_compile(model_spec)
        model = build_network(norm_spec, width, device, model_name).to(memory_format=layout)
        models[spec] = model if suffix is None else compile_model(model, suffix)

    def steps(phase: str, make: Callable[[nn.Module, bool], Callable]) -> dict[str, Callable]:
        made = {spec: make(model, amp[spec]) for spec, model in models.items()}
        return {
            spec: counts.wrap(spec, phase, step)
            if split_compile(split_autocast(spec)[0])[1]
            else step
            for spec, step in made.items()
        }

    train = steps("train", lambda model, amp: training_step(model, images, labels, amp))
    first, errors = first_calls(train, schedule.timer)
    for spec in errors:
        del models[spec], train[spec]
    rows = schedule.run(train)
    for spec, row in rows.items():
        row["first_wall_ms"] = [first[spec][0], *row.pop("warmup_wall_ms")]
        row["first_cpu_ms"] = (
            [first[spec][1], *row.pop("warmup_cpu_ms")] if row.get("cpu_ms") else []
        )
        row["images_per_s"] = batch_size / row["median_wall_ms"] * 1e3
    if eval_batch:
        eval_images = torch.randn(eval_batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        eval_images = eval_images.to(device).contiguous(memory_format=layout)
        evaluated = Schedule(1, eval_steps, schedule.timer).run(
            steps("eval", lambda model, amp: eval_step(model, eval_images, amp))
        )
        again = Schedule(0, 1, schedule.timer).run(
            steps(
                "train_after_eval",
                lambda model, amp: training_step(model, images, labels, amp),
            )
        )
        for spec, row in rows.items():
            for clock in ("wall_ms", "cpu_ms"):
                if evaluated[spec].get(clock):
                    row[f"eval_median_{clock}"] = evaluated[spec][f"median_{clock}"]
                    row[f"eval_{clock}"] = evaluated[spec][clock]
                    row[f"eval_first_{clock}"] = evaluated[spec][f"warmup_{clock}"]
                    row[f"after_eval_{clock}"] = again[spec][clock]
        summarize_run(rows, specs[0])
    for spec, phases in counts.counts.items():
        if spec in rows:
            rows[spec]["dynamo"] = phases
    return rows | {spec: {"error": error} for spec, error in errors.items()}


def bench_layers(
    specs: Sequence[str],
    shape: Sequence[int],
    device: torch.device,
    schedule: Schedule,
    evaluation: bool = False,
    channels_last: bool = False,
    autocast: bool = False,
) -> dict[str, dict]:
    """Forward+backward times of one norm layer of each spec on a float32 contiguous input of
    ``shape``; with ``evaluation``, the times of an evaluation forward (eval mode, no
    gradients) on an input in the ``channels_last`` or contiguous layout, under bf16 autocast
    (the input in bf16, as an autocast convolution hands it) where ``autocast`` or the spec's
    ``@autocast=`` suffix says so."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator).to(device)
    step_of = {}
    if evaluation:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        for spec in specs:
            norm_spec, amp = split_autocast(spec, autocast)
            layer = build_layer(norm_spec, shape[1], device)
            step_of[spec] = layer_eval_step(layer, x.bfloat16() if amp else x, amp)
        return schedule.run(step_of)
    x.requires_grad_()
    grad_y = torch.randn(*shape, generator=generator).to(device)
    for spec in specs:
        layer = build_layer(split_autocast(spec)[0], shape[1], device)
        step_of[spec] = layer_step(layer, x, grad_y)
    return schedule.run(step_of)


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
        "fast path of git revision REV; a suffix @compile times the model under "
        "torch.compile (@compile-nodn: its DynamicNorm2d layers left eager); a last suffix "
        "@autocast=bf16 or @autocast=off sets that spec's precision (else --autocast's). "
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
        "--model",
        choices=MODELS,
        default="mobilenet_v2",
        help="the model benchmark's network, CIFAR stem (default: mobilenet_v2)",
    )
    parser.add_argument(
        "--layer-eval",
        action="store_true",
        help="the layer benchmark times evaluation forwards (eval mode, no gradients, in "
        "--memory-format and each spec's precision) in place of forward+backward",
    )
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
        help="bf16 autocast around the model benchmark's forward (and the layer benchmark's "
        "with --layer-eval) for specs without an @autocast= suffix (default: off)",
    )
    parser.add_argument(
        "--eval-batch",
        type=int,
        default=0,
        help="also time evaluation forwards of this batch size (the trainer's, for the `cpu` "
        f"profile: {EVAL_BATCH}) and estimate a whole run of {RUN_STEPS} steps and "
        f"{RUN_EVAL_BATCHES} evaluation batches; 0 to skip (default)",
    )
    parser.add_argument(
        "--eval-steps", type=int, default=2, help="timed evaluation rounds (default 2)"
    )
    parser.add_argument(
        "--compile-cache",
        default=None,
        help="inductor's cache folder for @compile specs (default: a new empty one, a cold "
        "compile)",
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
    compiling = any(split_compile(split_autocast(spec)[0])[1] for spec in args.specs)
    cache_dir = prepare_compile(args.compile_cache) if compiling else None
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
            "model": args.model,
            "layer_eval": args.layer_eval,
            "layer_shapes": [list(s) for s in shapes],
            "layer_steps": layer_steps,
            "threads": torch.get_num_threads(),
            "baseline": args.specs[0],
            "memory_format": args.memory_format,
            "autocast": args.autocast,
            "eval_batch": args.eval_batch,
            "eval_steps": args.eval_steps,
            "run_steps": RUN_STEPS,
            "run_eval_batches": RUN_EVAL_BATCHES,
            "compile": {"mode": "default", "cache_dir": cache_dir, "compile_threads": 1}
            if compiling
            else None,
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
            eval_batch=args.eval_batch,
            eval_steps=args.eval_steps,
            model_name=args.model,
        )
        result["models"].append({"batch_size": batch_size, "norms": rows})
        print_rows(f"{MODEL_TITLES[args.model]}, batch {batch_size}", rows)
    # the layer benchmark times eager layers only
    layer_specs = [spec for spec in args.specs if not split_compile(split_autocast(spec)[0])[1]]
    for shape in shapes:
        rows = bench_layers(
            layer_specs,
            shape,
            device,
            layer_schedule,
            evaluation=args.layer_eval,
            channels_last=args.memory_format == "channels_last",
            autocast=args.autocast == "bf16",
        )
        for spec, row in rows.items():
            if not args.layer_eval:  # the cost model is of a training forward and backward
                row["traffic"] = memory_traffic(split_autocast(spec)[0], shape)
        result["layers"].append({"shape": list(shape), "norms": rows})
        print_rows(f"one layer, {tuple(shape)}", rows)
    result["load_average_after"] = load_average()
    result["wall_time_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / result["name"]
    write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), markdown(result))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return result


def main(argv: Sequence[str] | None = None, prog: str = "python -m dnbook bench") -> int:
    """Entry point for ``python -m dnbook bench`` (``argv`` without the subcommand)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    run_benchmark(parser(prog).parse_args(argv), f"{prog} {shlex.join(argv)}".strip())
    return 0
