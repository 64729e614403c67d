"""``torch.compile`` as a measured variant of the benchmark, and what a whole run would cost.

A spec ending in ``@compile`` times the model wrapped in ``torch.compile`` (default mode,
inductor), beside the eager models of the same run; ``@compile-nodn`` does the same with every
:class:`~dnbook.norms.DynamicNorm2d` left eager (``torch.compiler.disable``: the compiled model
breaks its graph at each such layer). The suffix comes last: ``dnb:r=16,g=1@reference@compile``
compiles the teaching path.

A compiled model pays once, in its first calls, for tracing and code generation; the question
is whether its faster steps earn that back over a run. :func:`whole_run` answers it from a
benchmark row: the measured first calls (training and evaluation, the latter a recompile for a
compiled model: another mode and batch size) plus the steady step times multiplied out to a
run's step and evaluation-batch counts, and the break-even step count against the same spec
eager. :class:`DynamoCounts` records, per spec, how many graphs Dynamo compiled and how many
graph breaks it met, to show where a layer keeps the compiler out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from dnbook.norms import DynamicNorm2d

COMPILE_SUFFIXES = ("@compile", "@compile-nodn")
# The `cpu` profile's run at batch 64: 3 epochs of 45,000 // 64 = 703 steps (the loader drops
# the partial batch), and evaluation batches of 1,000: per epoch 5 (val) + 10 (test), then the
# test split once more at the best weights.
RUN_STEPS = 2_109
RUN_EVAL_BATCHES = 55
EVAL_BATCH = 1_000


def split_compile(spec: str) -> tuple[str, str | None]:
    """``"bn@compile"`` -> ``("bn", "@compile")``; without a compile suffix ``(spec, None)``."""
    for suffix in sorted(COMPILE_SUFFIXES, key=len, reverse=True):
        if spec.endswith(suffix):
            return spec.removesuffix(suffix), suffix
    return spec, None


def prepare(cache_dir: str | None = None) -> str:
    """Set inductor up for a measurement: code generation in this process (no worker pool, so
    the process's CPU time, with its waited-for compiler children, holds the whole compile) and
    its caches in ``cache_dir`` (default: a new empty folder, so the compile is a cold one).
    Returns the cache folder."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="dnbook-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    return cache_dir


def compile_model(model: nn.Module, suffix: str) -> nn.Module:
    """``model`` compiled as ``suffix`` says (``@compile-nodn``: its DynamicNorm2d layers
    eager)."""
    if suffix == "@compile-nodn":
        for layer in model.modules():
            if isinstance(layer, DynamicNorm2d):
                layer.forward = torch.compiler.disable(layer.forward)
    elif suffix != "@compile":
        raise ValueError(f"unknown compile suffix {suffix!r}; expected one of {COMPILE_SUFFIXES}")
    # its own compiled entries: the models of a run share their classes' code objects, whose
    # recompile limit would otherwise count every model's graphs together
    return torch.compile(model, isolate_recompiles=True)


def _dynamo_totals() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {
        "frames": counters["frames"]["total"],
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
    }


class DynamoCounts:
    """Wraps step closures so that what Dynamo does during each call (frames compiled, graphs
    made, graph breaks met) is added up per spec and phase: ``counts[spec][phase]``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, dict[str, int]]] = {}

    def wrap(self, spec: str, phase: str, step: Callable[[], None]) -> Callable[[], None]:
        phases = self.counts.setdefault(spec, {})
        totals = phases.setdefault(phase, dict.fromkeys(_dynamo_totals(), 0))

        def counted() -> None:
            before = _dynamo_totals()
            try:
                step()
            finally:
                for key, value in _dynamo_totals().items():
                    totals[key] += value - before[key]

        return counted


def _one_time(row: dict, clock: str) -> float:
    """What the first calls cost beyond steady steps (ms): training and evaluation."""
    extra = 0.0
    for phase in ("", "eval_"):
        first = row.get(f"{phase}first_{clock}", [])
        extra += sum(first) - len(first) * row[f"{phase}median_{clock}"]
    return extra


def whole_run(
    row: dict, clock: str, steps: int = RUN_STEPS, eval_batches: int = RUN_EVAL_BATCHES
) -> float:
    """A run's time on ``clock`` (ms) from a benchmark row: its measured first calls, then
    steady training steps and evaluation batches up to ``steps`` and ``eval_batches``."""
    total = 0.0
    for phase, count in (("", steps), ("eval_", eval_batches)):
        first = row.get(f"{phase}first_{clock}", [])
        total += sum(first) + (count - len(first)) * row[f"{phase}median_{clock}"]
    return total


def break_even(compiled: dict, eager: dict, clock: str) -> float | None:
    """Training steps after which the compiled model has made up its one-time cost against the
    same model eager (evaluation's one-time cost included), or ``None`` where a compiled step
    is no faster."""
    saved = eager[f"median_{clock}"] - compiled[f"median_{clock}"]
    if saved <= 0:
        return None
    return max(0.0, _one_time(compiled, clock) - _one_time(eager, clock)) / saved


def summarize_run(rows: dict[str, dict], baseline: str) -> None:
    """Add to each row with evaluation times its ``whole_run_<clock>`` (ms), the ratio to the
    baseline's, and for a compiled spec whose eager form was timed too its ``break_even_<clock>``
    (steps; ``None`` where compiling never pays)."""
    for clock in ("wall_ms", "cpu_ms"):
        for row in rows.values():
            if f"eval_median_{clock}" in row:
                row[f"whole_run_{clock}"] = whole_run(row, clock)
        base = rows.get(baseline, {}).get(f"whole_run_{clock}")
        for spec, row in rows.items():
            if base and f"whole_run_{clock}" in row:
                row[f"whole_run_ratio_{clock}"] = row[f"whole_run_{clock}"] / base
            # the same spec eager, in the same precision (an @autocast= suffix comes last)
            model_spec, at, precision = spec.rpartition("@autocast=")
            if not at:
                model_spec, precision = spec, ""
            eager_spec, suffix = split_compile(model_spec)
            eager_spec += at + precision
            if suffix and eager_spec in rows and f"whole_run_{clock}" in row:
                row[f"break_even_{clock}"] = break_even(row, rows[eager_spec], clock)
