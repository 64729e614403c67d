"""Tests for the from-scratch GroupNorm: parity with torch.nn.GroupNorm in float64 (outputs and
gradients, train and eval), the hand-written backward under gradcheck, state dicts both ways,
repr and input validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.testing import assert_close

from dnbook.norms.groupnorm import GroupNorm, GroupNormFunction

DTYPE = torch.float64
TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}
# N = 1 with H*W > 1, H*W = 1 (with 6 groups of 6 channels: one value per group), non-square,
# and the other (N, C, *) shapes PyTorch's layer takes: 2-D, 3-D, 5-D.
SHAPES = [
    (4, 6, 5, 5),
    (1, 6, 4, 4),
    (3, 6, 1, 1),
    (2, 12, 3, 7),
    (5, 6),
    (3, 6, 7),
    (2, 6, 2, 3, 2),
]


def make_layer(layer_cls: type[nn.Module], channels: int, groups: int, **kwargs) -> nn.Module:
    """Ours or PyTorch's GroupNorm, in float64; both take (num_groups, num_channels)."""
    return layer_cls(groups, channels, dtype=DTYPE, **kwargs)


def randomize_affine(layer: nn.Module) -> None:
    with torch.no_grad():
        for param in layer.parameters():
            param.uniform_(-1.5, 1.5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch(shape, groups, affine, bias, training, assert_matches_reference):
    ours = make_layer(GroupNorm, shape[1], groups, affine=affine, bias=bias).train(training)
    randomize_affine(ours)
    reference = make_layer(nn.GroupNorm, shape[1], groups, affine=affine, bias=bias)
    reference.train(training)
    reference.load_state_dict(ours.state_dict())
    assert_matches_reference(ours, reference, 2.0 * torch.randn(shape, dtype=DTYPE) + 0.5)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, groups", [((2, 4, 2, 3), 2), ((1, 6, 2, 2), 3), ((3, 4, 1, 1), 1)])
def test_function_passes_gradcheck(shape, groups, affine):
    channels = shape[1]
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    weight = (torch.rand(channels, dtype=DTYPE) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(channels, dtype=DTYPE, requires_grad=True) if affine else None
    # eps = 1e-3 keeps the map smooth at gradcheck's finite-difference step.
    assert gradcheck(
        lambda *inputs: GroupNormFunction.apply(*inputs, groups, 1e-3), (x, weight, bias)
    )


def test_second_derivative_is_refused_not_wrong():
    x = torch.randn(2, 4, 3, 3, dtype=DTYPE, requires_grad=True)
    (grad_x,) = torch.autograd.grad(GroupNorm(2, 4)(x).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(
    "source_cls, target_cls", [(GroupNorm, nn.GroupNorm), (nn.GroupNorm, GroupNorm)]
)
def test_state_dict_loads_both_ways(source_cls, target_cls, affine):
    source = make_layer(source_cls, 8, 4, affine=affine)
    randomize_affine(source)
    target = make_layer(target_cls, 8, 4, affine=affine)
    target.load_state_dict(source.state_dict(), strict=True)
    assert_close(dict(target.state_dict()), dict(source.state_dict()))
    x = torch.randn(2, 8, 3, 3, dtype=DTYPE)
    assert_close(target(x), source(x), **TOLERANCE)


def test_reset_parameters_gives_identity_affine():
    gn = make_layer(GroupNorm, 8, 4)
    randomize_affine(gn)
    gn.reset_parameters()
    assert_close(dict(gn.state_dict()), dict(nn.GroupNorm(4, 8, dtype=DTYPE).state_dict()))


def test_repr_shows_every_setting():
    gn = GroupNorm(2, 8, eps=1e-3, affine=False)
    assert repr(gn) == "GroupNorm(2, 8, eps=0.001, affine=False, bias=False)"
    assert gn.weight is None and gn.bias is None
    assert repr(GroupNorm(2, 8, bias=False)) == repr(nn.GroupNorm(2, 8, bias=False))


def test_signature_is_torchs():
    """Same positional order as torch.nn.GroupNorm, so one replaces the other."""
    ours = GroupNorm(2, 8, 1e-3, False)
    assert (ours.num_groups, ours.num_channels, ours.eps, ours.affine) == (2, 8, 1e-3, False)
    assert ours.num_features == 8
    scale_only = GroupNorm(4, 8, bias=False)
    assert scale_only.bias is None and scale_only.weight.shape == (8,)


@pytest.mark.parametrize("shape", [(0, 6, 3, 3), (0, 6)])
def test_empty_batch_behaves_as_in_torch(shape):
    ours, reference = make_layer(GroupNorm, 6, 3), make_layer(nn.GroupNorm, 6, 3)
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    y = ours(x)
    assert y.shape == reference(x).shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    assert_close(ours.weight.grad, torch.zeros(6, dtype=DTYPE))


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"num_channels": 6, "num_groups": 4}, ["num_channels=6", "num_groups=4", "divisible"]),
        ({"num_channels": 16, "num_groups": 32}, ["num_channels=16", "num_groups=32"]),
        ({"num_channels": 8, "num_groups": 0}, ["num_groups must be a positive integer, got 0"]),
    ],
)
def test_bad_settings_raise_value_error(kwargs, fragments):
    with pytest.raises(ValueError) as error:
        GroupNorm(**kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    "shape, fragments",
    [
        ((8,), ["expected an input (N, C, *) of at least 2 dimensions", "1-D", "(8,)"]),
        ((4, 6, 2, 2), ["expected 8 channels", "got 6", "(4, 6, 2, 2)"]),
    ],
)
def test_bad_input_raises_value_error_with_expected_and_actual(shape, fragments):
    with pytest.raises(ValueError) as error:
        GroupNorm(4, 8)(torch.randn(shape))
    for fragment in fragments:
        assert fragment in str(error.value)
