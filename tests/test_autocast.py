"""Norm layers under bf16 autocast and with channels_last inputs, on the CPU.

The ``gpu`` profile trains under ``torch.autocast(dtype=torch.bfloat16)`` with channels_last
tensors; these tests run the same code paths on the CPU, so that they hold without a GPU:

- each DN layer (DN-B and DN-C, fast and reference path) under autocast against the same layer
  in float32, within bf16's tolerance, with the dtypes torch.nn.BatchNorm2d gives;
- channels_last against contiguous inputs: the same numbers, the memory format kept;
- one full training step (forward, backward, SGD) of MobileNetV2 and ResNet-18 for every
  spec of ``NORM_SPECS`` under autocast and channels_last.
"""

import copy

import pytest
import torch
from torch import nn

from dnbook.models import build_model
from dnbook.norms import NORM_SPECS, DynamicNorm2d

# bf16 keeps 8 significant bits (epsilon 2^-7 = 7.8e-3). Tolerance, per tensor and normwise
# (max |bf16 - float32| / max |float32|): 4 bf16 epsilons. DN's output goes through a few bf16
# roundings (x - K, x' A, + B), its gradients too; torch.nn.BatchNorm2d's rounds once.
BF16_EPS = 2.0**-7
TOLERANCE = 4 * BF16_EPS
SHAPE = (8, 32, 6, 6)

LAYERS = [
    {"mode": "B"},
    {"mode": "B", "sc_input": "raw", "g": "oup", "fc1_bias": True},
    {"mode": "B", "activation": "gelu", "scale": "tanh", "shift": "linear", "g": 2},
    {"mode": "C", "merge": "fc1"},
    {"mode": "C", "merge": "fc2", "fc1_bias": True},
    {"mode": "B", "base_affine": True},
]


def _layer(impl: str, **options) -> DynamicNorm2d:
    torch.manual_seed(0)
    layer = DynamicNorm2d(SHAPE[1], r=4, fc2_init="default", impl=impl, **options)
    with torch.no_grad():  # FC2's weights at a trained layer's scale: alpha, lambda vary
        layer.fc2.weight.mul_(3)
    return layer


def _run(layer: nn.Module, x: torch.Tensor, grad_y: torch.Tensor, autocast: bool) -> dict:
    """Output, input gradient, parameter gradients and buffers after one training step."""
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    y.backward(grad_y.to(y.dtype))
    return {
        "y": y,
        "grad_x": x.grad,
        **{f"grad_{name}": p.grad for name, p in layer.named_parameters()},
        **dict(layer.named_buffers()),
    }


def _assert_normwise_close(got: dict, expected: dict, tolerance: float) -> None:
    """max |got - expected| <= tolerance * max |expected|, tensor by tensor."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        error = (got[key].double() - value.double()).abs().max()
        assert error <= tolerance * value.double().abs().max(), (key, error.item())


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A conv-like input (per-sample channel means, mean/std about 3) and an upstream gradient,
    both rounded to bf16, as an autocast convolution would give them."""
    torch.manual_seed(1)
    x = 3 + 0.5 * torch.randn(SHAPE[:2] + (1, 1)) + torch.randn(SHAPE)
    return x.bfloat16(), torch.randn(SHAPE).bfloat16()


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("options", LAYERS)
def test_bf16_autocast_against_float32(impl, options):
    x, grad_y = _inputs()
    # The float32 layer on the same, bf16-rounded, values: only the layer's rounding differs.
    expected = _run(_layer(impl, **options), x.float(), grad_y.float(), autocast=False)
    got = _run(_layer(impl, **options), x, grad_y, autocast=True)
    # torch.nn.BatchNorm2d's dtypes under autocast: output and input gradient in the input's
    # dtype, parameters (here the SC-module) and running statistics in float32.
    bn = _run(nn.BatchNorm2d(SHAPE[1]), x, grad_y, autocast=True)
    assert got["y"].dtype == got["grad_x"].dtype == bn["y"].dtype == torch.bfloat16
    for key, value in got.items():
        if key not in ("y", "grad_x", "num_batches_tracked"):
            assert value.dtype == torch.float32, key
    assert bn["running_mean"].dtype == torch.float32
    _assert_normwise_close(got, expected, TOLERANCE)


def test_batchnorm_rounds_once():
    # For scale: torch's own BN under autocast is within one bf16 epsilon of its float32 self.
    x, grad_y = _inputs()
    expected = _run(nn.BatchNorm2d(SHAPE[1]), x.float(), grad_y.float(), autocast=False)
    got = _run(nn.BatchNorm2d(SHAPE[1]), x, grad_y, autocast=True)
    _assert_normwise_close(got, expected, BF16_EPS)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("mode", ["B", "C"])
def test_float32_input_under_autocast_stays_float32(impl, mode):
    # As torch.nn.BatchNorm2d: a float32 input gives a float32 output under autocast.
    x, grad_y = _inputs()
    expected = _run(_layer(impl, mode=mode), x.float(), grad_y.float(), autocast=False)
    got = _run(_layer(impl, mode=mode), x.float(), grad_y.float(), autocast=True)
    assert got["y"].dtype == got["grad_x"].dtype == torch.float32
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("options", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_equals_contiguous(impl, options, dtype):
    x, grad_y = _inputs()
    x, grad_y = x.to(dtype), grad_y.to(dtype)
    autocast = dtype == torch.bfloat16
    expected = _run(_layer(impl, **options), x, grad_y, autocast)
    last = torch.channels_last
    x, grad_y = x.contiguous(memory_format=last), grad_y.contiguous(memory_format=last)
    got = _run(_layer(impl, **options), x, grad_y, autocast)
    assert got["y"].is_contiguous(memory_format=last)
    assert got["grad_x"].is_contiguous(memory_format=last)
    if dtype == torch.float32:  # the same arithmetic in another layout: float32 sums' order
        # normwise: a near-zero element of an SC-module gradient can differ by 1e-4 relative
        # to itself while the tensor agrees to 1e-6 of its largest value
        _assert_normwise_close(got, expected, 1e-5)
    else:  # torch's channels_last BN kernel (reference path) rounds its bf16 output its own way
        _assert_normwise_close(got, expected, BF16_EPS)


def _training_cases() -> list:
    """Every spec of NORM_SPECS with its defaults, dnbook's BN, and DN's reference path."""
    specs = [*NORM_SPECS, "bn:impl=scratch", "dnb@reference", "dnc@reference"]
    return [
        pytest.param(model, spec, id=f"{model}-{spec}")
        for model in ("mobilenet_v2", "resnet18")
        for spec in specs
    ]


@pytest.mark.parametrize(("model_name", "spec"), _training_cases())
def test_training_step_under_autocast_and_channels_last(model_name, spec):
    """One SGD step of a small CIFAR-stem model, as the gpu profile trains, on the CPU."""
    norm, _, impl = spec.partition("@")
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, norm=norm, stem="cifar", width_mult=0.25)
    if impl:
        for layer in model.modules():
            if isinstance(layer, DynamicNorm2d):
                layer.impl = impl
    model = model.to(memory_format=torch.channels_last).train()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
    assert logits.dtype == torch.bfloat16 and loss.isfinite()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.isfinite().all(), name
        assert p.grad.dtype == p.dtype == torch.float32, name
    optimizer.step()
    after = model.state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not before[k].equal(after[k])]
    assert changed, "the step changed nothing"
    for key, value in after.items():
        assert value.isfinite().all() if value.is_floating_point() else True, key
