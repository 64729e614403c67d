"""Tests for the from-scratch BatchNorm2d: parity with torch.nn.BatchNorm2d in float64 (outputs,
gradients, running buffers over several steps, train and eval), the hand-written backward under
gradcheck, state dicts both ways, resets, repr and input validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.testing import assert_close

from dnbook.norms.batchnorm import BatchNorm2d, BatchNormFunction

DTYPE = torch.float64
TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}
# N = 1 with H*W > 1, H*W = 1 with N > 1, exactly 2 values per channel, non-square maps.
SHAPES = [(4, 3, 5, 5), (1, 3, 4, 4), (6, 2, 1, 1), (2, 3, 1, 1), (2, 5, 3, 7)]


def make_pair(channels: int, **kwargs) -> tuple[BatchNorm2d, nn.BatchNorm2d]:
    """Ours and PyTorch's layer with the same settings and the same random gamma and beta
    (the constructors take the same arguments)."""
    ours = BatchNorm2d(channels, dtype=DTYPE, **kwargs)
    reference = nn.BatchNorm2d(channels, dtype=DTYPE, **kwargs)
    with torch.no_grad():
        for ours_param, reference_param in zip(
            ours.parameters(), reference.parameters(), strict=True
        ):
            reference_param.copy_(ours_param.uniform_(-1.5, 1.5))
    return ours, reference


def batch(shape: tuple[int, ...]) -> torch.Tensor:
    """A float64 batch whose channels are far from zero mean and unit variance."""
    return 2.0 * torch.randn(shape, dtype=DTYPE) + 0.5


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_over_training_steps_then_eval(
    shape, momentum, affine, track_running_stats, assert_matches_reference
):
    ours, reference = make_pair(
        shape[1], momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )
    for _ in range(3):
        assert_matches_reference(ours, reference, batch(shape))
    ours.eval()
    reference.eval()
    for _ in range(2):
        assert_matches_reference(ours, reference, batch(shape))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_follow_the_update_rule(momentum):
    bn = BatchNorm2d(2, momentum=momentum, dtype=DTYPE)
    inputs = [batch((3, 2, 2, 2)) for _ in range(4)]
    expected_mean, expected_var = torch.zeros(2, dtype=DTYPE), torch.ones(2, dtype=DTYPE)
    for t, x in enumerate(inputs, start=1):
        bn(x)
        factor = 1.0 / t if momentum is None else momentum
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)  # unbiased
        expected_mean = (1 - factor) * expected_mean + factor * mean
        expected_var = (1 - factor) * expected_var + factor * var
    assert bn.num_batches_tracked.item() == len(inputs)
    assert_close(bn.running_mean, expected_mean, **TOLERANCE)
    assert_close(bn.running_var, expected_var, **TOLERANCE)
    if momentum is None:  # the cumulative average is the plain mean of the batches' statistics
        assert_close(bn.running_mean, torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0))


def test_eval_uses_running_statistics_even_for_one_value_per_channel(assert_matches_reference):
    ours, reference = make_pair(3)
    assert_matches_reference(ours, reference, batch((4, 3, 2, 2)))
    ours.eval()
    reference.eval()
    assert_matches_reference(ours, reference, batch((1, 3, 1, 1)))


def test_function_returns_biased_batch_statistics_without_gradient():
    x = batch((3, 4, 2, 5)).requires_grad_()
    _, mean, var = BatchNormFunction.apply(x, None, None, 1e-5)
    expected_var, expected_mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=0)
    assert_close(mean, expected_mean, **TOLERANCE)
    assert_close(var, expected_var, **TOLERANCE)
    assert not mean.requires_grad and not var.requires_grad


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (1, 3, 2, 3), (4, 2, 1, 1)])
def test_function_passes_gradcheck(shape, affine):
    channels = shape[1]
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    weight = (torch.rand(channels, dtype=DTYPE) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(channels, dtype=DTYPE, requires_grad=True) if affine else None
    # eps = 1e-3 keeps the map smooth at gradcheck's finite-difference step.
    assert gradcheck(lambda *inputs: BatchNormFunction.apply(*inputs, 1e-3)[0], (x, weight, bias))


def test_second_derivative_is_refused_not_wrong():
    x = batch((2, 2, 3, 3)).requires_grad_()
    y = BatchNormFunction.apply(x, None, None, 1e-5)[0]
    (grad_x,) = torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(
    "source_cls, target_cls", [(BatchNorm2d, nn.BatchNorm2d), (nn.BatchNorm2d, BatchNorm2d)]
)
def test_state_dict_loads_both_ways(source_cls, target_cls, affine, track_running_stats):
    settings = {"affine": affine, "track_running_stats": track_running_stats, "dtype": DTYPE}
    source = source_cls(3, **settings)
    with torch.no_grad():
        for param in source.parameters():
            param.uniform_(-1.5, 1.5)
    for _ in range(2):
        source(batch((4, 3, 2, 2)))
    target = target_cls(3, **settings)
    target.load_state_dict(source.state_dict(), strict=True)
    assert_close(dict(target.state_dict()), dict(source.state_dict()), **TOLERANCE)
    source.eval()
    target.eval()
    x = batch((2, 3, 2, 2))
    assert_close(target(x), source(x), **TOLERANCE)


def test_without_affine_or_tracking_parameters_and_buffers_are_none():
    bn = BatchNorm2d(3, affine=False, track_running_stats=False)
    assert bn.weight is None and bn.bias is None
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    assert list(bn.state_dict()) == []


def test_resets_restore_the_initial_state():
    bn, _ = make_pair(3)
    for _ in range(2):
        bn(batch((4, 3, 2, 2)))
    trained_weight = bn.weight.detach().clone()
    bn.reset_running_stats()
    assert_close(bn.weight.detach(), trained_weight)  # parameters untouched
    assert bn.num_batches_tracked.item() == 0
    bn.reset_parameters()
    assert_close(dict(bn.state_dict()), dict(nn.BatchNorm2d(3, dtype=DTYPE).state_dict()))


def test_factory_arguments_set_dtype_and_long_counter():
    bn = BatchNorm2d(4, dtype=DTYPE, device="cpu")
    assert bn.weight.dtype == bn.running_var.dtype == DTYPE
    assert bn.num_batches_tracked.dtype == torch.long


def test_repr_shows_every_setting():
    bn = BatchNorm2d(5, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    assert repr(bn) == (
        "BatchNorm2d(5, eps=0.001, momentum=None, affine=False, bias=False, "
        "track_running_stats=False)"
    )
    for kwargs in ({}, {"bias": False}, {"momentum": None, "track_running_stats": False}):
        assert repr(BatchNorm2d(3, **kwargs)) == repr(nn.BatchNorm2d(3, **kwargs))


@pytest.mark.parametrize(
    "shape, fragments",
    [
        ((4, 3, 5), ["expected a 4-D input", "got a 3-D input", "(4, 3, 5)"]),
        ((2, 3, 4, 4, 1), ["expected a 4-D input", "got a 5-D input"]),
        ((4, 5, 2, 2), ["expected 3 channels", "got 5"]),
        ((1, 3, 1, 1), ["more than 1 value per channel", "got 1"]),
    ],
)
def test_bad_training_input_raises_value_error_with_expected_and_actual(shape, fragments):
    with pytest.raises(ValueError) as error:
        BatchNorm2d(3)(torch.randn(shape))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_batch_statistics_in_eval_without_tracking_need_more_than_one_value():
    bn = BatchNorm2d(3, track_running_stats=False).eval()  # torch raises here too
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_features": 0}, "num_features must be a positive integer, got 0"),
        ({"num_features": 3, "momentum": 1.5}, "momentum must be in [0, 1] or None, got 1.5"),
    ],
)
def test_bad_settings_raise_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        BatchNorm2d(**kwargs)
    assert fragment in str(error.value)
