"""The training loop: SGD with momentum, cosine schedule with warm-up, a best-validation
checkpoint, per-epoch curves, resumable checkpoints, and a NaN caught instead of raised.

Accuracies are percentages (0-100). Epochs are numbered from 1; ``step`` counts optimizer
steps from 1 across epochs.

A run is a pure function of its :class:`TrainConfig` on a given machine: the seed fixes the
initialization, the batch order and the augmentation, and a run stopped after any epoch and
resumed from its checkpoint ends with the same weights and curves as one that never stopped.
"""

from __future__ import annotations

import copy
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dnbook import _io
from dnbook._io import ConfigError
from dnbook._validation import check_int
from dnbook.data import DeviceLoader, load_dataset
from dnbook.engine import distributed
from dnbook.engine.config import TrainConfig
from dnbook.engine.distributed import DistContext
from dnbook.engine.divergence import grad_norm, locate_nonfinite
from dnbook.engine.environment import cpu_bf16_native
from dnbook.engine.saturation import PROBE_IMAGES, SaturationProbe, dn_b_layers
from dnbook.models import build_model
from dnbook.norms.factory import is_norm_module

ModelFactory = Callable[[int], nn.Module]  # num_classes -> model


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


class WarmupCosine:
    """Learning-rate factor per step: linear warm-up to 1 over ``warmup_steps``, then a cosine
    decay towards 0 at ``total_steps``. A class, not a lambda, so ``LambdaLR`` can save it."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # The first step already moves: (step + 1) / warmup, reaching 1 at its last step.
            return (step + 1) / self.warmup_steps
        # factor = (1 + cos(pi * t)) / 2, t = progress through the decay in [0, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: bool) -> list[dict]:
    """SGD parameter groups: with ``norm_weight_decay=False``, the parameters of every norm
    layer (and of its submodules, such as DN-B's SC-module) and every 1-D parameter (biases)
    get no weight decay; everything else gets ``weight_decay``."""
    if norm_weight_decay:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    exempt: set[int] = set()
    for module in model.modules():
        if is_norm_module(module):
            exempt.update(id(p) for p in module.parameters())
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if id(p) in exempt or p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


SEED_MAX = 2**32 - 1  # NumPy's legacy generator takes seeds in [0, 2**32 - 1]


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and torch; on CUDA also make cuDNN pick deterministic kernels."""
    check_int("seed", seed, minimum=0, maximum=SEED_MAX, error=ConfigError)
    random.seed(seed)
    # The legacy global NumPy generator, on purpose: it is the one third-party code draws from.
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict[str, Any]:
    """Every global generator's state, in types a ``weights_only`` load accepts (lists,
    dicts, numbers, tensors): no NumPy arrays, no pickled classes."""
    version, internal, gauss_next = random.getstate()
    numpy = np.random.get_state(legacy=False)  # noqa: NPY002
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": {**numpy, "state": {**numpy["state"], "key": numpy["state"]["key"].tolist()}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        key = np.asarray(numpy["state"]["key"], dtype=np.uint32)
        numpy = {**numpy, "state": {**numpy["state"], "key": key}}
    np.random.set_state(numpy)  # noqa: NPY002  (a tuple: a checkpoint of an older dnbook)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


class _Loop:
    """The state of one run and the steps that move it forward; :func:`train` drives it."""

    def __init__(
        self,
        config: TrainConfig,
        splits,
        build: ModelFactory,
        ctx: DistContext,
        device: torch.device,
        progress: bool,
    ):
        self.config, self.ctx, self.device = config, ctx, device
        self.show_progress = progress and ctx.is_main
        self.num_classes = len(splits.classes)
        self.topk = 5 if self.num_classes >= 100 else 1
        # bf16 autocast where the device computes bf16 natively (CUDA; CPUs with AMX or
        # AVX-512 BF16), float32 elsewhere; channels_last on every device. Each result records
        # what was used (``precision``), since the same config runs both ways across machines.
        native_bf16 = device.type == "cuda" or (device.type == "cpu" and cpu_bf16_native())
        self.amp = config.amp and native_bf16
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )

        stats = {"mean": splits.mean, "std": splits.std, "device": device}
        # Every process draws the same seeded permutation and takes its own slice of it
        # (raises ValueError when batch_size exceeds a process's share of the training split).
        self.train_loader = DeviceLoader(
            splits.train_x,
            splits.train_y,
            config.batch_size,
            train=True,
            seed=config.seed,
            drop_last=True,
            rank=ctx.rank,
            world_size=ctx.world_size,
            **stats,
        )
        # Evaluation splits are sharded without dropping any image; counts are summed over
        # processes (shards may differ by one image, and evaluation has no per-batch collective).
        self.eval_loaders = {
            split: DeviceLoader(
                *distributed.shard(x, y, ctx), config.eval_batch_size, train=False, **stats
            )
            for split in ("val", "test")
            for x, y in [splits.split(split)]
            if len(y) > 0
        }
        self.steps_per_epoch = len(self.train_loader)
        total_steps = self.steps_per_epoch * config.epochs
        warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)

        model = build(self.num_classes).to(device=device, memory_format=self.memory_format)
        self.model = distributed.wrap_model(model, ctx, device, config.sync_bn)
        self.net = distributed.unwrap(self.model)
        # DN-B models: alpha's and lambda's saturation and FC1's dead units over training, on
        # the first validation images (dnbook.engine.saturation; it changes nothing trained).
        self.probe = None
        probe_split = next((s for s in ("val", "test") if s in self.eval_loaders), None)
        if dn_b_layers(self.net) and probe_split is not None:
            images, _ = next(iter(self.eval_loaders[probe_split]))
            self.probe = SaturationProbe(images[:PROBE_IMAGES])
        self.optimizer = torch.optim.SGD(
            param_groups(self.net, config.weight_decay, config.norm_weight_decay),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(warmup_steps, total_steps)
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.curves: list[dict[str, Any]] = []
        self.step_losses: list[float] = []
        self.step_lrs: list[float] = []  # the learning rate each step used (or would have)
        self.best: dict[str, Any] | None = None  # {"epoch", "val_acc", "state"}
        self.last_lr = config.lr
        # Wall time of earlier sessions of this run (from a checkpoint), plus this session's.
        self.earlier_sessions_s = 0.0
        self.session_start = time.perf_counter()

    def wall_time_s(self) -> float:
        return self.earlier_sessions_s + time.perf_counter() - self.session_start

    # -- one batch ------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return model(images.contiguous(memory_format=self.memory_format)).float()

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[float, torch.Tensor] | None:
        """One SGD step. Returns (loss, number correct), or ``None`` when the loss or the
        gradient is non-finite (then the weights are left as they were before the step)."""
        self.optimizer.zero_grad(set_to_none=True)
        logits = self._forward(self.model, images)
        loss = self.criterion(logits, labels)
        loss.backward()
        # One host sync per step reads the loss and the gradient norm together; summing over
        # processes makes every process see a NaN that any of them met, and stop with it.
        check = torch.stack([loss.detach(), grad_norm(self.net.parameters()).to(loss.device)])
        loss_value, norm = (
            distributed.all_reduce_sum(check, self.ctx) / self.ctx.world_size
        ).tolist()
        self.step_losses.append(loss_value)
        self.step_lrs.append(self.optimizer.param_groups[0]["lr"])
        if not (math.isfinite(loss_value) and math.isfinite(norm)):
            return None
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss_value, (logits.argmax(dim=1) == labels).sum()

    def diagnose(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> dict[str, Any]:
        """Replay the offending batch with hooks; the record of where it went non-finite."""
        found = locate_nonfinite(
            self.net, lambda: self.criterion(self._forward(self.model, images), labels)
        )
        # The NaN may have appeared on another process: take the first process that saw one.
        reports = distributed.gather_objects(found, self.ctx)
        found = next((r for r in reports if r["first"] is not None), found)
        return {
            "epoch": epoch,
            "step": self.step + 1,
            "loss": self.step_losses[-1],
            "first_nonfinite": found["first"],
            "forward": found["forward"],
            "backward": found["backward"],
            "loss_history": list(self.step_losses),
        }

    # -- one epoch ------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch; returns its train metrics, or ``{"divergence": record}``."""
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, torch.zeros((), device=self.device), 0
        batches = tqdm(
            self.train_loader,
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not self.show_progress,
        )
        with batches:
            for images, labels in batches:
                if self.probe is not None:
                    self.probe.maybe_record(self.step, self.net, self._forward)
                stepped = self.train_step(images, labels)
                if stepped is None:
                    return {"divergence": self.diagnose(images, labels, epoch)}
                loss_value, batch_correct = stepped
                loss_sum += loss_value * len(labels)
                correct += batch_correct
                seen += len(labels)
                if self.step % 10 == 0:
                    batches.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        totals = distributed.all_reduce_sum(
            torch.tensor([correct.item(), seen], dtype=torch.float64, device=self.device), self.ctx
        )
        return {
            "train_loss": loss_sum / seen,  # already averaged over processes per step
            "train_acc": 100.0 * totals[0].item() / totals[1].item(),
            "lr": self.last_lr,  # the learning rate of the epoch's last step
        }

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Top-1 (and top-5 with 100+ classes) accuracy and mean loss on a split, in percent."""
        if split not in self.eval_loaders:
            return {}
        self.model.eval()
        # (loss sum, top-1 correct, top-k correct, images), summed over batches and processes
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        for images, labels in self.eval_loaders[split]:
            logits = self._forward(self.net, images)
            top = logits.topk(self.topk, dim=1).indices  # (N, k)
            hits = top == labels[:, None]
            totals += torch.stack(
                [
                    nn.functional.cross_entropy(logits, labels, reduction="sum").double(),
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    torch.tensor(len(labels), dtype=torch.float64, device=self.device),
                ]
            )
        loss, top1, topk, count = distributed.all_reduce_sum(totals, self.ctx).tolist()
        metrics = {f"{split}_loss": loss / count, f"{split}_acc": 100.0 * top1 / count}
        if self.topk == 5:
            metrics[f"{split}_top5"] = 100.0 * topk / count
        return metrics

    def end_epoch(
        self, epoch: int, train_metrics: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        """Evaluate, update the best-validation weights, append to the curves."""
        row = {"epoch": epoch, "step": self.step, **train_metrics}
        # Every process evaluates with rank 0's running statistics, as DDP trains with them.
        distributed.broadcast_buffers(self.net, self.ctx)
        row |= self.evaluate("val") | self.evaluate("test")
        row["time_s"] = seconds
        # Best validation accuracy, the first epoch to reach it on ties; without a
        # validation split, the last epoch.
        score = row.get("val_acc")
        if self.best is None or score is None or score > self.best["val_acc"]:
            state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.best = {"epoch": epoch, "val_acc": score, "state": state}
        self.curves.append(row)
        self.epoch = epoch
        return row

    def final_metrics(self) -> dict[str, Any]:
        """Last-epoch metrics, and the test accuracy of the best-validation weights."""
        last = self.curves[-1]
        final = {key: last.get(key) for key in ("train_loss", "train_acc", "val_acc")}
        final["test_acc_last"] = last.get("test_acc")
        final["best_epoch"] = self.best["epoch"]
        final["best_val_acc"] = self.best["val_acc"]
        last_state = copy.deepcopy(self.net.state_dict())
        self.net.load_state_dict(self.best["state"])
        at_best = self.evaluate("test")
        self.net.load_state_dict(last_state)
        final["test_acc_at_best_val"] = at_best.get("test_acc")
        if self.topk == 5:
            final["test_top5_last"] = last.get("test_top5")
            final["test_top5_at_best_val"] = at_best.get("test_top5")
        return final

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
            "curves": self.curves,
            "step_losses": self.step_losses,
            "step_lrs": self.step_lrs,
            "saturation_points": self.probe.points if self.probe is not None else None,
            "best": self.best,
            "wall_time_s": self.wall_time_s(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("config") != self.config.to_dict():
            raise ValueError("the checkpoint belongs to another config")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.curves, self.step_losses = state["curves"], state["step_losses"]
        self.step_lrs = state.get("step_lrs", [])
        if self.probe is not None:
            self.probe.points = state.get("saturation_points") or []
        self.best, self.earlier_sessions_s = state["best"], state["wall_time_s"]


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`dnbook._io.torch_save`: an interrupted save never leaves
    a half-written file under ``path``."""
    _io.torch_save(state, path)


def _legacy_numpy_globals() -> list:
    """The NumPy types an older checkpoint's ``np.random.get_state()`` tuple unpickles to."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


_LEGACY_NUMPY_GLOBALS = _legacy_numpy_globals()


def _load_checkpoint(loop: _Loop, path: Path, rebuild: Callable[[], _Loop]) -> _Loop:
    """``loop`` resumed from the checkpoint at ``path``; a checkpoint that cannot be loaded
    (cut short, garbled, another config's) is moved aside with a warning naming it, and a
    fresh loop from ``rebuild()`` starts the run over."""
    try:
        # weights_only: the checkpoint holds tensors, numbers, strings, lists and dicts (and,
        # written by an older dnbook, NumPy's generator state as an array: allowed by name).
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
        loop.load_state_dict(state)
    except Exception as error:  # a torch.load of a damaged file raises many kinds
        if not loop.ctx.is_main:
            raise
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        aside = _io.move_aside(path)
        _io.warn_corrupt(path, reason, f"moved to {aside.name}; the run starts over")
        return rebuild()
    return loop


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
    seed_everything(config.seed, device)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    try:
        splits = splits if splits is not None else load_splits(config)
        before_loop = _rng_state()

        def build_loop() -> _Loop:
            _set_rng_state(before_loop)  # a rebuilt loop starts exactly as the first would have
            return _Loop(config, splits, model_fn or _default_model(config), ctx, device, progress)

        loop = build_loop()
    except ValueError as error:
        # Before any step: the data or the model cannot be set up as the config asks.
        if isinstance(error, ConfigError | FileNotFoundError):
            raise
        raise ConfigError(str(error)) from error
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        loop = _load_checkpoint(loop, checkpoint_path, build_loop)

    status, divergence = "finished", None
    epochs = tqdm(
        range(loop.epoch + 1, config.epochs + 1),
        initial=loop.epoch,
        total=config.epochs,
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
        num_params=sum(p.numel() for p in loop.net.parameters()),
        wall_time_s=loop.wall_time_s(),
        model=loop.net,
        best_state=loop.best["state"] if loop.best else None,
        step_curve=step_curve(loop.step_losses, loop.step_lrs),
        saturation=loop.probe.record() if loop.probe is not None else None,
        precision={
            "autocast": "bfloat16" if loop.amp else None,
            "memory_format": "channels_last"
            if loop.memory_format == torch.channels_last
            else "contiguous",
            "device": device.type,
        },
    )
