"""DN-B's SC-module over training: how often alpha and lambda sit at their bounds, and how
many of FC1's units are dead, measured on one fixed batch every ``PROBE_EVERY`` steps.

Chapter 10 found, in models that had not learned, that alpha = 2 sigmoid(s) was often pinned
near 0 (the channel erased) and asked whether saturation is what stops DN-B at high learning
rates. This probe puts the question to every DN-B run the trainer trains: the measurements go
into the result's ``saturation`` record, at lr* and 2.5 lr* alike, so the two can be compared
step by step.

The probe changes nothing the run computes. It runs in eval mode (running statistics, so no
statistics are updated), under ``torch.no_grad``, on the first ``PROBE_IMAGES`` images of the
validation split (no augmentation, no random numbers drawn), and it switches each DN layer to
its step-by-step reference forward for that one pass, so that FC1's output can be read by a
forward hook; the two forwards compute the same function (``tests/test_dynamic.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dnbook.norms.dynamic import DynamicNorm2d

# Steps between two probes, and the images of the fixed probe batch.
PROBE_EVERY = 100
PROBE_IMAGES = 128
# A value within NEAR of a bound counts as saturated, as chapter 10 counts it.
NEAR = 0.02
# The bounds of alpha for each ``scale`` and of lambda for each ``shift`` (unbounded: absent).
ALPHA_BOUNDS = {"sigmoid": (0.0, 2.0), "tanh": (0.0, 2.0)}
LAMBDA_BOUNDS = {"tanh": (-1.0, 1.0)}
METRICS = ("alpha_saturated", "lambda_saturated", "fc1_dead_units", "fc1_zero_images")


def dn_b_layers(model: nn.Module) -> list[tuple[str, DynamicNorm2d]]:
    """The model's DN-B layers (DN-C has one alpha per channel, not per image), in order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, DynamicNorm2d) and module.mode == "B"
    ]


def _near_bounds(values: torch.Tensor, bounds: tuple[float, float] | None) -> list[float]:
    """[saturated count, count] of ``values`` within ``NEAR`` of either bound."""
    if bounds is None:
        return [0.0, 0.0]
    low, high = bounds
    near = (values <= low + NEAR) | (values >= high - NEAR)
    return [near.sum().item(), float(values.numel())]


def _layer_counts(layer: DynamicNorm2d, hidden: torch.Tensor) -> dict[str, list[float]]:
    """Per metric, [count, total] for one layer; ``hidden`` is FC1's output (N, C')."""
    alpha, shift = layer.last_alpha.float(), layer.last_shift.float()  # (N, C) each
    if layer.base_affine:
        # alpha = gamma f(s), lambda = beta + h(t): the bounds are f's and h's, so the
        # generated parts are measured (a gamma of exactly 0 leaves f(s) unknown: dropped)
        gamma, beta = layer.weight.detach().float(), layer.bias.detach().float()
        alpha = (alpha / gamma)[:, gamma != 0]
        shift = shift - beta
    counts = {
        "alpha_saturated": _near_bounds(alpha, ALPHA_BOUNDS.get(layer.scale)),
        "lambda_saturated": _near_bounds(shift, LAMBDA_BOUNDS.get(layer.shift)),
        "fc1_dead_units": [0.0, 0.0],
        "fc1_zero_images": [0.0, 0.0],
    }
    if layer.activation == "relu":
        # relu(h) = 0 where h <= 0: a unit dead on every image contributes nothing to any
        # alpha or lambda; an image with every unit at 0 gets alpha = 1, lambda = 0 (FC2 has no
        # bias), so on it the layer is BN with gamma = 1, beta = 0.
        off = hidden.float() <= 0  # (N, C')
        counts["fc1_dead_units"] = [off.all(dim=0).sum().item(), float(off.shape[1])]
        counts["fc1_zero_images"] = [off.all(dim=1).sum().item(), float(off.shape[0])]
    return counts


def _fractions(counts: dict[str, list[float]]) -> dict[str, float | None]:
    return {k: (round(n / total, 5) if total else None) for k, (n, total) in counts.items()}


@torch.no_grad()
def measure(
    model: nn.Module,
    images: torch.Tensor,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> dict[str, Any]:
    """The fractions of :data:`METRICS` on ``images``: pooled over every DN-B layer
    (``"all"``), and for the first and the last layer. A metric a layer cannot have (alpha
    unbounded, an FC1 activation other than ReLU) is ``None``.

    ``forward(model, images)`` runs the model as the trainer does (autocast, memory layout).
    """
    layers = dn_b_layers(model)
    if not layers:
        raise ValueError("the model has no DN-B layer to probe")
    hidden: dict[str, torch.Tensor] = {}
    saved = [
        (layer.impl, layer.record_affine, layer.last_alpha, layer.last_shift) for _, layer in layers
    ]
    hooks = [
        layer.sc_module.fc1.register_forward_hook(
            lambda _module, _inputs, output, name=name: hidden.__setitem__(name, output)
        )
        for name, layer in layers
    ]
    was_training = model.training
    model.eval()
    try:
        for _, layer in layers:
            layer.impl, layer.record_affine = "reference", True
        forward(model, images)
        per_layer = [_layer_counts(layer, hidden[name]) for name, layer in layers]
    finally:
        for hook in hooks:
            hook.remove()
        for (_, layer), state in zip(layers, saved, strict=True):
            layer.impl, layer.record_affine, layer.last_alpha, layer.last_shift = state
        model.train(was_training)
    # pooled over layers: the counts are summed, then divided
    pooled = {k: [sum(c[k][i] for c in per_layer) for i in (0, 1)] for k in METRICS}
    return {
        "all": _fractions(pooled),
        "first": _fractions(per_layer[0]),
        "last": _fractions(per_layer[-1]),
    }


class SaturationProbe:
    """Measures :func:`measure` every ``every`` steps on a fixed batch and keeps the points.

    Args:
        images: the probe batch (the trainer passes the first ``PROBE_IMAGES`` validation
            images).
        every: steps between probes. Default: ``PROBE_EVERY`` (read when the probe is made)
    """

    def __init__(self, images: torch.Tensor, every: int | None = None) -> None:
        self.images = images
        self.every = every if every is not None else PROBE_EVERY
        self.points: list[dict[str, Any]] = []

    def maybe_record(self, step: int, model: nn.Module, forward, last: bool = False) -> None:
        """Probe at step 0 (before training), every ``every`` steps after, and after the last
        step (``last``); a step already probed is skipped."""
        if (step % self.every and not last) or (self.points and self.points[-1]["step"] >= step):
            return
        self.points.append({"step": step, **measure(model, self.images, forward)})

    def record(self) -> dict[str, Any]:
        """The JSON-ready record: settings and, per group (all, first, last) and metric, the
        values at each probed step."""
        groups = ("all", "first", "last")
        return {
            "every": self.every,
            "images": len(self.images),
            "near": NEAR,
            "step": [p["step"] for p in self.points],
            **{g: {k: [p[g][k] for p in self.points] for k in METRICS} for g in groups},
        }
