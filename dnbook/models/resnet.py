"""ResNet-18 and ResNet-34 (He et al., 2016) with a pluggable normalization layer.

The ImageNet form has exactly the module tree of ``torchvision.models.resnet18`` / ``resnet34``
(same names, shapes and order), so torchvision's state dict loads into it and both give the same
outputs (``tests/test_models.py`` checks this). With ``norm="bn"`` and 100 classes they have
11,227,812 and 21,335,972 parameters, the paper's 11.22M and 21.33M.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dnbook.models._layers import NormArg, Stem, conv_layer, resolve_norm

BASE_WIDTHS = (64, 128, 256, 512)  # channels of the four stages at width_mult=1


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers plus a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``.

    When the block changes resolution or width, the shortcut is a strided 1x1 conv followed by a
    norm layer (``downsample``), as in torchvision; otherwise it is the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        norm: Callable[[int], nn.Module],
        conv: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv_layer(conv, in_channels, out_channels, 3, stride=stride)
        self.bn1 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv_layer(conv, out_channels, out_channels, 3)
        self.bn2 = norm(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                conv_layer(conv, in_channels, out_channels, 1, stride=stride),
                norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages; see :func:`resnet18` for the arguments.

    ``blocks_per_stage`` is ``(2, 2, 2, 2)`` for ResNet-18 and ``(3, 4, 6, 3)`` for ResNet-34.
    Like torchvision's default, the last norm of each block is not zero-initialized: every norm
    layer initializes itself.
    """

    def __init__(
        self,
        blocks_per_stage: tuple[int, int, int, int],
        num_classes: int = 100,
        norm: NormArg = "bn",
        width_mult: float = 1.0,
        stem: Stem = "imagenet",
    ) -> None:
        super().__init__()
        norm_factory, conv = resolve_norm("ResNet", norm, stem)
        self.stem = stem
        self.width_mult = width_mult
        widths = [max(1, round(base * width_mult)) for base in BASE_WIDTHS]

        # ImageNet: a 7x7 stride-2 conv, then a 3x3 stride-2 max-pool: 224x224 -> 56x56.
        # CIFAR: on 32x32 input that stem would leave 8x8 after two layers and 1x1 in the last
        # stage; a 3x3 stride-1 conv and no pooling (the usual CIFAR ResNet stem) keep 32x32
        # into stage 1 and 4x4 into the global pool.
        imagenet = stem == "imagenet"
        kernel_size, stride = (7, 2) if imagenet else (3, 1)
        self.conv1 = conv_layer(conv, 3, widths[0], kernel_size, stride=stride)
        self.bn1 = norm_factory(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else nn.Identity()

        # The first block of a stage changes the width and, from the second stage on, halves
        # the resolution; the others keep both.
        stages = []
        in_channels = widths[0]
        for index, (width, num_blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            first = BasicBlock(
                in_channels, width, 1 if index == 0 else 2, norm=norm_factory, conv=conv
            )
            rest = (
                BasicBlock(width, width, norm=norm_factory, conv=conv)
                for _ in range(num_blocks - 1)
            )
            stages.append(nn.Sequential(first, *rest))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        # torchvision keeps PyTorch's default Linear init for the ResNet classifier; so do we.
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, w0, H/4, W/4); H, W for CIFAR
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, w3, H/32, W/32); H/8
        x = torch.flatten(self.avgpool(x), 1)  # (N, w3)
        return self.fc(x)

    def extra_repr(self) -> str:
        return f"stem={self.stem!r}, width_mult={self.width_mult}"


_RESNET_DOC = """{name} whose every BatchNorm is replaced by ``norm``.

    Args:
        num_classes: size of the classifier's output. Default: 100 (ImageNet-100, CIFAR-100).
        norm: a :func:`dnbook.norms.make_norm` spec (``"bn"``, ``"gn:groups=8"``,
            ``"dnb:r=16,g=oup"``, ...) or a ``channels -> nn.Module`` callable. Default: ``"bn"``.
            The convs come from the factory's ``conv_layer`` (weight-centralized ``CenConv2d``
            for ``"mabn"``), plain ``nn.Conv2d`` otherwise.
        width_mult: multiplies the stage widths 64/128/256/512 (rounded to the nearest integer,
            at least 1); the stem has the first stage's width. Default: 1.0 (torchvision's).
        stem: ``"imagenet"`` is torchvision's stem (7x7 stride-2 conv, 3x3 stride-2 max-pool),
            for 224x224 input. ``"cifar"`` is for 32x32 input: a 3x3 stride-1 conv and no
            max-pool (``maxpool`` is an ``nn.Identity``), so the total stride is 8 instead of 32
            and the last stage sees a 4x4 map instead of 1x1. Default: ``"imagenet"``.

    Shape:
        - Input: :math:`(N, 3, H, W)`
        - Output: :math:`(N, \\text{{num\\_classes}})`

    Example::

        >>> model = {func}(num_classes=10, norm="gn:groups=8", stem="cifar")
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """


def resnet18(
    num_classes: int = 100,
    norm: NormArg = "bn",
    width_mult: float = 1.0,
    stem: Stem = "imagenet",
) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes, norm, width_mult, stem)


def resnet34(
    num_classes: int = 100,
    norm: NormArg = "bn",
    width_mult: float = 1.0,
    stem: Stem = "imagenet",
) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes, norm, width_mult, stem)


resnet18.__doc__ = _RESNET_DOC.format(name="ResNet-18", func="resnet18")
resnet34.__doc__ = _RESNET_DOC.format(name="ResNet-34", func="resnet34")
