"""WeightNet's grouped fully-connected layer on (N, C) vectors.

A grouped FC splits its ``in_features`` inputs and ``out_features`` outputs into ``groups``
equal blocks and connects input block ``k`` only to output block ``k``: a block-diagonal weight
matrix. It is exactly a grouped 1x1 convolution applied to an (N, C, 1, 1) tensor, and WeightNet
(and the DN paper after it) implements it that way. Here it runs on (N, C) vectors as one batched
matrix multiply instead, which is much cheaper on a CPU than a convolution on 1x1 tensors.

Group rule, shared by every layer of dnbook that uses a grouped FC
------------------------------------------------------------------
The DN paper's ``g`` is the number of *input* channels per group; ``g="oup"`` means one group
(a dense FC). The paper does not say what happens when ``in_features`` is not divisible by
``g`` (DN's hidden width ``c // r`` is 9 for c = 144, r = 16), so we take::

    groups = the largest divisor of in_features that is at most max(in_features // g, 1)
             and also divides out_features                   (g = "oup": groups = 1)

so each group has at least ``g`` inputs, and as close to ``g`` as the divisibility allows. With
the hidden width rule of :func:`dnbook.norms.squeeze_excitation.reduced_width` (``c // r``, at
least 1) this reproduces the paper's #p column for MobileNetV2 to within 0.01M
(``tests/test_factory.py`` pins the exact counts). Rounding the hidden width up to a multiple of
``g`` instead, so every group has exactly ``g`` inputs, would need 3 groups for DN's 320 outputs
at c = 160, r = 16, g = 4: not a valid grouping.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dnbook.norms._validation import check_input, check_int, check_positive_int

# The value of ``g`` that means "one group": every input feeds every output.
DENSE = "oup"


def check_group_size(g: int | str) -> int | str:
    """Return ``g`` if it is a positive ``int`` or ``"oup"``, else raise ``ValueError``."""
    if g == DENSE:
        return g
    return check_int("g", g, minimum=1, what=f"a positive integer or {DENSE!r}")


def num_groups(in_features: int, out_features: int, g: int | str) -> int:
    """Number of groups for ``g`` input features per group (the module's group rule).

    Example:
        >>> num_groups(9, 288, 1), num_groups(9, 288, 2), num_groups(9, 288, "oup")
        (9, 3, 1)
    """
    if check_group_size(g) == DENSE:
        return 1
    at_most = max(in_features // g, 1)
    return max(d for d in range(1, at_most + 1) if in_features % d == 0 and out_features % d == 0)


class GroupedFC(nn.Module):
    r"""Grouped fully-connected layer (WeightNet's grouped FC) on (N, C) vectors.

    With :math:`G` groups, input block :math:`x_k` (``in_features / G`` features) produces
    output block :math:`y_k` (``out_features / G`` features) on its own:

    .. math::
        y_k = W_k x_k + b_k, \qquad k = 1, \dots, G,

    i.e. :math:`y = W x + b` with a block-diagonal :math:`W`. It costs
    ``in_features * out_features / G`` multiply-adds per sample, ``G`` times fewer than a dense
    FC. ``G`` follows the module's group rule (see :func:`num_groups`).

    ``weight`` has the layout of a grouped 1x1 convolution's weight with its two trailing
    dimensions squeezed, ``(out_features, in_features / G)``, so
    ``nn.Conv2d(in_features, out_features, 1, groups=G).weight[:, :, 0, 0]`` converts both ways.

    Args:
        in_features: size of each input vector.
        out_features: size of each output vector.
        g: input features per group (default 1, the cheapest), or ``"oup"`` for a single group
            (a dense FC).
        bias: add a learnable bias (default ``False``, as in the DN paper's SC-module).
        device, dtype: of the parameters. Default: ``None`` (PyTorch's defaults).

    Under autocast it runs in the autocast dtype, bias included, as ``nn.Linear`` does.

    Shape:
        - Input: :math:`(N, \text{in\_features})`
        - Output: :math:`(N, \text{out\_features})`

    Example:
        >>> fc = GroupedFC(8, 32, g=2)  # 4 groups of 2 inputs -> 8 outputs each
        >>> fc(torch.randn(5, 8)).shape
        torch.Size([5, 32])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        g: int | str = 1,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.g = check_group_size(g)
        self.groups = num_groups(in_features, out_features, g)
        in_per_group = in_features // self.groups
        self.weight = nn.Parameter(torch.empty(out_features, in_per_group, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The init of nn.Linear and nn.Conv2d, with each output's fan-in (its group's inputs).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_features, ndim=2)
        if self.groups == 1:
            return nn.functional.linear(x, self.weight, self.bias)
        n, groups = x.shape[0], self.groups
        # y_k = x_k W_k^T for every group k at once: (G, N, in/G) @ (G, in/G, out/G)
        x_groups = x.reshape(n, groups, -1).transpose(0, 1)  # (G, N, in/G)
        w_groups = self.weight.view(groups, -1, self.weight.shape[1])  # (G, out/G, in/G)
        # bmm rather than einsum: FlopCounterMode counts bmm, but can miss an einsum that
        # lowers to a broadcast multiply (the complexity chapter relies on the count).
        y = torch.bmm(x_groups, w_groups.transpose(1, 2))  # (G, N, out/G)
        y = y.transpose(0, 1).reshape(n, self.out_features)  # (N, out)
        # the bias in y's dtype: under autocast bmm gives bf16, as nn.Linear's output is
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, g={self.g!r}, groups={self.groups}, "
            f"bias={self.bias is not None}"
        )
