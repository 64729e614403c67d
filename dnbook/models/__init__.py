"""The paper's networks, MobileNetV2, ResNet-18 and ResNet-34, and the book's small plain CNN
(chapters 1 and 2), each with a pluggable norm layer.

Each builder takes ``(num_classes=100, norm="bn", width_mult=1.0, stem="imagenet")``; ``norm`` is
a :func:`dnbook.norms.make_norm` spec or a ``channels -> nn.Module`` callable. The ImageNet form
is torchvision's network module for module; ``stem="cifar"`` adapts it to 32x32 input.
``plain_cnn`` (no torchvision counterpart) defaults to 10 classes and the CIFAR form.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dnbook.models.mobilenet_v2 import InvertedResidual, MobileNetV2, mobilenet_v2
from dnbook.models.plain_cnn import PlainCNN, plain_cnn
from dnbook.models.resnet import BasicBlock, ResNet, resnet18, resnet34

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "plain_cnn": plain_cnn,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
# The paper's networks: each is torchvision's, module for module (tests/test_models.py).
PAPER_MODEL_NAMES: tuple[str, ...] = ("mobilenet_v2", "resnet18", "resnet34")


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the model called ``name`` (one of :data:`MODEL_NAMES`) with the builder's keyword
    arguments, e.g. ``build_model("resnet18", norm="dnb:r=16,g=oup", stem="cifar")``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name](**kwargs)


__all__ = [
    "MODEL_NAMES",
    "BasicBlock",
    "InvertedResidual",
    "PAPER_MODEL_NAMES",
    "MobileNetV2",
    "PlainCNN",
    "ResNet",
    "build_model",
    "mobilenet_v2",
    "plain_cnn",
    "resnet18",
    "resnet34",
]
