"""Checks every norm layer must pass, run over every spec of make_norm."""

import pytest
import torch

from dnbook.norms import make_norm

SPECS = [
    "bn",
    "bn:impl=scratch",
    "gn",
    "gn:groups=8",
    "mabn",
    "mabn:buffer=4",
    "se",
    "dnb:r=16,g=1",
    "dnb:r=4,g=oup",
    "dnc:r=4,merge=fc1",
    "dnc:r=4,merge=fc2",
]
# Layers that normalize with batch statistics in training (all but GroupNorm).
BATCH_SPECS = [spec for spec in SPECS if not spec.startswith("gn")]
SHAPE = (4, 32, 6, 6)


def _train(layer: torch.nn.Module, steps: int = 3) -> None:
    """A few training steps, so that running statistics and buffers move off their init."""
    for step in range(steps):
        x = torch.randn(SHAPE) * (1 + step) + step
        layer(x).square().mean().backward()


@pytest.mark.parametrize("spec", SPECS)
def test_forward_and_backward(spec):
    layer = make_norm(spec)(SHAPE[1])
    x = torch.randn(SHAPE, requires_grad=True)
    y = layer(x)
    assert y.shape == SHAPE and y.isfinite().all()
    y.square().mean().backward()
    assert x.grad.isfinite().all() and x.grad.abs().sum() > 0
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.isfinite().all(), name
    layer.eval()
    with torch.no_grad():
        assert layer(x).isfinite().all()


@pytest.mark.parametrize("spec", SPECS)
def test_state_dict_round_trip(spec):
    factory = make_norm(spec)
    trained = factory(SHAPE[1])
    _train(trained)
    with torch.no_grad():  # make every parameter differ from a fresh layer's
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter))
    fresh = factory(SHAPE[1])
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh.state_dict(), trained.state_dict())
    trained.eval(), fresh.eval()
    x = torch.randn(SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x))


@pytest.mark.parametrize("spec", SPECS)
def test_wrong_rank(spec):
    if spec.startswith("gn"):  # GroupNorm takes (N, C, *), as PyTorch's does
        with pytest.raises(ValueError, match="at least 2 dimensions"):
            make_norm(spec)(SHAPE[1])(torch.randn(SHAPE[1]))
        return
    with pytest.raises(ValueError, match="4D|4-D"):
        make_norm(spec)(SHAPE[1])(torch.randn(SHAPE[:3]))


# torch.nn.BatchNorm2d (spec "bn") is PyTorch's own layer: a wrong channel count is a
# RuntimeError there, deep in the kernel. Every dnbook layer says what it expected.
@pytest.mark.parametrize("spec", [spec for spec in SPECS if spec != "bn"])
def test_wrong_channel_count(spec):
    with pytest.raises(ValueError, match="expected 32 channels"):
        make_norm(spec)(SHAPE[1])(torch.randn(4, 31, 6, 6))


@pytest.mark.parametrize("spec", BATCH_SPECS)
def test_training_needs_more_than_one_value_per_channel(spec):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        make_norm(spec)(SHAPE[1])(torch.randn(1, SHAPE[1], 1, 1))


@pytest.mark.parametrize("spec", SPECS)
def test_repr(spec):
    factory = make_norm(spec)
    layer = factory(SHAPE[1])
    assert (
        repr(factory) == f"NormFactory({factory.spec!r}, conv_layer={factory.conv_layer.__name__})"
    )
    first_line = repr(layer).splitlines()[0]
    assert first_line.startswith(f"{type(layer).__name__}(")
    assert "32" in repr(layer)
