r"""Group Normalization (Wu & He, 2018), written from the equations.

Group Normalization standardizes each sample on its own: the C channels are split into G
groups of C/G consecutive channels, and the mean and variance are taken over one group's
C/G * H * W values. Nothing depends on the other samples of the batch, so training and
eval compute the same thing and there are no running statistics.

It is Batch Normalization's standardization over different axes: reshape ``(N, C, *)`` to
(N, G, C/G * prod(*)) and reduce over the last axis instead of over (N, H, W). The hand-written
backward is therefore the same compact form as BN's (derived in
:mod:`dnbook.norms.batchnorm`), applied per group:

.. math::
    \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2 + \epsilon}}
        \Big(\delta - \mathrm{mean}(\delta) - \hat{x}\, \mathrm{mean}(\delta\, \hat{x})\Big),
    \qquad \delta = \gamma \frac{\partial L}{\partial y},

with :math:`\sigma^2` and :math:`\mathrm{mean}` taken over the :math:`m = \frac{C}{G}HW` values
of the group. Like BN's, it is first-order only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from dnbook.norms._validation import check_positive_int
from dnbook.norms.batchnorm import (
    accumulation_dtype,
    channel_affine,
    channel_affine_backward,
    register_channel_affine,
    reset_channel_affine,
    standardize,
    standardize_backward,
)

# After the reshape to (N, G, C/G * prod(*)), a group's values lie along the last axis.
GROUP_DIMS = (-1,)


class GroupNormFunction(torch.autograd.Function):
    """Group normalization of an ``(N, C, *)`` input with a hand-written backward.

    ``apply(x, weight, bias, num_groups, eps)`` returns ``y``; ``weight`` and ``bias`` (C,)
    may be ``None``. C must be divisible by ``num_groups`` (the module checks it).
    Statistics, normalization and backward are computed in float32 for a bf16 or float16
    ``x`` (autocast); ``y`` and ``dL/dx`` come back in ``x``'s dtype and memory format.
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
        x_acc = x.to(accumulation_dtype(x.dtype))
        # (N, G, C/G * prod(*)); reshape copies a channels_last x into the grouped layout
        grouped = x_acc.reshape(x.shape[0], num_groups, _group_size(x, num_groups))
        # x_hat = (x - mu_g) / sqrt(sigma_g^2 + eps), statistics per sample and group
        x_hat, _, _, inv_std = standardize(grouped, GROUP_DIMS, eps)  # (N, G, .), (N, G, 1)
        # back to (N, C, *), in x's memory format
        x_hat = x_hat.view(x.shape).to(memory_format=_memory_format(x))
        # y = gamma * x_hat + beta, one gamma and beta per channel
        y = channel_affine(x_hat, weight, bias).to(x.dtype)
        ctx.num_groups = num_groups
        ctx.input_dtype = x.dtype
        ctx.save_for_backward(x_hat, inv_std, weight, bias)
        return y

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_y: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None]:
        x_hat, inv_std, weight, bias = ctx.saved_tensors
        grad_x_hat, grad_weight, grad_bias = channel_affine_backward(
            ctx, grad_y.to(x_hat.dtype), x_hat, weight, bias
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            grouped_shape = (x_hat.shape[0], ctx.num_groups, _group_size(x_hat, ctx.num_groups))
            grad_x = standardize_backward(
                grad_x_hat.reshape(grouped_shape),  # (N, G, C/G * prod(*))
                x_hat.reshape(grouped_shape),
                inv_std,
                GROUP_DIMS,
            ).view(grad_y.shape)  # (N, C, *)
            grad_x = grad_x.to(dtype=ctx.input_dtype, memory_format=_memory_format(x_hat))
        return grad_x, grad_weight, grad_bias, None, None


def _group_size(x: torch.Tensor, num_groups: int) -> int:
    """The number of values in one group of one sample: C/G * prod(*)."""
    return math.prod(x.shape[1:]) // num_groups


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D channels_last tensor (with more than one channel), else
    contiguous: the layout GroupNorm gives its output, as PyTorch's does."""
    if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class GroupNorm(nn.Module):
    r"""Group Normalization over an ``(N, C, *)`` input, a from-scratch twin of
    :class:`torch.nn.GroupNorm`: same arguments in the same order, parameters and shapes.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    :math:`\mathrm{E}` and :math:`\mathrm{Var}` (biased) are taken per sample over each
    group of ``num_channels // num_groups`` consecutive channels and all their positions
    (the ``*`` dimensions); :math:`\gamma` and :math:`\beta` are per channel. Training and
    eval behave the same. ``num_groups=1`` is Layer Normalization over ``(C, *)``,
    ``num_groups=num_channels`` Instance Normalization.

    Unlike the other dnbook norm layers, the number of groups comes first, as in PyTorch:
    ``GroupNorm(num_groups, num_channels)``, so either layer replaces the other. A bf16 or
    float16 input (autocast) is normalized with float32 statistics and comes back in its own
    dtype and memory format; an empty batch (N = 0) gives an empty output.

    Args:
        num_groups: G, the number of groups; must divide ``num_channels``.
        num_channels: C, the number of channels.
        eps: added to the variance for stability. Default: ``1e-5``.
        affine: learn a per-channel scale :math:`\gamma` (``weight``, initialized to 1) and
            shift :math:`\beta` (``bias``, initialized to 0). Default: ``True``.
        device, dtype: where and in which floating type to create the parameters.
            Default: ``None`` (PyTorch's defaults).
        bias: keyword only; with ``affine``, learn the shift :math:`\beta` too (``False``:
            ``bias`` is ``None``). Default: ``True``.

    Shape:
        - Input: :math:`(N, C, *)`.
        - Output: :math:`(N, C, *)`, the same shape.

    The backward is :class:`GroupNormFunction`'s hand-written one, first-order only.

    Example::

        >>> gn = GroupNorm(8, 64)
        >>> y = gn(torch.randn(2, 64, 16, 16))
        >>> y.shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_groups = check_positive_int("num_groups", num_groups)
        self.num_channels = check_positive_int("num_channels", num_channels)
        if num_channels % num_groups != 0:
            raise ValueError(
                f"GroupNorm: num_channels must be divisible by num_groups, "
                f"got num_channels={num_channels} and num_groups={num_groups}"
            )
        self.eps = eps
        self.affine = affine
        register_channel_affine(self, num_channels, affine, device, dtype, bias=bias)
        self.reset_parameters()

    @property
    def num_features(self) -> int:
        """C, under the name the other dnbook norm layers use (``num_channels``)."""
        return self.num_channels

    def reset_parameters(self) -> None:
        """gamma to 1, beta to 0."""
        reset_channel_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"GroupNorm: expected an input (N, C, *) of at least 2 dimensions, "
                f"got a {x.dim()}-D input of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: expected {self.num_channels} channels (dim 1), "
                f"got {x.shape[1]} in an input of shape {tuple(x.shape)}"
            )
        return GroupNormFunction.apply(x, self.weight, self.bias, self.num_groups, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )
