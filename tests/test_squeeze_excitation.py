"""SqueezeExcitation against torchvision's, and SEBatchNorm2d against SE then PyTorch's BN."""

import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation as TorchvisionSE

from dnbook.norms import SEBatchNorm2d, SqueezeExcitation
from dnbook.norms.squeeze_excitation import reduced_width


@pytest.mark.parametrize(
    ("num_features", "r", "expected"),
    [(64, 16, 4), (144, 16, 9), (16, 32, 1), (24, 16, 1), (1280, 8, 160)],
)
def test_hidden_width_rule(num_features, r, expected):
    assert reduced_width(num_features, r) == expected
    assert SqueezeExcitation(num_features, r=r).hidden_features == expected


def _torchvision_twin(se: SqueezeExcitation) -> TorchvisionSE:
    """torchvision's SE block (1x1 convs on pooled tensors) with the same weights as ``se``."""
    twin = TorchvisionSE(se.num_features, se.hidden_features).double()
    with torch.no_grad():
        for fc, conv in ((se.fc1, twin.fc1), (se.fc2, twin.fc2)):
            conv.weight.copy_(fc.weight[:, :, None, None])
            conv.bias.copy_(fc.bias)
    return twin


@pytest.mark.parametrize(("num_features", "r"), [(32, 16), (48, 4), (16, 32)])
def test_squeeze_excitation_matches_torchvision(num_features, r):
    torch.manual_seed(0)
    se = SqueezeExcitation(num_features, r=r).double()
    twin = _torchvision_twin(se)
    x = torch.randn(3, num_features, 5, 7, dtype=torch.float64, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_()
    y, y_twin = se(x), twin(x_twin)
    torch.testing.assert_close(y, y_twin)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_twin.backward(grad)
    torch.testing.assert_close(x.grad, x_twin.grad)
    torch.testing.assert_close(se.fc1.weight.grad, twin.fc1.weight.grad[:, :, 0, 0])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_se_batchnorm_is_bn_of_se(momentum):
    torch.manual_seed(0)
    layer = SEBatchNorm2d(32, r=8, momentum=momentum).double()
    twin_se = _torchvision_twin(layer.se)
    twin_bn = nn.BatchNorm2d(32, momentum=momentum).double()
    for step in range(3):
        x = torch.randn(4, 32, 6, 6, dtype=torch.float64) * (step + 1) + step
        torch.testing.assert_close(layer(x), twin_bn(twin_se(x)))
    torch.testing.assert_close(layer.bn.running_mean, twin_bn.running_mean)
    torch.testing.assert_close(layer.bn.running_var, twin_bn.running_var)
    layer.eval(), twin_bn.eval()
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), twin_bn(twin_se(x)))


def test_parameter_count():
    c, hidden = 96, 6
    # SE: two FCs with biases; BN: gamma and beta.
    expected = (c * hidden + hidden) + (hidden * c + c) + 2 * c
    assert sum(p.numel() for p in SEBatchNorm2d(c, r=16).parameters()) == expected


@pytest.mark.parametrize("layer_type", [SqueezeExcitation, SEBatchNorm2d])
@pytest.mark.parametrize(
    ("shape", "message"),
    [((4, 16, 6), "expected a 4-D input"), ((4, 15, 6, 6), "expected 16 channels")],
)
def test_bad_input(layer_type, shape, message):
    with pytest.raises(ValueError, match=message):
        layer_type(16)(torch.randn(shape))


def test_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        SEBatchNorm2d(16)(torch.randn(1, 16, 1, 1))


@pytest.mark.parametrize("r", [0, -1, 2.0])
def test_bad_reduction_ratio(r):
    with pytest.raises(ValueError, match="r must be a positive integer"):
        SqueezeExcitation(16, r=r)


def test_repr():
    assert SqueezeExcitation(64).extra_repr() == "64, r=16, hidden_features=4"
    layer = SEBatchNorm2d(64, r=8, momentum=None)
    assert layer.extra_repr() == "64, r=8, eps=1e-05, momentum=None"
    text = repr(layer)
    assert "(se): SqueezeExcitation" in text and "(bn): BatchNorm2d" in text
