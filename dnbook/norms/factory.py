"""Norm layers by name: spec strings such as ``"bn"``, ``"gn:groups=8"`` or ``"dnb:r=16,g=1"``.

A *spec* is a norm name, optionally followed by ``:`` and comma-separated ``key=value`` options::

    none                   no normalization (nn.Identity): the baseline of chapter 1
    bn                     torch.nn.BatchNorm2d (the fast reference)
    bn:impl=scratch        dnbook's BatchNorm2d, written from the equations
    gn:groups=8            GroupNorm
    mabn:buffer=4          MABN, with CenConv2d as the model's convolution
    se:r=16                Squeeze-and-Excitation, then BN (the DN paper's eq. 3-5)
    dnb:r=16,g=1           DN-B
    dnc:r=16,merge=fc2     DN-C

``make_norm(spec)`` turns a spec into a :class:`NormFactory` (``channels -> nn.Module``), which
models call once per norm layer; ``convert_norm(model, spec)`` swaps the BatchNorm2d layers of
any existing model. Every option, its default and the values it accepts are in ``NORM_SPECS``;
a bad spec raises ``ValueError`` listing the valid names or options. The names, options and
their defaults are :mod:`dnbook.norms.registry`'s; this module builds layers from them.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

from torch import nn

from dnbook.norms.batchnorm import BatchNorm2d
from dnbook.norms.registry import GN_DEFAULT_GROUPS as GN_DEFAULT_GROUPS
from dnbook.norms.registry import NORM_LAYERS as NORM_LAYERS
from dnbook.norms.registry import NORM_SPECS as NORM_SPECS
from dnbook.norms.registry import NormSpec as NormSpec
from dnbook.norms.registry import Option as Option
from dnbook.norms.registry import canonical_spec as canonical_spec
from dnbook.norms.registry import hashed_options as hashed_options
from dnbook.norms.registry import is_norm_module as is_norm_module
from dnbook.norms.registry import parse_spec
from dnbook.norms.squeeze_excitation import SEBatchNorm2d


class NormFactory:
    """A ``channels -> nn.Module`` callable for one norm configuration (see :func:`make_norm`).

    Attributes:
        spec: the canonical spec string (equal specs give equal strings), or for a wrapped
            callable its name.
        name: the norm's name in ``NORM_SPECS``, or ``"custom"`` for a wrapped callable.
        options: every option with its value (defaults filled in); empty for a callable.
        conv_layer: the convolution class a model should put before this norm:
            ``nn.Conv2d``, or ``CenConv2d`` for ``mabn`` (MABN's weight centralization).
    """

    def __init__(
        self,
        spec: str,
        name: str,
        options: dict[str, object],
        build: Callable[[int], nn.Module],
        conv_layer: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        self.spec = spec
        self.name = name
        self.options = options
        self.conv_layer = conv_layer
        self._build = build

    def __call__(self, channels: int) -> nn.Module:
        return self._build(channels)

    def __repr__(self) -> str:
        return f"NormFactory({self.spec!r}, conv_layer={self.conv_layer.__name__})"


def make_norm(spec: str | Callable[[int], nn.Module]) -> NormFactory:
    """A :class:`NormFactory` for a spec string, or wrapping a ``channels -> module`` callable.

    A callable keeps its ``conv_layer`` attribute if it has one (else ``nn.Conv2d``); a
    ``NormFactory`` is returned as is.

    Example:
        >>> factory = make_norm("dnb:r=16,g=oup")
        >>> factory
        NormFactory('dnb:r=16,g=oup', conv_layer=Conv2d)
        >>> factory(32).fc2.groups
        1
    """
    if isinstance(spec, NormFactory):
        return spec
    if callable(spec):
        label = getattr(spec, "__name__", None) or repr(spec)
        return NormFactory(label, "custom", {}, spec, getattr(spec, "conv_layer", nn.Conv2d))
    name, options = parse_spec(spec)
    norm = NORM_SPECS[name]
    kwargs = {norm.options[key].kwarg: value for key, value in options.items()}
    return NormFactory(
        canonical_spec(name, options),
        name,
        options,
        lambda channels: norm.build(channels, **kwargs),
        norm.conv_layer,
    )


# The layers convert_norm replaces.
_BATCH_NORMS = (nn.BatchNorm2d, BatchNorm2d)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` on ``old``'s device and floating dtype, in ``old``'s train/eval mode."""
    floats = (t for t in chain(old.parameters(), old.buffers()) if t.is_floating_point())
    reference = next(floats, None)
    if reference is not None:
        new = new.to(device=reference.device, dtype=reference.dtype)
    return new.train(old.training)


def _converted_conv(conv: nn.Conv2d, conv_layer: type[nn.Conv2d]) -> nn.Conv2d:
    """``conv`` rebuilt as ``conv_layer`` with the same settings and weights."""
    new = conv_layer(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    new.load_state_dict(conv.state_dict())
    return _like(new, conv)


def convert_norm(model: nn.Module, spec: str | Callable[[int], nn.Module]) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` (torch's or dnbook's) by ``make_norm(spec)``.

    Works in place, recursively, and returns the model (or, if ``model`` is itself a
    BatchNorm2d, its replacement). New layers are freshly initialized, on the old layer's
    device and dtype and in its train/eval mode. If the spec asks for a special convolution
    (``mabn``: ``CenConv2d``), every plain ``nn.Conv2d`` is rebuilt as one, keeping its
    weights, so that a converted model matches dnbook's own model built with that spec.
    ``SEBatchNorm2d`` layers are left whole (the BatchNorm inside them is part of the layer).

    Example:
        >>> import torchvision
        >>> model = convert_norm(torchvision.models.resnet18(num_classes=10), "dnb:r=16,g=oup")
        >>> type(model.bn1).__name__
        'DynamicNorm2d'
    """
    factory = make_norm(spec)
    if isinstance(model, _BATCH_NORMS):
        return _like(factory(model.num_features), model)
    if type(model) is nn.Conv2d and factory.conv_layer is not nn.Conv2d:
        return _converted_conv(model, factory.conv_layer)
    if not isinstance(model, SEBatchNorm2d):
        for child_name, child in model.named_children():
            setattr(model, child_name, convert_norm(child, factory))
    return model
