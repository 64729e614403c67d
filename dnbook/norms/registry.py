"""The registry of norm layers by name, :data:`NORM_SPECS`, and the grammar of a spec string
(``"gn:groups=8"``, ``"dnb:r=16,g=1"``): every name, its options, their defaults (read from
the layers' own signatures, so the two cannot drift apart) and the values they accept;
:func:`parse_spec`, the canonical and hashed forms of a spec, and :func:`is_norm_module`.
Building layers from a spec is :mod:`dnbook.norms.factory`'s.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from torch import nn

from dnbook.norms._validation import check_choice, check_fraction, check_int, check_positive_int
from dnbook.norms.batchnorm import BatchNorm2d
from dnbook.norms.dynamic import (
    ACTIVATIONS,
    FC2_INITS,
    MERGES,
    SC_INPUTS,
    SCALES,
    SHIFTS,
    DynamicNorm2d,
)
from dnbook.norms.grouped_fc import check_group_size
from dnbook.norms.groupnorm import GroupNorm
from dnbook.norms.mabn import CenConv2d, MABN2d
from dnbook.norms.squeeze_excitation import SEBatchNorm2d, SqueezeExcitation


@dataclass(frozen=True)
class Option:
    """One option of a spec: the layer keyword it sets, its default and the values it accepts.

    ``check(name, value)`` returns the (possibly converted) value or raises ``ValueError``.
    ``shown`` options are always written in the canonical spec; the others only when they
    differ from the default. ``legacy``, for an option added after results were stored: the
    value every stored result had; the config hash leaves the option out at that value (see
    :func:`hashed_options`), so stored results keep their names whatever the default becomes.
    """

    kwarg: str
    default: object
    accepts: str
    check: Callable[[str, object], object]
    shown: bool = False
    legacy: object = None  # None: the option is as old as the stored results

    def describe(self, key: str) -> str:
        return f"{key}=<{self.accepts}> (default {_format_value(self.default)})"


@dataclass(frozen=True)
class NormSpec:
    """A named norm: what it builds, its options, the convolution a model should use, and the
    layer classes it builds (the trainer keeps weight decay off them, see
    :func:`is_norm_module`)."""

    description: str
    build: Callable[..., nn.Module]  # build(channels, **{option.kwarg: value})
    options: dict[str, Option] = field(default_factory=dict)
    conv_layer: type[nn.Conv2d] = nn.Conv2d
    layers: tuple[type[nn.Module], ...] = ()


def _default(layer: Callable, kwarg: str) -> object:
    return inspect.signature(layer).parameters[kwarg].default


def _choice(*choices: str) -> Callable[[str, object], object]:
    return lambda name, value: check_choice(name, value, choices)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _check_non_negative_int(name: str, value: object) -> int:
    return check_int(name, value, minimum=0)


def _check_fraction(name: str, value: object) -> float:
    return float(check_fraction(name, value))


def _option(layer, kwarg, accepts, check, shown=False) -> Option:
    """An option whose default is the ``layer``'s own default for ``kwarg``."""
    return Option(kwarg, _default(layer, kwarg), accepts, check, shown)


# Every build passes the channel count by keyword: the layers' positional orders differ
# (GroupNorm, like PyTorch's, takes the number of groups first).


def _build_bn(channels: int, impl: str) -> nn.Module:
    layer = nn.BatchNorm2d if impl == "torch" else BatchNorm2d
    return layer(num_features=channels)


def _build_gn(channels: int, num_groups: int) -> GroupNorm:
    # Channel counts of real networks (MobileNetV2's 16, 24, 144, ...) are often not divisible
    # by the requested number of groups; gcd(channels, groups) is the largest group count that
    # divides the channels and does not exceed the request (16 channels, groups=32 -> 16).
    return GroupNorm(num_groups=math.gcd(channels, num_groups), num_channels=channels)


# GroupNorm's number of groups has no default (as in PyTorch); the spec's default is 32.
GN_DEFAULT_GROUPS = 32


def _build_mabn(channels: int, **kwargs: object) -> MABN2d:
    return MABN2d(num_features=channels, **kwargs)


def _build_se(channels: int, **kwargs: object) -> SEBatchNorm2d:
    return SEBatchNorm2d(num_features=channels, **kwargs)


def _dn_options(mode: str) -> dict[str, Option]:
    """DynamicNorm2d's options; DN-C has ``merge`` and, by definition, no ``input``."""
    options = {
        "r": _option(DynamicNorm2d, "r", "positive int", check_positive_int, shown=True),
        "g": _option(
            DynamicNorm2d,
            "g",
            "positive int or oup",
            lambda name, value: check_group_size(value),
            shown=mode == "B",
        ),
        "merge": _option(DynamicNorm2d, "merge", "|".join(MERGES), _choice(*MERGES), shown=True),
        "act": _option(DynamicNorm2d, "activation", "|".join(ACTIVATIONS), _choice(*ACTIVATIONS)),
        "scale": _option(DynamicNorm2d, "scale", "|".join(SCALES), _choice(*SCALES)),
        "shift": _option(DynamicNorm2d, "shift", "|".join(SHIFTS), _choice(*SHIFTS)),
        "input": _option(DynamicNorm2d, "sc_input", "|".join(SC_INPUTS), _choice(*SC_INPUTS)),
        "detach": _option(DynamicNorm2d, "detach_sc_input", "true|false", _check_bool),
        "init": _option(DynamicNorm2d, "fc2_init", "|".join(FC2_INITS), _choice(*FC2_INITS)),
        # added after the stored results, whose layers had no FC1 bias
        "fc1_bias": Option(
            "fc1_bias", _default(DynamicNorm2d, "fc1_bias"), "true|false", _check_bool, legacy=False
        ),
        # the book's own variant (issue 14), added after the stored results too
        "base_affine": Option(
            "base_affine",
            _default(DynamicNorm2d, "base_affine"),
            "true|false",
            _check_bool,
            legacy=False,
        ),
    }
    del options["merge" if mode == "B" else "input"]
    return options


def _build_dn(mode: str) -> Callable[..., DynamicNorm2d]:
    return lambda channels, **kwargs: DynamicNorm2d(num_features=channels, mode=mode, **kwargs)


def _build_none(channels: int) -> nn.Module:
    return nn.Identity()


NORM_SPECS: dict[str, NormSpec] = {
    "none": NormSpec("No normalization (nn.Identity): the baseline of chapter 1", _build_none),
    "bn": NormSpec(
        "BatchNorm: torch.nn.BatchNorm2d (impl=torch) or dnbook's BatchNorm2d (impl=scratch)",
        _build_bn,
        {"impl": Option("impl", "torch", "torch|scratch", _choice("torch", "scratch"))},
        layers=(nn.BatchNorm2d, BatchNorm2d),
    ),
    "gn": NormSpec(
        "GroupNorm with `groups` groups (gcd(channels, groups) where they do not divide)",
        _build_gn,
        {
            "groups": Option(
                "num_groups", GN_DEFAULT_GROUPS, "positive int", check_positive_int, shown=True
            )
        },
        layers=(GroupNorm,),
    ),
    "mabn": NormSpec(
        "Moving Average BatchNorm over `buffer` iterations, with CenConv2d convolutions",
        _build_mabn,
        {
            "buffer": _option(MABN2d, "buffer_size", "positive int", check_positive_int, True),
            "warmup": _option(MABN2d, "warmup_iters", "int >= 0", _check_non_negative_int),
            "momentum": _option(MABN2d, "momentum", "number in [0, 1]", _check_fraction),
        },
        conv_layer=CenConv2d,
        layers=(MABN2d,),
    ),
    "se": NormSpec(
        "Squeeze-and-Excitation then BatchNorm (the DN paper's eq. 3-5)",
        _build_se,
        {"r": _option(SEBatchNorm2d, "r", "positive int", check_positive_int, shown=True)},
        layers=(SEBatchNorm2d, SqueezeExcitation),
    ),
    "dnb": NormSpec(
        "Dynamic Normalization DN-B: alpha, lambda per sample and channel",
        _build_dn("B"),
        _dn_options("B"),
        layers=(DynamicNorm2d,),
    ),
    "dnc": NormSpec(
        "Dynamic Normalization DN-C: alpha, lambda per channel from E[X] and Std[X]",
        _build_dn("C"),
        _dn_options("C"),
        layers=(DynamicNorm2d,),
    ),
}

# Every normalization layer class: torch's, and each spec's (a new norm is registered once,
# in NORM_SPECS, and the trainer sees it).
NORM_LAYERS: tuple[type[nn.Module], ...] = tuple(
    dict.fromkeys(
        chain(
            (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm),
            chain.from_iterable(spec.layers for spec in NORM_SPECS.values()),
        )
    )
)


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer, torch's or one a spec builds (their
    SC-modules are their submodules)."""
    return isinstance(module, NORM_LAYERS)


def _parse_value(text: str) -> bool | int | float | str:
    """``"true"``/``"false"`` -> bool, then int, then float, else the string itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _format_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _valid_names() -> str:
    return ", ".join(NORM_SPECS)


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Split a spec into its norm name and all its options, defaults filled in.

    Example:
        >>> name, options = parse_spec("dnb:g=oup,r=4")
        >>> name, options["r"], options["g"], options["act"]
        ('dnb', 4, 'oup', 'relu')
    """
    if not isinstance(spec, str):
        raise ValueError(f"a norm spec must be a string, got {spec!r}")
    name, has_options, option_text = spec.strip().partition(":")
    name = name.strip()
    if name not in NORM_SPECS:
        raise ValueError(f"unknown norm {name!r} in spec {spec!r}; valid names: {_valid_names()}")
    valid = NORM_SPECS[name].options
    valid_text = "; ".join(option.describe(key) for key, option in valid.items()) or "none"
    given: dict[str, object] = {}
    for item in option_text.split(",") if has_options else ():
        key, has_value, text = (part.strip() for part in item.partition("="))
        if not has_value or not key or not text:
            raise ValueError(
                f"bad option {item!r} in spec {spec!r}: expected key=value; "
                f"valid options of {name}: {valid_text}"
            )
        if key not in valid:
            raise ValueError(
                f"unknown option {key!r} in spec {spec!r}; valid options of {name}: {valid_text}"
            )
        if key in given:
            raise ValueError(f"option {key!r} given twice in spec {spec!r}")
        try:
            given[key] = valid[key].check(key, _parse_value(text))
        except ValueError as error:
            raise ValueError(f"bad value in spec {spec!r}: {error}") from None
    return name, {key: given.get(key, option.default) for key, option in valid.items()}


def with_option(spec: str, name: str, option: str) -> str:
    """``spec`` with ``option`` (``"key=value"``) added if its norm is ``name`` and it does not
    set ``key`` itself; any other spec unchanged.

    Example:
        >>> with_option("dnb:r=16,g=1", "dnb", "input=normalized")
        'dnb:r=16,g=1,input=normalized'
        >>> with_option("dnb:r=16,g=1,input=raw", "dnb", "input=normalized")
        'dnb:r=16,g=1,input=raw'
    """
    norm, _, text = spec.partition(":")
    given = {item.partition("=")[0].strip() for item in text.split(",") if item.strip()}
    if norm.strip() != name or option.partition("=")[0] in given:
        return spec
    return f"{spec},{option}" if given else f"{norm.strip()}:{option}"


def hashed_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """The options a config hash expands: all, less those at their ``legacy`` value."""
    declared = NORM_SPECS[name].options
    return {
        key: value
        for key, value in options.items()
        if declared[key].legacy is None or value != declared[key].legacy
    }


def canonical_spec(name: str, options: dict[str, object]) -> str:
    """The spec in canonical form: declared option order, defaults written only if ``shown``.

    Example:
        >>> canonical_spec(*parse_spec("dnb:g=1,r=16,act=relu"))
        'dnb:r=16,g=1'
    """
    declared = NORM_SPECS[name].options
    written = [
        f"{key}={_format_value(value)}"
        for key, value in options.items()
        if declared[key].shown or value != declared[key].default
    ]
    return f"{name}:{','.join(written)}" if written else name
