"""One run's state and the steps that move it forward: a training step (with a NaN caught,
not raised), an epoch, an evaluation, the best-validation weights, the final metrics, and the
state a checkpoint holds. :func:`dnbook.engine.trainer.train` drives it epoch by epoch.

Accuracies are percentages (0-100). Epochs are numbered from 1; ``step`` counts optimizer
steps from 1 across epochs.

**Fractional epochs.** A run of ``config.epochs`` = 1.5 takes
``config.total_steps(steps_per_epoch)`` steps (:func:`~dnbook.engine.config.scaled_count`:
``round(1.5 * steps_per_epoch)``, halves up): epoch 1 in full, then a last, partial epoch 2
that stops after the remaining steps and ends as any epoch does (validation and test passes,
best-validation update, curve row, checkpoint). Its curve row and best-validation epoch carry
the run's fractional length, 1.5, not 2 (:meth:`Loop.epoch_value`); ``Loop.epoch`` and the
checkpoint count epochs trained, partial ones included (2).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dnbook.data import DeviceLoader
from dnbook.engine import distributed, optim, precision, rng
from dnbook.engine.config import TrainConfig
from dnbook.engine.distributed import DistContext
from dnbook.engine.divergence import grad_norm, locate_nonfinite
from dnbook.engine.saturation import PROBE_IMAGES, SaturationProbe, dn_b_layers

ModelFactory = Callable[[int], nn.Module]  # num_classes -> model


class Loop:
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
        self.amp, self.memory_format = precision.choose(config, device)
        self.precision_by = precision.chosen_by()

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
        # the run's true length in steps, and its epochs: the last one partial where
        # config.epochs is fractional
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

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
        self.optimizer, self.scheduler = optim.sgd(self.net, config, self.steps_per_epoch)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.curves: list[dict[str, Any]] = []
        self.step_losses: list[float] = []
        self.step_lrs: list[float] = []  # the learning rate each step used (or would have)
        self.failed_grad_norm = math.nan  # the gradient norm of a step that was not finite
        self.best: dict[str, Any] | None = None  # {"epoch", "val_acc", "state"}
        self.last_lr = config.lr
        # Wall time of earlier sessions of this run (from a checkpoint), plus this session's.
        self.earlier_sessions_s = 0.0
        self.session_start = time.perf_counter()

    def wall_time_s(self) -> float:
        return self.earlier_sessions_s + time.perf_counter() - self.session_start

    def steps_in(self, epoch: int) -> int:
        """Optimizer steps of ``epoch`` (numbered from 1): ``steps_per_epoch``, less in the
        last epoch of a fractional run."""
        return min(self.steps_per_epoch, self.total_steps - (epoch - 1) * self.steps_per_epoch)

    def epoch_value(self, epoch: int) -> int | float:
        """Where ``epoch`` (numbered from 1) ends, in epochs, for curves and the best epoch:
        ``epoch`` itself, except the run's last epoch, which ends at ``config.epochs`` (1.5
        for the partial second epoch of a 1.5-epoch run; the same as ``epoch`` for a run of
        whole epochs)."""
        return self.config.epochs if epoch == self.num_epochs else epoch

    # -- one batch ------------------------------------------------------------------------

    def _forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with precision.autocast(self.device, self.amp):
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
            self.failed_grad_norm = norm  # the record says which of the two was non-finite
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
            "loss": self.step_losses[-1],  # the failing step's own loss
            "grad_norm": self.failed_grad_norm,  # and its global gradient norm
            "first_nonfinite": found["first"],
            "forward": found["forward"],
            "backward": found["backward"],
            "parameter": found["parameter"],
            "replay_grad_norm": found["grad_norm"],
            "loss_history": list(self.step_losses),
        }

    # -- one epoch ------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (:meth:`steps_in` steps: the last epoch of a fractional run stops
        part-way); returns its train metrics, or ``{"divergence": record}``."""
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, torch.zeros((), device=self.device), 0
        steps = self.steps_in(epoch)
        batches = tqdm(
            itertools.islice(self.train_loader, steps),
            total=steps,
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
        """Evaluate, update the best-validation weights, append to the curves (the row's
        and the best's ``epoch`` is :meth:`epoch_value`: fractional at a fractional run's end)."""
        row = {"epoch": self.epoch_value(epoch), "step": self.step, **train_metrics}
        # Every process evaluates with rank 0's running statistics, as DDP trains with them.
        distributed.broadcast_buffers(self.net, self.ctx)
        row |= self.evaluate("val") | self.evaluate("test")
        row["time_s"] = seconds
        # Best validation accuracy, the first epoch to reach it on ties; without a
        # validation split, the last epoch.
        score = row.get("val_acc")
        if self.best is None or score is None or score > self.best["val_acc"]:
            state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.best = {"epoch": row["epoch"], "val_acc": score, "state": state}
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
            "rng": rng.rng_state(),
            "curves": self.curves,
            "step_losses": self.step_losses,
            "step_lrs": self.step_lrs,
            "saturation_points": self.probe.points if self.probe is not None else None,
            "best": self.best,
            "wall_time_s": self.wall_time_s(),
            # the precision the run trains in, kept on resuming (precision.resumed)
            "precision": precision.record(
                self.amp, self.memory_format, self.device, self.precision_by
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("config") != self.config.to_dict():
            raise ValueError("the checkpoint belongs to another config")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng.set_rng_state(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.curves, self.step_losses = state["curves"], state["step_losses"]
        self.step_lrs = state.get("step_lrs", [])
        if self.probe is not None:
            self.probe.points = state.get("saturation_points") or []
        self.best, self.earlier_sessions_s = state["best"], state["wall_time_s"]
        recorded = state.get("precision")
        self.amp = precision.resumed(self.config, self.device, recorded, self.amp)
        self.precision_by = (recorded or {}).get("chosen_by", "rule")
