"""Pieces shared by the models: resolving the norm argument and building initialized convs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from dnbook.norms import make_norm

# A model's norm argument: a spec string or a ``channels -> module`` callable.
NormArg = str | Callable[[int], nn.Module]
Stem = Literal["imagenet", "cifar"]
STEMS = ("imagenet", "cifar")


def resolve_norm(model: str, norm: NormArg, stem: str) -> tuple[Callable, type[nn.Conv2d]]:
    """Return ``(norm_factory, conv_class)`` for a model's ``norm`` and check its ``stem``.

    The spec is resolved once and the same factory is handed to every block (timm style). The
    conv class is the factory's ``conv_layer`` (MABN's weight-centralized ``CenConv2d``; else
    ``nn.Conv2d``).
    """
    if stem not in STEMS:
        raise ValueError(f"{model}: expected stem one of {STEMS}, got {stem!r}")
    norm_factory = make_norm(norm)
    return norm_factory, norm_factory.conv_layer


def conv_layer(
    conv: type[nn.Conv2d],
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
) -> nn.Conv2d:
    """A bias-free conv with "same" padding, Kaiming-normal (fan_out) initialized as torchvision
    does. Initializing here, where the conv is built, leaves every norm layer (and any conv or FC
    inside one) to initialize itself."""
    layer = conv(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=(kernel_size - 1) // 2,
        groups=groups,
        bias=False,
    )
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layer
