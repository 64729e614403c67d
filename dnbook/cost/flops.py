"""Parameters and Mult-Adds of a model.

Mult-Adds are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which
records 2 FLOPs per multiply-add of every matmul and convolution it sees (``mm``, ``addmm``,
``bmm``, ``convolution``, ...), so Mult-Adds = FLOPs / 2. Elementwise work (norms, activations,
pooling, the residual adds, biases) is not counted. This is the convention of the paper's tables:
torchvision's MobileNetV2 with 100 classes gives exactly its 299.62M at 224x224.

FlopCounterMode only counts the ops it knows. A layer that computes an FC by a broadcast
multiply and a sum (an ``einsum`` can lower to one) is silently counted as zero, which is why
``tests/test_complexity.py`` checks, with :func:`count_by_module`, that every norm layer's
SC-module FCs are counted. Parameters of a named model are counted on the ``meta`` device
(:func:`count_params`: shapes without values, nothing initialized); :func:`num_params` counts
those of a built model, the one count the trainer and the tables share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnbook.models import build_model

InputSize = tuple[int, ...]
IMAGENET_INPUT: InputSize = (1, 3, 224, 224)


@dataclass(frozen=True)
class ModelCost:
    """A model's size: ``params`` parameters and ``mult_adds`` multiply-adds per forward pass."""

    params: int
    mult_adds: int

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def mult_adds_m(self) -> float:
        """Mult-Adds in millions."""
        return self.mult_adds / 1e6


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; every module's own mode is restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _count(model: nn.Module, input_size: InputSize) -> FlopCounterMode:
    """Run ``model`` once in eval mode on a random input under a FlopCounterMode; return it."""
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else None
    dtype = reference.dtype if reference is not None else None
    x = torch.randn(input_size, device=device, dtype=dtype)
    with _inference(model), FlopCounterMode(display=False) as counter:
        model(x)
    return counter


def profile(model: nn.Module, input_size: InputSize = IMAGENET_INPUT) -> ModelCost:
    """Parameters and Mult-Adds of one forward pass of ``model`` on a ``input_size`` input.

    The model runs once in eval mode under ``torch.no_grad()`` (its modes are restored after), so
    Mult-Adds are per batch of ``input_size[0]`` images; the paper's tables use batch 1.

    Example::

        >>> from dnbook.models import mobilenet_v2
        >>> p = profile(mobilenet_v2(num_classes=100))
        >>> p.params, p.mult_adds
        (2351972, 299622272)
    """
    params = num_params(model)
    flops = _count(model, input_size).get_total_flops()
    return ModelCost(params=params, mult_adds=flops // 2)


def count_by_module(model: nn.Module, input_size: InputSize = IMAGENET_INPUT) -> dict[str, int]:
    """Mult-Adds of one forward pass under every submodule, by qualified name (``""``: the model).

    Each module's count includes its children's, as in FlopCounterMode's module hierarchy; a
    module that ran no counted op has 0.

    Example::

        >>> from dnbook.models import resnet18
        >>> counts = count_by_module(resnet18(num_classes=100))
        >>> counts["fc"]  # 512 * 100
        51200
    """
    by_tracker_name = _count(model, input_size).get_flop_counts()
    # FlopCounterMode names modules "<root class>.<qualified name>" ("ResNet.layer1.0.conv1").
    # Its "Global" entry (the total) repeats the model's own entry and is skipped.
    root = type(model).__name__
    counts = {name: 0 for name, _ in model.named_modules()}
    for tracker_name, flops_by_op in by_tracker_name.items():
        if tracker_name == root or tracker_name.startswith(root + "."):
            counts[tracker_name[len(root) + 1 :]] = sum(flops_by_op.values()) // 2
    return counts


def profile_model(
    name: str, norm: str = "bn", num_classes: int = 100, input_size: InputSize = IMAGENET_INPUT
) -> ModelCost:
    """:func:`profile` of ``build_model(name, num_classes=num_classes, norm=norm)``, cached, so a
    session profiles each configuration once."""
    return _cached_profile(name, norm, num_classes, tuple(input_size))


@cache
def _cached_profile(name: str, norm: str, num_classes: int, input_size: InputSize) -> ModelCost:
    # Called with all four arguments positionally, so that equal calls share one cache entry.
    return profile(build_model(name, num_classes=num_classes, norm=norm), input_size)


def count_params(name: str, norm: str = "bn", num_classes: int = 100) -> int:
    """Parameters of ``build_model(name, num_classes=num_classes, norm=norm)``, counted on the
    ``meta`` device: shapes without values, so nothing is initialized or allocated."""
    with torch.device("meta"):
        network = build_model(name, num_classes=num_classes, norm=norm)
    return num_params(network)


def num_params(model: nn.Module) -> int:
    """Parameters of ``model`` (every element of every parameter, shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())
