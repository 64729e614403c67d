"""What the benchmark builds from a norm spec: a CIFAR-stem model (MobileNetV2 or ResNet-18) or
one layer, and the path its DynamicNorm2d layers run (``@reference``: the teaching path;
``@path=REV``: the fast path as it was at git revision ``REV``); the precision a spec asks for
(``@autocast=bf16`` or ``@autocast=off``, last); and one layer's counted memory traffic."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Sequence

import torch
from torch import nn

from dnbook.cost.traffic import layer_traffic
from dnbook.data.registry import DATASETS
from dnbook.engine.environment import REPO_ROOT
from dnbook.models import build_model
from dnbook.norms import DynamicNorm2d, make_norm
from dnbook.norms.batchnorm import update_running_stats

BASELINE = "bn"
REFERENCE_SUFFIX = "@reference"
NUM_CLASSES = DATASETS["cifar10"].num_classes
IMAGE_SIZE = 32


def use_reference_path(module: nn.Module) -> nn.Module:
    """Switch every DynamicNorm2d in ``module`` to the teaching path; return ``module``."""
    for layer in module.modules():
        if isinstance(layer, DynamicNorm2d):
            layer.impl = "reference"
    return module


PATH_PREFIX = "path="
# The fast path's files, in the order they import each other (an earlier revision may hold the
# whole path in the last one alone).
FAST_PATH_FILES = {
    "dnbook.norms.fast_passes": "dnbook/norms/fast_passes.py",
    "dnbook.norms.fast_coefficients": "dnbook/norms/fast_coefficients.py",
    "dnbook.norms.fast_dynamic": "dnbook/norms/fast_dynamic.py",
}


def _source_at(revision: str, path: str) -> str | None:
    """The text of ``path`` at git ``revision``, or ``None`` where the revision has no such file."""
    shown = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "show", f"{revision}:{path}"],
        capture_output=True,
        text=True,
    )
    return shown.stdout if shown.returncode == 0 else None


def fast_path_at(revision: str) -> types.ModuleType:
    """``dnbook.norms.fast_dynamic`` as it was at git ``revision``, loaded as a module of its
    own: each of :data:`FAST_PATH_FILES` that the revision has is run in turn, importing the
    others as they were at that revision (the fast path imports nothing else from dnbook)."""
    saved = {name: sys.modules.get(name) for name in FAST_PATH_FILES}
    module = None
    try:
        for name, path in FAST_PATH_FILES.items():
            source = _source_at(revision, path)
            if source is None:
                continue
            module = types.ModuleType(f"{name}_at_{revision}")
            sys.modules[name] = module  # what the next file's imports find
            exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)  # noqa: S102
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    if module is None or source is None:
        raise ValueError(
            f"git revision {revision!r} has no {FAST_PATH_FILES['dnbook.norms.fast_dynamic']}"
        )
    return module


def use_fast_path_at(module: nn.Module, revision: str) -> nn.Module:
    """Run every DynamicNorm2d in ``module`` through the fast path of git ``revision`` (its
    ``dynamic_norm`` functional, called as DynamicNorm2d.forward calls today's, without the
    base affine, which earlier paths lack); return ``module``."""
    functional = fast_path_at(revision).dynamic_norm

    def forward(layer: DynamicNorm2d, x: torch.Tensor) -> torch.Tensor:
        if layer.base_affine:
            raise ValueError(f"the fast path at {revision} has no base affine")
        use_batch_stats = layer.training or not layer.track_running_stats
        sc = layer.sc_module
        y, mean, var = functional(
            x, layer.running_mean, layer.running_var, sc.fc1.weight, sc.fc1.bias,
            sc.fc2.weight, use_batch_stats, layer.eps, mode=layer.mode,
            activation=layer.activation, scale=layer.scale, shift=layer.shift,
            merge=layer.merge, sc_input=layer.sc_input, detach_sc_input=layer.detach_sc_input,
        )  # fmt: skip
        if layer.training and layer.track_running_stats:
            update_running_stats(layer, mean, var, x.numel() // x.shape[1])
        return y

    for layer in module.modules():
        if isinstance(layer, DynamicNorm2d):
            layer.forward = types.MethodType(forward, layer)
    return module


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"dnb:r=16@reference"`` -> ``("dnb:r=16", "reference")``; no ``@``: ``(spec, None)``."""
    norm, at, path = spec.partition("@")
    return norm, (path if at else None)


def _use_path(module: nn.Module, path: str | None) -> nn.Module:
    """Switch ``module``'s DynamicNorm2d layers to the path a spec's suffix names."""
    if path is None:
        return module
    if path == REFERENCE_SUFFIX[1:]:
        return use_reference_path(module)
    if path.startswith(PATH_PREFIX):
        return use_fast_path_at(module, path.removeprefix(PATH_PREFIX))
    raise ValueError(f"unknown path @{path}; expected @reference or @path=<git revision>")


AUTOCAST_PREFIX = "@autocast="
AUTOCAST_CHOICES = ("off", "bf16")
MODELS = ("mobilenet_v2", "resnet18")


def split_autocast(spec: str, default: bool = False) -> tuple[str, bool]:
    """``"bn@autocast=bf16"`` -> ``("bn", True)``; ``"bn@autocast=off"`` -> ``("bn", False)``;
    without the suffix (which comes last) ``(spec, default)``."""
    rest, found, choice = spec.rpartition(AUTOCAST_PREFIX)
    if not found:
        return spec, default
    if choice not in AUTOCAST_CHOICES or not rest:
        raise ValueError(
            f"bad precision suffix in {spec!r}; expected a last {AUTOCAST_PREFIX}off or "
            f"{AUTOCAST_PREFIX}bf16"
        )
    return rest, choice == "bf16"


def build_network(
    spec: str, width: float, device: torch.device, model: str = "mobilenet_v2"
) -> nn.Module:
    """The CIFAR-stem ``model`` (one of :data:`MODELS`) with ``spec``'s norm, in training mode
    on ``device``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    norm, path = split_spec(spec)
    torch.manual_seed(0)
    network = build_model(model, num_classes=NUM_CLASSES, norm=norm, width_mult=width, stem="cifar")
    return _use_path(network, path).to(device).train()


def build_mobilenet(spec: str, width: float, device: torch.device) -> nn.Module:
    """The CIFAR-stem MobileNetV2 with ``spec``'s norm, in training mode on ``device``."""
    return build_network(spec, width, device, "mobilenet_v2")


def build_layer(spec: str, channels: int, device: torch.device) -> nn.Module:
    """One norm layer of ``spec`` with ``channels`` channels, in training mode on ``device``."""
    norm, path = split_spec(spec)
    torch.manual_seed(0)
    return _use_path(make_norm(norm)(channels), path).to(device).train()


def memory_traffic(spec: str, shape: Sequence[int]) -> dict[str, dict[str, int]]:
    """The cost model of one training forward and backward of ``spec``'s layer on ``shape``:
    kernel counts and activation-sized reads, writes and allocations
    (:func:`dnbook.cost.traffic.layer_traffic`)."""
    return layer_traffic(build_layer(spec, shape[1], torch.device("cpu")), shape)
