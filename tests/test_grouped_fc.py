"""GroupedFC: the group rule, equality with a grouped 1x1 convolution, and its FLOP count."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnbook.norms import GroupedFC
from dnbook.norms.grouped_fc import num_groups


@pytest.mark.parametrize(
    ("in_features", "out_features", "g", "expected"),
    [
        (80, 2560, 1, 80),  # divisible: g inputs per group
        (24, 768, 4, 6),
        (9, 288, 1, 9),  # c = 144, r = 16: hidden width 9
        (9, 288, 2, 3),  # 9 // 2 = 4 does not divide 9: the largest divisor below, 3
        (9, 288, 4, 1),
        (10, 320, 4, 2),
        (1, 32, 2, 1),  # fewer inputs than g: one group
        (6, 9, 1, 3),  # groups must divide the outputs too
        (20, 640, "oup", 1),  # one group: a dense FC
    ],
)
def test_group_rule(in_features, out_features, g, expected):
    assert num_groups(in_features, out_features, g) == expected


@pytest.mark.parametrize("g", [1, 2, 3, 4, "oup"])
@pytest.mark.parametrize(("in_features", "out_features"), [(12, 24), (9, 288), (6, 10)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_grouped_1x1_conv(g, in_features, out_features, bias):
    torch.manual_seed(0)
    fc = GroupedFC(in_features, out_features, g=g, bias=bias).double()
    conv = nn.Conv2d(in_features, out_features, 1, groups=fc.groups, bias=bias).double()
    assert fc.weight.shape == (out_features, in_features // fc.groups)
    with torch.no_grad():
        conv.weight.copy_(fc.weight[:, :, None, None])  # the documented layout conversion
        if bias:
            conv.bias.copy_(fc.bias)
    x = torch.randn(5, in_features, dtype=torch.float64, requires_grad=True)
    x_conv = x.detach().clone().requires_grad_()
    y = fc(x)
    y_conv = conv(x_conv[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(y, y_conv)

    grad = torch.randn_like(y)
    y.backward(grad)
    y_conv.backward(grad)
    torch.testing.assert_close(x.grad, x_conv.grad)
    torch.testing.assert_close(fc.weight.grad, conv.weight.grad[:, :, 0, 0])
    if bias:
        torch.testing.assert_close(fc.bias.grad, conv.bias.grad)


@pytest.mark.parametrize("g", [1, 2, 4, "oup"])
def test_flop_counter_counts_every_multiply_add(g):
    n, in_features, out_features = 3, 16, 64
    fc = GroupedFC(in_features, out_features, g=g)
    with FlopCounterMode(display=False) as counter:
        fc(torch.randn(n, in_features))
    # FlopCounterMode reports FLOPs = 2 x multiply-adds.
    assert counter.get_total_flops() == 2 * n * in_features * out_features // fc.groups


def test_init_bounds_follow_the_group_fan_in():
    torch.manual_seed(0)
    fc = GroupedFC(64, 128, g=4, bias=True)  # 16 groups of 4 inputs: fan-in 4
    bound = 1 / 4**0.5
    assert fc.weight.abs().max() <= bound
    assert fc.bias.abs().max() <= bound
    assert fc.weight.abs().max() > bound / 2  # not left at a dense layer's smaller scale


@pytest.mark.parametrize("g", [0, -2, 1.5, True, "dense", None])
def test_bad_group_size(g):
    with pytest.raises(ValueError, match="g must be a positive integer or 'oup'"):
        GroupedFC(8, 16, g=g)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((4, 8, 1, 1), "expected a 2-D input"), ((4, 7), "expected 8 channels")],
)
def test_bad_input(shape, message):
    with pytest.raises(ValueError, match=message):
        GroupedFC(8, 16)(torch.randn(shape))


def test_repr():
    assert repr(GroupedFC(9, 288, g=2)) == "GroupedFC(9, 288, g=2, groups=3, bias=False)"


def test_non_contiguous_input():
    fc = GroupedFC(12, 24, g=2)
    x = torch.randn(12, 5).T  # (5, 12), not contiguous
    torch.testing.assert_close(fc(x), fc(x.contiguous()))
