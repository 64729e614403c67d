"""Shared test helpers: a fixed seed for every test, and a float64 comparison of a layer with
its PyTorch reference (outputs, gradients, buffers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

# The suite is many small ops: one thread is several times faster than two on a 2-core CI machine.
torch.set_num_threads(1)

# float64 parity tolerance for from-scratch layers against PyTorch's.
TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _forward_backward(module: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> dict:
    """The output, dL/dx and every parameter's gradient for L = sum(y * grad_y)."""
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(grad_y)
    grads = {f"grad_{name}": p.grad for name, p in module.named_parameters()}
    return {"y": y.detach(), "grad_x": x.grad, **grads}


@pytest.fixture
def assert_matches_reference():
    """``check(ours, reference, x)``: run one forward and backward of both layers on ``x`` with
    the same random upstream gradient, then compare outputs, gradients and buffers."""

    def check(ours: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
        grad_y = torch.randn_like(x)
        expected = _forward_backward(reference, x, grad_y)
        assert_close(_forward_backward(ours, x, grad_y), expected, **TOLERANCE)
        assert_close(dict(ours.named_buffers()), dict(reference.named_buffers()), **TOLERANCE)

    return check
