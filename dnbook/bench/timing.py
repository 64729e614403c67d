"""The benchmark's timing harness: every entry (a model's training step, a layer's forward
and backward) timed in turn, round-robin, one call each per round, the starting entry rotating
from round to round, so that a slow minute of a shared machine hits every entry alike. The
clock and the statistics are ``torch.utils.benchmark``'s (:class:`Timer`, :func:`summarize`);
the interleaving (:func:`interleaved`) is what it lacks and the reason for this module."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# torch.utils.benchmark imports torch.utils.cpp_extension, which logs a warning on every import
# on a machine with a CUDA build of torch and no CUDA runtime ("No CUDA runtime is found");
# dnbook compiles nothing, so that logger is quieted to errors before the import
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402


def _children_cpu_s() -> float:
    """CPU time of this process's finished, waited-for children (a compiler ``torch.compile``
    runs, say), in seconds; zero for eager steps."""
    times = os.times()
    return times.children_user + times.children_system


class Timer:
    """Times one call on two clocks: the wall clock of ``torch.utils.benchmark`` (its
    ``timer``, which waits for the accelerator, if any, before reading the time) and, on the CPU,
    the process's CPU time over all its threads plus that of the child processes it waited for
    during the call. Both in milliseconds."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = device.type == "cpu"

    def __call__(self, step: Callable[[], None]) -> tuple[float, float | None]:
        wall, cpu = benchmark.timer(), time.process_time() + _children_cpu_s()
        step()
        wall = benchmark.timer() - wall
        cpu = time.process_time() + _children_cpu_s() - cpu
        return wall * 1e3, cpu * 1e3 if self.cpu else None


def first_calls(
    steps: dict[str, Callable[[], None]], timer: Timer
) -> tuple[dict[str, tuple[float, float | None]], dict[str, str]]:
    """Time every step's first call (where a compiled model compiles), one after another;
    returns the times of those that ran and, for those that raised, the error in one line (a
    step that fails is left out of what follows)."""
    times, errors = {}, {}
    for name, step in steps.items():
        try:
            times[name] = timer(step)
        except Exception as error:  # noqa: BLE001 (the finding is the error itself)
            lines = str(error).strip().splitlines() or [""]
            errors[name] = f"{type(error).__name__}: {lines[0]}"
    return times, errors


def interleaved(
    steps: dict[str, Callable[[], None]], warmup: int, rounds: int, timer: Timer
) -> dict[str, dict[str, list[float]]]:
    """Run every step ``warmup`` times, then time each once per round for ``rounds`` rounds,
    round-robin, the first one rotating; return the per-step times in milliseconds (the warm-up
    calls' too, as ``warmup_wall_ms`` and ``warmup_cpu_ms``)."""
    names = list(steps)
    clocks = ("wall_ms", "cpu_ms", "warmup_wall_ms", "warmup_cpu_ms")
    times = {name: {clock: [] for clock in clocks} for name in names}
    for round_index in range(warmup + rounds):
        prefix = "warmup_" if round_index < warmup else ""
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = timer(steps[name])
            times[name][f"{prefix}wall_ms"].append(wall)
            if cpu is not None:
                times[name][f"{prefix}cpu_ms"].append(cpu)
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


def eval_step(model: nn.Module, images: torch.Tensor, autocast: bool = False) -> Callable:
    """One evaluation forward of ``model`` (eval mode, no gradients), as the trainer's
    evaluation runs it, as a closure; the model is put back in training mode afterwards."""

    def step() -> None:
        model.eval()
        try:
            with (
                torch.no_grad(),
                torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast),
            ):
                model(images).float()
        finally:
            model.train()

    return step


def layer_step(layer: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> Callable:
    """One forward and backward of ``layer`` on ``x``, as a closure."""

    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad_y)

    return step


def layer_eval_step(layer: nn.Module, x: torch.Tensor, autocast: bool = False) -> Callable:
    """One evaluation forward of ``layer`` on ``x`` (eval mode, no gradients, bf16 autocast
    where ``autocast``), as a closure."""
    layer.eval()

    def step() -> None:
        with (
            torch.no_grad(),
            torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast),
        ):
            layer(x)

    return step


def measurement(name: str, clock: str, values_ms: Sequence[float]) -> benchmark.Measurement:
    """The times of one entry on one clock as a ``torch.utils.benchmark.Measurement`` (one call
    per run, in seconds), which computes the statistics."""
    return benchmark.Measurement(
        number_per_run=1,
        raw_times=[value / 1e3 for value in values_ms],
        task_spec=benchmark.TaskSpec(stmt=name, setup="", description=clock),
    )


def summarize(times: dict[str, dict[str, list[float]]], baseline: str) -> dict[str, dict]:
    """Per entry and clock, the times (ms), their median, minimum and interquartile range
    (``torch.utils.benchmark.Measurement``'s), and the medians' ratios to ``baseline``; the
    warm-up times as they are."""
    rows = {}
    for name, clocks in times.items():
        row = {}
        for clock, values in clocks.items():
            if clock.startswith("warmup_"):
                row[clock] = values
            elif values:
                measured = measurement(name, clock, values)
                row[f"median_{clock}"] = measured.median * 1e3
                row[f"min_{clock}"] = min(values)
                row[f"iqr_{clock}"] = measured.iqr * 1e3
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


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), where the OS has them."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None
