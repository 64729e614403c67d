"""A plain CNN (no shortcuts) with a pluggable norm layer: the testbed of chapters 1 and 2.

Five 3x3 convolutions of widths ``w, 2w, 2w, 4w, 4w`` (``w = 64 * width_mult``), the second and
fourth with stride 2, each followed by a norm layer and ReLU, then global average pooling and a
linear classifier. Small enough to train on full CIFAR-10 in minutes on two CPU cores, and with
no shortcut that could carry the signal past a badly scaled layer, so that what a norm layer
does to training shows plainly. ``norm="none"`` puts no norm layer (``nn.Identity``) and gives
the convolutions a bias, which a norm layer's mean subtraction would otherwise cancel.
"""

from __future__ import annotations

import torch
from torch import nn

from dnbook.models._layers import NormArg, Stem, conv_layer, resolve_norm

BASE_WIDTHS = (64, 128, 128, 256, 256)  # channels of the five convs at width_mult=1
STRIDES = (1, 2, 1, 2, 1)


class PlainCNN(nn.Module):
    """Five conv-norm-ReLU layers, global average pooling, a linear classifier.

    Args:
        num_classes: size of the classifier's output. Default: 10
        norm: a :func:`dnbook.norms.make_norm` spec (``"bn"``, ``"gn:groups=8"``, ``"mabn"``,
            ``"none"``, ...) or a ``channels -> nn.Module`` callable. Default: ``"bn"``. The
            convs come from the factory's ``conv_layer`` (``CenConv2d`` for ``"mabn"``).
        width_mult: multiplies the widths 64/128/128/256/256 (rounded, at least 1).
            Default: 1.0
        stem: accepted for the common builder signature; only ``"cifar"`` (32x32 input, no
            early downsampling) makes sense for this network. Default: ``"cifar"``

    Shape:
        - Input: :math:`(N, 3, H, W)`
        - Output: :math:`(N, \\text{num\\_classes})`; the last conv sees an
          :math:`H/4 \\times W/4` map (8x8 for CIFAR-10).

    Example::

        >>> model = PlainCNN(norm="none", width_mult=0.5)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> model.features[0].bias is not None  # no norm layer: the convs get a bias
        True
    """

    def __init__(
        self,
        num_classes: int = 10,
        norm: NormArg = "bn",
        width_mult: float = 1.0,
        stem: Stem = "cifar",
    ) -> None:
        super().__init__()
        norm_factory, conv = resolve_norm("PlainCNN", norm, stem)
        no_norm = getattr(norm_factory, "name", None) == "none"
        self.width_mult = width_mult
        widths = [max(1, round(base * width_mult)) for base in BASE_WIDTHS]
        layers: list[nn.Module] = []
        in_channels = 3
        for width, stride in zip(widths, STRIDES, strict=True):
            layer = conv_layer(conv, in_channels, width, 3, stride=stride)
            if no_norm:  # the bias a norm layer's mean subtraction would cancel
                layer.bias = nn.Parameter(torch.zeros(width))
            layers += [layer, norm_factory(width), nn.ReLU(inplace=True)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 4w, H/4, W/4)
        return self.fc(torch.flatten(self.pool(x), 1))  # (N, num_classes)

    def extra_repr(self) -> str:
        return f"width_mult={self.width_mult}"


def plain_cnn(
    num_classes: int = 10,
    norm: NormArg = "bn",
    width_mult: float = 1.0,
    stem: Stem = "cifar",
) -> PlainCNN:
    """:class:`PlainCNN` (the builder of ``build_model("plain_cnn", ...)``)."""
    return PlainCNN(num_classes, norm, width_mult, stem)
