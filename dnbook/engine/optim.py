"""The optimizer of a run: SGD with momentum over parameter groups that exempt norm layers and
biases from weight decay, and the learning-rate schedule (linear warm-up, then cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dnbook.engine.config import TrainConfig
from dnbook.norms.factory import is_norm_module


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


def sgd(
    net: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over :func:`param_groups` of ``net`` and its :class:`WarmupCosine` schedule, as
    ``config`` asks, for a run of ``steps_per_epoch`` optimizer steps per epoch: the cosine
    ends at the run's true last step, :meth:`TrainConfig.total_steps` (a fractional
    ``epochs`` included), and the warm-up lasts ``round(warmup_epochs * steps_per_epoch)``."""
    total_steps = config.total_steps(steps_per_epoch)
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    optimizer = torch.optim.SGD(
        param_groups(net, config.weight_decay, config.norm_weight_decay),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(warmup_steps, total_steps)
    )
    return optimizer, scheduler
