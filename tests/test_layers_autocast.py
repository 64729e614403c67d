"""Every dnbook layer but DynamicNorm2d under bf16 autocast and with channels_last inputs.

The ``gpu`` profile trains under ``torch.autocast(dtype=torch.bfloat16)`` with channels_last
tensors; these tests run the same code on the CPU (and on CUDA where there is one).

* **bf16 autocast vs float32.** The layer gets a bf16 input (what a convolution hands it under
  autocast) and a bf16 upstream gradient; the float32 reference gets the same values in float32.
  The output and input gradient must come back in bf16 and the parameter gradients and buffers
  in float32, as with ``torch.nn.BatchNorm2d``. Tolerances:

  - ``ONE_ROUNDING`` for the norm layers that compute in float32 from the bf16 input (BN, GN,
    MABN): their results may differ from the reference only by the final rounding to bf16,
    and their buffers (statistics accumulated in float32) match at float32 precision;
  - ``BF16_ARITHMETIC`` for layers whose matrix products run in bf16 under autocast, as in
    PyTorch (SE's FCs, the grouped FC, CenConv2d), and for what follows them.

* **channels_last vs contiguous.** The same values, in float32, in either memory format; a 4-D
  output keeps the input's channels_last format, as PyTorch's norm layers do.

The inputs have mean 3 and standard deviation 2 per channel, so a variance taken in bf16, or
as E[x^2] - E[x]^2, would show.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from dnbook.norms import (
    BatchNorm2d,
    CenConv2d,
    GroupedFC,
    GroupNorm,
    MABN2d,
    SEBatchNorm2d,
    SqueezeExcitation,
)

C = 8
BF16 = torch.bfloat16
# One bf16 rounding of a float32 result: at most one unit in the last place (2^-7 relative).
ONE_ROUNDING = {"rtol": 2**-7, "atol": 1e-5}
# bf16 matrix products (8 significant bits) and what follows them: within this fraction of the
# tensor's largest magnitude (a sum of many bf16 products errs relative to the sum's scale).
BF16_ARITHMETIC = 3e-2
# bf16 matrix products in two memory layouts: two bf16 roundings at the tensor's scale.
LAYOUT_BF16 = 2**-6
# float32 results whose summation order differs (channels_last), amplified by a norm's backward.
FLOAT32_ORDER = {"rtol": 1e-4, "atol": 1e-5}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

LAYERS: dict[str, Callable[[], nn.Module]] = {
    "BatchNorm2d": lambda: BatchNorm2d(C),
    "BatchNorm2d-no-bias": lambda: BatchNorm2d(C, bias=False),
    "GroupNorm": lambda: GroupNorm(4, C),
    "MABN2d": lambda: MABN2d(C, buffer_size=2, warmup_iters=0),
    "CenConv2d+MABN2d": lambda: nn.Sequential(
        CenConv2d(C, C, kernel_size=3, padding=1), MABN2d(C, buffer_size=2, warmup_iters=0)
    ),
    "SqueezeExcitation": lambda: SqueezeExcitation(C, r=4),
    "SEBatchNorm2d": lambda: SEBatchNorm2d(C, r=4),
    "GroupedFC": lambda: GroupedFC(C, 2 * C, g=2, bias=True),
}
# Layers computing in float32 from their bf16 input: only the final rounding differs.
FLOAT32_INSIDE = {"BatchNorm2d", "BatchNorm2d-no-bias", "GroupNorm", "MABN2d"}
VECTOR_INPUT = {"GroupedFC"}  # (N, C): no memory format to speak of
STEPS = 3  # MABN2d(buffer_size=2) averages over its window from step 3 on
# Gradients that are small differences of large terms, so that bf16 arithmetic cannot give
# them to a relative tolerance: the SE block's parameters behind a BatchNorm (BN cancels most
# of alpha's effect). PyTorch's own torchvision SqueezeExcitation + nn.BatchNorm2d under the
# same autocast misses its fc2.bias gradient by 2.9 times its size (measured with this input).
# They are checked for dtype and finiteness only; SqueezeExcitation alone checks SE's gradients.
ILL_CONDITIONED = {"SEBatchNorm2d": "grad_se."}


def assert_close_scaled(actual, expected, fraction: float = BF16_ARITHMETIC) -> None:
    """|actual - expected| <= fraction * max|expected|, elementwise (``BF16_ARITHMETIC``)."""
    scale = expected.abs().max().item()
    assert_close(actual, expected, rtol=fraction, atol=fraction * scale)


def make_input(name: str, step: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, dL/dy) for one training step: x with mean 3 and std 2, a random upstream gradient."""
    generator = torch.Generator().manual_seed(step)
    shape = (4, C) if name in VECTOR_INPUT else (4, C, 5, 5)
    out_shape = (4, 2 * C) if name in VECTOR_INPUT else shape
    x = 3.0 + 2.0 * torch.randn(shape, generator=generator)
    grad_y = torch.randn(out_shape, generator=generator)
    return x.to(device), grad_y.to(device)


def train_step(module: nn.Module, x: torch.Tensor, grad_y: torch.Tensor, autocast: bool):
    """Forward (under bf16 autocast if asked) and backward; everything that came out."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=BF16, enabled=autocast):
        y = module(x)
    y.backward(grad_y.to(y.dtype))
    grads = {f"grad_{name}": p.grad.clone() for name, p in module.named_parameters()}
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    return y.detach(), x.grad, grads, buffers


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(LAYERS))
def test_bf16_autocast_matches_float32(name, device):
    torch.manual_seed(0)
    reference = LAYERS[name]().to(device)
    mixed = copy.deepcopy(reference)
    exact = name in FLOAT32_INSIDE
    for step in range(1, STEPS + 1):
        x, grad_y = make_input(name, step, device)
        x, grad_y = x.to(BF16), grad_y.to(BF16)  # what a bf16 network hands the layer
        y_ref, gx_ref, grads_ref, buffers_ref = train_step(reference, x.float(), grad_y, False)
        y, grad_x, grads, buffers = train_step(mixed, x, grad_y, True)

        assert y.dtype == grad_x.dtype == BF16, "output and input gradient in the input's dtype"
        pairs = [(y.float(), y_ref), (grad_x.float(), gx_ref)]
        for key, grad in grads.items():
            assert grad.dtype == torch.float32, f"{key} in the parameter's dtype"
            if key.startswith(ILL_CONDITIONED.get(name, "-")):
                assert torch.isfinite(grad).all()
                continue
            pairs.append((grad, grads_ref[key]))
        for actual, expected in pairs:
            if exact:
                assert_close(actual, expected, **ONE_ROUNDING)
            else:
                assert_close_scaled(actual, expected)
        for key, buffer in buffers.items():
            assert buffer.dtype == buffers_ref[key].dtype, f"{key} keeps its dtype"
            if exact:  # statistics accumulated in float32, from the layer's own input
                assert_close(buffer, buffers_ref[key])
            elif buffer.is_floating_point():
                assert_close_scaled(buffer, buffers_ref[key])
            else:
                assert_close(buffer, buffers_ref[key])


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", [name for name in LAYERS if name not in VECTOR_INPUT])
def test_channels_last_matches_contiguous(name, device, autocast):
    torch.manual_seed(0)
    contiguous = LAYERS[name]().to(device)
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    for step in range(1, STEPS + 1):
        x, grad_y = make_input(name, step, device)
        expected = train_step(contiguous, x, grad_y, autocast)
        x_cl = x.to(memory_format=torch.channels_last)
        actual = train_step(channels_last, x_cl, grad_y, autocast)
        assert actual[0].is_contiguous(memory_format=torch.channels_last), "output layout"
        if not autocast or name in FLOAT32_INSIDE:
            # same values: float32 summation order only, or one bf16 rounding under autocast
            assert_close(actual, expected, **(ONE_ROUNDING if autocast else FLOAT32_ORDER))
            continue
        # bf16 matrix products: each layout's kernel sums its bf16 products in its own order
        # and blocking (CPUs without native bf16 convert in chunks), so a result may differ by
        # a rounding of the *terms*, i.e. relative to the tensor's scale, not to each element
        y, grad_x, grads, buffers = actual
        y_ref, gx_ref, grads_ref, buffers_ref = expected
        pairs = [(y, y_ref), (grad_x, gx_ref)]
        pairs += [(grads[k], grads_ref[k]) for k in grads]
        pairs += [(buffers[k], buffers_ref[k]) for k in buffers]
        for got, want in pairs:
            assert_close_scaled(got.float(), want.float(), fraction=LAYOUT_BF16)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_mode_under_autocast_keeps_the_input_dtype(device):
    """Eval paths too: BN and MABN normalize a bf16 input with float32 running statistics."""
    for layer in (BatchNorm2d(C), MABN2d(C), SEBatchNorm2d(C, r=4), GroupNorm(4, C)):
        layer = layer.to(device).eval()
        x = make_input("BatchNorm2d", 1, device)[0].to(BF16)
        with torch.autocast(device, dtype=BF16):
            y = layer(x)
        assert y.dtype == BF16
        assert_close_scaled(y.float(), layer(x.float()))


@pytest.mark.parametrize("name", ["BatchNorm2d", "GroupNorm", "MABN2d"])
def test_float16_and_bf16_modules_accumulate_in_float32(name):
    """A layer whose parameters are bf16 (``dtype=``), fed bf16 without autocast, still
    computes its statistics in float32: its output is the float32 result rounded once."""
    torch.manual_seed(0)
    reference = LAYERS[name]()
    low = copy.deepcopy(reference).to(BF16)
    x, grad_y = make_input(name, 1, "cpu")
    x, grad_y = x.to(BF16), grad_y.to(BF16)
    y_ref = train_step(reference, x.float(), grad_y, False)[0]
    y = train_step(low, x, grad_y, False)[0]
    assert y.dtype == BF16
    assert_close(y.float(), y_ref, **ONE_ROUNDING)


FACTORY_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "BatchNorm2d": lambda **kw: BatchNorm2d(C, **kw),
    "GroupNorm": lambda **kw: GroupNorm(4, C, **kw),
    "MABN2d": lambda **kw: MABN2d(C, buffer_size=2, **kw),
    "CenConv2d": lambda **kw: CenConv2d(C, C, kernel_size=3, **kw),
    "SqueezeExcitation": lambda **kw: SqueezeExcitation(C, r=4, **kw),
    "SEBatchNorm2d": lambda **kw: SEBatchNorm2d(C, r=4, **kw),
    "GroupedFC": lambda **kw: GroupedFC(C, 2 * C, g=2, bias=True, **kw),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", list(FACTORY_LAYERS))
def test_device_and_dtype_arguments(name, dtype):
    """``device=`` and ``dtype=`` as in PyTorch: every floating parameter and buffer is created
    there and in that type; counters stay ``torch.long``."""
    layer = FACTORY_LAYERS[name](device="meta", dtype=dtype)
    tensors = dict(layer.named_parameters()) | dict(layer.named_buffers())
    assert tensors
    for key, tensor in tensors.items():
        assert tensor.device.type == "meta", key
        assert tensor.dtype == (dtype if tensor.is_floating_point() else torch.long), key
