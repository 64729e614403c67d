"""One training run from start to result: :func:`train` seeds it, loads its data, builds its
:class:`~dnbook.engine.loop.Loop`, resumes it from a checkpoint, drives it epoch by epoch
(saving a checkpoint after each), and returns a :class:`TrainOutcome`.

The parts it drives, one module each: :mod:`~dnbook.engine.loop` (the steps and the epoch),
:mod:`~dnbook.engine.optim` (SGD's parameter groups, warm-up and cosine schedule),
:mod:`~dnbook.engine.checkpoint` (save and resume), :mod:`~dnbook.engine.rng` (seeds and
generator states), :mod:`~dnbook.engine.precision` (bf16 autocast and memory layout).

A run is a pure function of its :class:`TrainConfig` on a given machine: the seed fixes the
initialization, the batch order and the augmentation, and a run stopped after any epoch and
resumed from its checkpoint ends with the same weights and curves as one that never stopped.
A fractional ``config.epochs`` (1.5) ends with a partial epoch, trained, evaluated and
checkpointed like the others (see :mod:`~dnbook.engine.loop`).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dnbook import _io
from dnbook._io import ConfigError
from dnbook.cost.flops import num_params
from dnbook.data import load_dataset
from dnbook.engine import distributed, rng
from dnbook.engine.checkpoint import load_checkpoint, save_atomically
from dnbook.engine.config import TrainConfig
from dnbook.engine.loop import Loop as Loop
from dnbook.engine.loop import ModelFactory as ModelFactory
from dnbook.engine.optim import WarmupCosine as WarmupCosine
from dnbook.engine.optim import param_groups as param_groups
from dnbook.engine.precision import record as precision_record
from dnbook.engine.rng import SEED_MAX as SEED_MAX
from dnbook.engine.rng import seed_everything as seed_everything
from dnbook.models import build_model


@dataclass
class TrainOutcome:
    """What :func:`train` returns: the result fields (see ``to_dict``) and the trained model
    (its last-epoch weights; the best-validation weights are in ``best_state``)."""

    status: str  # "finished" or "diverged"
    curves: list[dict[str, Any]]
    final: dict[str, Any] | None  # None when the run diverged
    divergence: dict[str, Any] | None
    steps: int
    world_size: int
    num_params: int
    wall_time_s: float
    model: nn.Module = field(repr=False)
    best_state: dict[str, torch.Tensor] | None = field(repr=False, default=None)
    step_curve: dict[str, Any] | None = None
    precision: dict[str, Any] | None = None
    saturation: dict[str, Any] | None = None  # DN-B models only (dnbook.engine.saturation)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready fields (no tensors)."""
        keys = ("status", "curves", "final", "divergence", "steps", "world_size", "num_params")
        return (
            {key: getattr(self, key) for key in keys}
            | {
                "step_curve": self.step_curve,
                "precision": self.precision,
                "wall_time_s": self.wall_time_s,
            }
            | ({"saturation": self.saturation} if self.saturation is not None else {})
        )


# Steps per point of a result's step-level training curve.
STEP_CURVE_EVERY = 10


def step_curve(losses: list[float], lrs: list[float], every: int = STEP_CURVE_EVERY) -> dict:
    """The training loss and learning rate every ``every`` steps, for telling a slow start from
    a run that cannot train: per window of ``every`` steps (the last may be shorter), the mean
    of its finite losses (``None`` when it has none), the learning rate of its last step, the
    step that ends it; and the count and fraction of non-finite losses over the run."""
    points: dict[str, list] = {"step": [], "loss": [], "lr": []}
    for start in range(0, len(losses), every):
        window = [v for v in losses[start : start + every] if math.isfinite(v)]
        points["step"].append(min(start + every, len(losses)))
        points["loss"].append(round(sum(window) / len(window), 5) if window else None)
        points["lr"].append(round(lrs[min(start + every, len(lrs)) - 1], 7) if lrs else None)
    nonfinite = sum(not math.isfinite(v) for v in losses)
    return {
        "every": every,
        **points,
        "nonfinite_steps": nonfinite,
        "nonfinite_fraction": nonfinite / len(losses) if losses else 0.0,
    }


def _default_model(config: TrainConfig) -> ModelFactory:
    def build(num_classes: int) -> nn.Module:
        return build_model(
            config.model,
            num_classes=num_classes,
            norm=config.norm,
            width_mult=config.width_mult,
            stem=config.stem,
        )

    return build


def load_splits(config: TrainConfig):
    """The train / validation / test splits ``config`` names (subsets drawn with seed 0)."""
    # The split seed is fixed: every training seed sees the same train/val/test images.
    return load_dataset(
        config.dataset, n_train=config.n_train, n_val=config.n_val, n_test=config.n_test, seed=0
    )


def train(
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    splits=None,
    model_fn: ModelFactory | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train ``config`` and return the curves, final metrics and model.

    Args:
        config: the run.
        device: ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
        progress: show tqdm bars (an epoch bar and a transient batch bar), on rank 0 only.
        checkpoint_path: where to save a checkpoint after every epoch (``None``: never).
        resume: continue from ``checkpoint_path`` when it exists.
        splits: a ``dnbook.data.DatasetSplits`` to train on instead of loading
            ``config.dataset`` (for tests and notebook studies; the config still names the run).
        model_fn: ``num_classes -> nn.Module`` building the model instead of
            ``dnbook.models.build_model`` from the config (same caveat).
        on_epoch_end: called with each epoch's curve row after its checkpoint is written.

    Returns:
        A :class:`TrainOutcome`. A non-finite loss or gradient stops the run with status
        ``"diverged"`` and a ``divergence`` record; nothing is raised.

    Raises:
        dnbook.ConfigError: the data or the model cannot be set up as ``config`` asks.
        dnbook._io.Interrupted: a ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM under the command
            line) during training, saying at which epoch and step, and where the checkpoint of
            the last finished epoch is (``checkpoint`` is ``None`` before the first). Steps of
            the unfinished epoch are lost: a rerun resumes from that epoch's start, exactly.
    """
    ctx, device = distributed.setup(device)
    rng.seed_everything(config.seed, device)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    try:
        splits = splits if splits is not None else load_splits(config)
        before_loop = rng.rng_state()

        def build_loop() -> Loop:
            rng.set_rng_state(before_loop)  # a rebuilt loop starts exactly as the first would have
            return Loop(config, splits, model_fn or _default_model(config), ctx, device, progress)

        loop = build_loop()
    except ValueError as error:
        # Before any step: the data or the model cannot be set up as the config asks.
        if isinstance(error, ConfigError | FileNotFoundError):
            raise
        raise ConfigError(str(error)) from error
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        loop = load_checkpoint(loop, checkpoint_path, build_loop)

    status, divergence = "finished", None
    epochs = tqdm(
        # epochs left, numbered from 1; the last one partial where config.epochs is fractional
        range(loop.epoch + 1, loop.num_epochs + 1),
        initial=loop.epoch,
        total=loop.num_epochs,
        desc=f"{config.model} {config.norm}",
        disable=not loop.show_progress,
    )
    epoch, saved_epoch = loop.epoch, loop.epoch if loop.epoch else None
    try:
        for epoch in epochs:
            started = time.perf_counter()
            train_metrics = loop.train_epoch(epoch)
            if "divergence" in train_metrics:
                status, divergence = "diverged", train_metrics["divergence"]
                break
            row = loop.end_epoch(epoch, train_metrics, time.perf_counter() - started)
            epochs.set_postfix(
                {k: f"{row[k]:.3g}" for k in ("train_loss", "val_acc", "test_acc") if k in row}
            )
            if checkpoint_path is not None and ctx.is_main:
                save_atomically(loop.state_dict(), checkpoint_path)
                saved_epoch = epoch
            if on_epoch_end is not None:
                on_epoch_end(row)
    except KeyboardInterrupt as interrupt:
        epochs.close()
        if isinstance(interrupt, _io.Interrupted) and interrupt.epoch is not None:
            raise
        raise _io.Interrupted(
            getattr(interrupt, "signum", signal.SIGINT),
            epoch=epoch,
            step=loop.step,
            checkpoint=checkpoint_path if saved_epoch is not None else None,
            checkpoint_epoch=saved_epoch,
        ) from interrupt
    epochs.close()

    if loop.probe is not None and status == "finished":
        loop.probe.maybe_record(loop.step, loop.net, loop._forward, last=True)
    final = loop.final_metrics() if status == "finished" else None
    return TrainOutcome(
        status=status,
        curves=loop.curves,
        final=final,
        divergence=divergence,
        steps=loop.step,
        world_size=ctx.world_size,
        num_params=num_params(loop.net),
        wall_time_s=loop.wall_time_s(),
        model=loop.net,
        best_state=loop.best["state"] if loop.best else None,
        step_curve=step_curve(loop.step_losses, loop.step_lrs),
        saturation=loop.probe.record() if loop.probe is not None else None,
        precision=precision_record(loop.amp, loop.memory_format, device, loop.precision_by),
    )
