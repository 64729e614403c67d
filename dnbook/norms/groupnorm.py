r"""Group Normalization (Wu & He, 2018), written from the equations.

Group Normalization standardizes each sample on its own: the C channels are split into G
groups of C/G consecutive channels, and the mean and variance are taken over one group's
C/G * H * W values. Nothing depends on the other samples of the batch, so training and
eval compute the same thing and there are no running statistics.

It is Batch Normalization's standardization over different axes: reshape (N, C, H, W) to
(N, G, C/G * H * W) and reduce over the last axis instead of over (N, H, W). The hand-written
backward is therefore the same compact form as BN's (derived in
:mod:`dnbook.norms.batchnorm`), applied per group:

.. math::
    \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma_g^2 + \epsilon}}
        \Big(g - \mathrm{mean}_g(g) - \hat{x}\, \mathrm{mean}_g(g\, \hat{x})\Big),
    \qquad g = \gamma \frac{\partial L}{\partial y},

with :math:`\mathrm{mean}_g` the average over the group. Like BN's, it is first-order only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from dnbook.norms._validation import check_input, check_positive_int
from dnbook.norms.batchnorm import (
    channel_affine,
    channel_affine_backward,
    register_channel_affine,
    standardize,
    standardize_backward,
)

# After the reshape to (N, G, C/G * H * W), a group's values lie along the last axis.
GROUP_DIMS = (-1,)


class GroupNormFunction(torch.autograd.Function):
    """Group normalization of an (N, C, H, W) input with a hand-written backward.

    ``apply(x, weight, bias, num_groups, eps)`` returns ``y``; ``weight`` and ``bias`` (C,)
    may be ``None``. C must be divisible by ``num_groups`` (the module checks it).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        num_groups: int,
        eps: float,
    ) -> torch.Tensor:
        grouped = x.reshape(x.shape[0], num_groups, -1)  # (N, G, C/G*H*W)
        # x_hat = (x - mu_g) / sqrt(sigma_g^2 + eps), statistics per sample and group
        x_hat, _, _, inv_std = standardize(grouped, GROUP_DIMS, eps)  # (N, G, C/G*H*W), (N, G, 1)
        x_hat = x_hat.view_as(x)  # (N, C, H, W)
        # y = gamma * x_hat + beta, one gamma and beta per channel
        y = channel_affine(x_hat, weight, bias)
        ctx.num_groups = num_groups
        ctx.save_for_backward(x_hat, inv_std, weight, bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_y: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None]:
        x_hat, inv_std, weight, bias = ctx.saved_tensors
        grad_x_hat, grad_weight, grad_bias = channel_affine_backward(
            ctx, grad_y, x_hat, weight, bias
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            n, g = inv_std.shape[:2]
            grad_x = standardize_backward(
                grad_x_hat.reshape(n, g, -1),  # (N, G, C/G*H*W)
                x_hat.reshape(n, g, -1),
                inv_std,
                GROUP_DIMS,
            ).view_as(grad_y)  # (N, C, H, W)
        return grad_x, grad_weight, grad_bias, None, None


class GroupNorm(nn.Module):
    r"""Group Normalization over an (N, C, H, W) input, a from-scratch twin of
    :class:`torch.nn.GroupNorm` with ``num_features`` first.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \cdot \gamma + \beta

    :math:`\mathrm{E}_g` and :math:`\mathrm{Var}_g` (biased) are taken per sample over each
    group of ``num_features // num_groups`` consecutive channels and all H x W positions;
    :math:`\gamma` and :math:`\beta` are per channel. Training and eval behave the same.

    Note the argument order: ``torch.nn.GroupNorm(num_groups, num_channels)`` but
    ``GroupNorm(num_features, num_groups)`` here, like every dnbook norm layer. The parameter
    names are PyTorch's, so state dicts load both ways. Unlike PyTorch's layer, which takes
    (N, C, *), this one takes 4-D input only, like :class:`~dnbook.norms.BatchNorm2d`.

    Args:
        num_features: C, the number of channels.
        num_groups: G, the number of groups; must divide ``num_features``. Default: ``32``.
        eps: added to the variance for stability. Default: ``1e-5``.
        affine: learn a per-channel scale :math:`\gamma` (``weight``, initialized to 1) and
            shift :math:`\beta` (``bias``, initialized to 0). Default: ``True``.
        device, dtype: where and in which floating type to create the parameters.

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output: :math:`(N, C, H, W)`, the same shape.

    The backward is :class:`GroupNormFunction`'s hand-written one, first-order only.

    Example::

        >>> gn = GroupNorm(64, num_groups=8)
        >>> y = gn(torch.randn(2, 64, 16, 16))
        >>> y.shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        self.num_groups = check_positive_int("num_groups", num_groups)
        if num_features % num_groups != 0:
            raise ValueError(
                f"GroupNorm: num_features must be divisible by num_groups, "
                f"got num_features={num_features} and num_groups={num_groups}"
            )
        self.eps = eps
        self.affine = affine
        register_channel_affine(self, num_features, affine, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """gamma to 1, beta to 0."""
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.num_features)
        return GroupNormFunction.apply(x, self.weight, self.bias, self.num_groups, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, "
            f"affine={self.affine}"
        )
