"""MobileNetV2 (Sandler et al., 2018) with a pluggable normalization layer.

The ImageNet form has exactly the module tree of ``torchvision.models.mobilenet_v2``: the same
submodule names, shapes and order, so torchvision's state dict loads into it and the two give the
same outputs (``tests/test_models.py`` checks both). With ``norm="bn"`` and 100 classes it has
2,351,972 parameters and 299,622,272 Mult-Adds at 224x224, the paper's 2.35M and 299.62M.

The paper swaps every BatchNorm of this network for its Dynamic Normalization, so the norm layer is
a constructor argument: a :func:`dnbook.norms.make_norm` spec such as ``"dnb:r=16,g=1"`` or any
``channels -> nn.Module`` callable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dnbook.models._layers import NormArg, Stem, conv_layer, resolve_norm

# One row per stage: (expansion t, output channels c, blocks n, stride of the first block s),
# Table 2 of the MobileNetV2 paper.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of ``divisor`` (torchvision's rule).

    The result is at least ``divisor`` and never more than 10% below ``value``: rounding that
    would lose more than that is bumped up by one ``divisor``.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> ReLU6, the unit MobileNetV2 is built from; padding keeps "same" size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        norm: Callable[[int], nn.Module],
        conv: type[nn.Conv2d] = nn.Conv2d,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            conv_layer(conv, in_channels, out_channels, kernel_size, stride=stride, groups=groups),
            norm(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion -> 3x3 depthwise -> 1x1 linear projection.

    The expansion is skipped when ``expand_ratio`` is 1. The projection has no activation (the
    "linear bottleneck"), and the input is added back when the block keeps shape (stride 1 and
    as many output as input channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        *,
        norm: Callable[[int], nn.Module],
        conv: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: expected stride 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.stride = stride
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, norm=norm, conv=conv))
        layers += [
            ConvNormAct(hidden, hidden, 3, norm=norm, conv=conv, stride=stride, groups=hidden),
            conv_layer(conv, hidden, out_channels, 1),
            norm(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out

    def extra_repr(self) -> str:
        return f"stride={self.stride}, use_residual={self.use_residual}"


class MobileNetV2(nn.Module):
    """MobileNetV2 with a pluggable norm layer; see :func:`mobilenet_v2` for the arguments."""

    def __init__(
        self,
        num_classes: int = 100,
        norm: NormArg = "bn",
        width_mult: float = 1.0,
        stem: Stem = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        norm_factory, conv = resolve_norm("MobileNetV2", norm, stem)
        self.stem = stem
        self.width_mult = width_mult

        channels = make_divisible(STEM_CHANNELS * width_mult)
        # The head never shrinks below 1280 channels, only grows with width_mult > 1.
        self.last_channel = make_divisible(HEAD_CHANNELS * max(1.0, width_mult))
        # CIFAR: 32x32 input cannot afford the ImageNet downsampling (32x overall, leaving a 1x1
        # map before pooling), so the stem conv and the first stride-2 stage run at stride 1:
        # 8x overall, a 4x4 final map.
        cifar = stem == "cifar"
        layers: list[nn.Module] = [
            ConvNormAct(3, channels, 3, norm=norm_factory, conv=conv, stride=1 if cifar else 2)
        ]
        first_downsampling_stage = next(i for i, (_, _, _, s) in enumerate(STAGES) if s == 2)
        for index, (expand_ratio, base_channels, num_blocks, stride) in enumerate(STAGES):
            if cifar and index == first_downsampling_stage:
                stride = 1
            out_channels = make_divisible(base_channels * width_mult)
            # The first block of a stage changes width and stride; the others keep both.
            for block_stride in [stride] + [1] * (num_blocks - 1):
                block = InvertedResidual(
                    channels, out_channels, block_stride, expand_ratio, norm=norm_factory, conv=conv
                )
                layers.append(block)
                channels = out_channels
        layers.append(ConvNormAct(channels, self.last_channel, 1, norm=norm_factory, conv=conv))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        # torchvision's classifier init; convs were initialized where they were built, and the
        # norm layers initialize themselves.
        nn.init.normal_(self.classifier[1].weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, last_channel, H/32, W/32); H/8, W/8 for the CIFAR stem
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, last_channel)
        return self.classifier(x)

    def extra_repr(self) -> str:
        return f"stem={self.stem!r}, width_mult={self.width_mult}"


def mobilenet_v2(
    num_classes: int = 100,
    norm: NormArg = "bn",
    width_mult: float = 1.0,
    stem: Stem = "imagenet",
) -> MobileNetV2:
    """MobileNetV2 whose every BatchNorm is replaced by ``norm``.

    Args:
        num_classes: size of the classifier's output. Default: 100 (ImageNet-100, CIFAR-100).
        norm: a :func:`dnbook.norms.make_norm` spec (``"bn"``, ``"gn:groups=8"``,
            ``"dnb:r=16,g=1"``, ...) or a ``channels -> nn.Module`` callable. Default: ``"bn"``.
            The convs come from the factory's ``conv_layer`` (weight-centralized ``CenConv2d``
            for ``"mabn"``), plain ``nn.Conv2d`` otherwise.
        width_mult: multiplies every channel count, rounded to a multiple of 8 as in torchvision;
            the 1280-channel head only grows (for ``width_mult > 1``). Default: 1.0.
        stem: ``"imagenet"`` is torchvision's network (stride 32, for 224x224 input).
            ``"cifar"`` is for 32x32 input: the first conv and the first stride-2 stage (24
            channels) use stride 1, so the total stride is 8 and the last feature map is 4x4
            instead of 1x1, which would leave the last 14 layers nothing spatial to work on.
            Default: ``"imagenet"``.

    Shape:
        - Input: :math:`(N, 3, H, W)`
        - Output: :math:`(N, \\text{num\\_classes})`

    Example::

        >>> model = mobilenet_v2(num_classes=10, norm="dnb:r=16,g=1", stem="cifar")
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return MobileNetV2(num_classes=num_classes, norm=norm, width_mult=width_mult, stem=stem)
