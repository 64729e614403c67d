r"""Batch Normalization (Ioffe & Szegedy, 2015), written from the equations.

The training forward and its backward live in :class:`BatchNormFunction`, a
``torch.autograd.Function`` whose backward is derived by hand below. The module
:class:`BatchNorm2d` adds what PyTorch's layer has around it: the affine parameters,
the running statistics with PyTorch's exact update rules, and the eval path.

The helpers :func:`standardize`, :func:`standardize_backward`, :func:`channel_affine` and
:func:`channel_affine_backward` are shared with :mod:`dnbook.norms.groupnorm`: Group
Normalization is the same standardization over a different set of axes.

Deriving the backward
---------------------
Over the :math:`m = NHW` values :math:`x_1..x_m` of one channel the forward is

.. math::
    \mu = \tfrac{1}{m}\sum_i x_i, \quad
    \sigma^2 = \tfrac{1}{m}\sum_i (x_i - \mu)^2, \quad
    \hat{x}_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
    y_i = \gamma \hat{x}_i + \beta .

With :math:`\delta_i = \partial L / \partial \hat{x}_i = \gamma\, \partial L / \partial y_i`
and :math:`s = 1/\sqrt{\sigma^2+\epsilon}`, differentiating :math:`\hat{x}_i` gives
:math:`\partial \hat{x}_i / \partial x_j = s\,([i = j] - 1/m - \hat{x}_i \hat{x}_j / m)`
(the ``1/m`` from :math:`\mu`, the last term from :math:`\sigma^2`), so

.. math::
    \frac{\partial L}{\partial x_j} = s \Big(\delta_j - \tfrac{1}{m}\sum_i \delta_i
        - \hat{x}_j \tfrac{1}{m}\sum_i \delta_i \hat{x}_i\Big), \quad
    \frac{\partial L}{\partial \gamma} = \sum_i \frac{\partial L}{\partial y_i} \hat{x}_i,
    \quad
    \frac{\partial L}{\partial \beta} = \sum_i \frac{\partial L}{\partial y_i} .

The backward is first-order only (``once_differentiable``): asking for a second
derivative through it raises an error instead of returning a wrong one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from dnbook.norms._validation import (
    check_batch_statistics,
    check_fraction,
    check_input,
    check_positive_int,
)

# BatchNorm2d reduces over batch and space: every (N, H, W) value of a channel.
BATCH_DIMS = (0, 2, 3)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for bf16/float16 inputs (as PyTorch's
    BN does under autocast), the input's own dtype for float32 and float64."""
    return torch.promote_types(dtype, torch.float32)


def non_channel_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every dimension of an ``(N, C, *)`` tensor except the channel dimension 1."""
    return (0, *range(2, x.dim()))


def standardize(
    x: torch.Tensor, dims: tuple[int, ...], eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardize ``x`` over ``dims``; return ``(x_hat, mean, biased var, 1/sqrt(var + eps))``,
    the statistics kept with size 1 along ``dims``."""
    # mu = 1/n sum_i x_i
    mean = x.mean(dims, keepdim=True)
    centered = x - mean
    # sigma^2 = 1/n sum_i (x_i - mu)^2   (biased: this is what normalizes)
    var = centered.square().mean(dims, keepdim=True)
    # s = 1 / sqrt(sigma^2 + eps)
    inv_std = torch.rsqrt(var + eps)
    # x_hat = (x - mu) * s
    return centered * inv_std, mean, var, inv_std


def standardize_backward(
    grad_x_hat: torch.Tensor, x_hat: torch.Tensor, inv_std: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    """dL/dx from delta = dL/dx_hat, for x_hat = standardize(x, dims)[0]."""
    # dL/dx = s * (g - mean(g) - x_hat * mean(g * x_hat))
    mean_grad = grad_x_hat.mean(dims, keepdim=True)
    mean_grad_x_hat = (grad_x_hat * x_hat).mean(dims, keepdim=True)
    return inv_std * (grad_x_hat - mean_grad - x_hat * mean_grad_x_hat)


def _per_channel(t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) with ``ndim`` dimensions, to broadcast over an ``(N, C, *)``
    tensor (default (1, C, 1, 1) for (N, C, H, W))."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def channel_affine(
    x_hat: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """y = gamma * x_hat + beta with one gamma and beta per channel of an ``(N, C, *)`` ``x_hat``;
    ``None`` skips either."""
    y = x_hat
    if weight is not None:
        y = y * _per_channel(weight, x_hat.dim())
    if bias is not None:
        y = y + _per_channel(bias, x_hat.dim())
    return y


def channel_affine_backward(
    ctx: FunctionCtx,
    grad_y: torch.Tensor,
    x_hat: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Backward of :func:`channel_affine` inside an ``autograd.Function`` whose inputs 1 and 2
    are weight and bias: return ``(dL/dx_hat, dL/dgamma, dL/dbeta)``, ``None`` where no
    gradient is needed. The parameter gradients come back in the parameters' own dtypes."""
    needs_weight, needs_bias = ctx.needs_input_grad[1:3]
    dims = non_channel_dims(grad_y)
    grad_weight = grad_bias = None
    if weight is not None and needs_weight:
        # dL/dgamma = sum over (N, *) of dL/dy * x_hat
        grad_weight = (grad_y * x_hat).sum(dims).to(weight.dtype)
    if bias is not None and needs_bias:
        # dL/dbeta = sum over (N, *) of dL/dy
        grad_bias = grad_y.sum(dims).to(bias.dtype)
    # g = dL/dx_hat = gamma * dL/dy
    grad_x_hat = grad_y if weight is None else grad_y * _per_channel(weight, grad_y.dim())
    return grad_x_hat, grad_weight, grad_bias


def register_channel_affine(
    module: nn.Module,
    num_features: int,
    affine: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    bias: bool = True,
) -> None:
    """Give ``module`` PyTorch's per-channel ``weight`` (gamma) and ``bias`` (beta) parameters,
    uninitialized, or register both as ``None`` when not ``affine`` (and ``bias`` alone as
    ``None`` when not ``bias``, as in PyTorch)."""
    for name, wanted in (("weight", affine), ("bias", affine and bias)):
        shape_only = torch.empty(num_features, device=device, dtype=dtype)
        module.register_parameter(name, nn.Parameter(shape_only) if wanted else None)


def register_running_stats(
    module: nn.Module,
    num_features: int,
    track_running_stats: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> None:
    """Give ``module`` PyTorch's BN buffers ``running_mean``, ``running_var`` (C,), uninitialized,
    and ``num_batches_tracked`` (a long scalar), or register all three as ``None`` when not
    ``track_running_stats`` (so they stay out of the state dict, as in PyTorch)."""
    buffers = {"running_mean": None, "running_var": None, "num_batches_tracked": None}
    if track_running_stats:
        buffers["running_mean"] = torch.empty(num_features, device=device, dtype=dtype)
        buffers["running_var"] = torch.empty(num_features, device=device, dtype=dtype)
        buffers["num_batches_tracked"] = torch.tensor(0, dtype=torch.long, device=device)
    for name, buffer in buffers.items():
        module.register_buffer(name, buffer)


def reset_channel_affine(module: nn.Module) -> None:
    """gamma to 1 and beta to 0, for those of the two that ``module`` has."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def reset_running_stats(module: nn.Module) -> None:
    """Running mean 0, running variance 1, no batch tracked (when ``module`` tracks them)."""
    if module.track_running_stats:
        module.running_mean.zero_()
        module.running_var.fill_(1.0)
        module.num_batches_tracked.zero_()


@torch.no_grad()
def update_running_stats(
    module: nn.Module, mean: torch.Tensor, var: torch.Tensor, values_per_channel: int
) -> None:
    """PyTorch's running-statistics update of ``module`` (which has ``momentum`` and the buffers
    of :func:`register_running_stats`) from a batch's mean and biased variance. The batch
    statistics are cast to the buffers' dtype."""
    module.num_batches_tracked.add_(1)
    mean, var = mean.to(module.running_mean.dtype), var.to(module.running_var.dtype)
    # m = momentum, or 1/t (t = batches tracked so far) for a cumulative moving average
    cumulative = module.momentum is None
    factor = 1.0 / float(module.num_batches_tracked) if cumulative else module.momentum
    # running_mean <- (1 - m) * running_mean + m * mu_B
    module.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
    # running_var <- (1 - m) * running_var + m * n/(n-1) * sigma_B^2   (unbiased)
    unbiased_var = var * (values_per_channel / (values_per_channel - 1))
    module.running_var.mul_(1.0 - factor).add_(unbiased_var, alpha=factor)


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch normalization of an (N, C, H, W) input with a hand-written backward.

    ``apply(x, weight, bias, eps)`` returns ``(y, mean, var)``: the output and the batch's
    per-channel mean and biased variance, shape (C,), which are not differentiable (the layer
    uses them only to update its running statistics). ``weight`` and ``bias`` may be ``None``.

    Mixed precision: the statistics, the normalization and the backward are computed in
    :func:`accumulation_dtype` (float32 for a bf16 or float16 ``x``, as under autocast), ``y``
    and ``dL/dx`` come back in ``x``'s dtype and memory format, ``mean`` and ``var`` in the
    accumulation dtype.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps), statistics over (N, H, W)
        # x_hat (N, C, H, W); mean, var, inv_std (1, C, 1, 1)
        x_hat, mean, var, inv_std = standardize(x.to(accumulation_dtype(x.dtype)), BATCH_DIMS, eps)
        # y = gamma * x_hat + beta
        y = channel_affine(x_hat, weight, bias).to(x.dtype)
        ctx.input_dtype = x.dtype
        ctx.save_for_backward(x_hat, inv_std, weight, bias)
        mean, var = mean.flatten(), var.flatten()  # (C,)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_y: torch.Tensor, _grad_mean: None, _grad_var: None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x_hat, inv_std, weight, bias = ctx.saved_tensors
        grad_x_hat, grad_weight, grad_bias = channel_affine_backward(
            ctx, grad_y.to(x_hat.dtype), x_hat, weight, bias
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = standardize_backward(grad_x_hat, x_hat, inv_std, BATCH_DIMS)
            grad_x = grad_x.to(ctx.input_dtype)
        return grad_x, grad_weight, grad_bias, None


class BatchNorm2d(nn.Module):
    r"""Batch Normalization over an (N, C, H, W) input, a from-scratch twin of
    :class:`torch.nn.BatchNorm2d` (same arguments, parameters, buffers and update rules).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    In training, the mean and the biased variance are taken per channel over the batch and
    space (N, H, W), and the running statistics are updated as

    .. math::
        \mu_\text{run} \leftarrow (1 - \rho)\,\mu_\text{run} + \rho\,\mu_B, \qquad
        \sigma^2_\text{run} \leftarrow (1 - \rho)\,\sigma^2_\text{run}
            + \rho\,\tfrac{m}{m-1}\,\sigma_B^2,

    with :math:`m = N H W` (the running variance is the unbiased one) and :math:`\rho` the
    momentum, or :math:`\rho = 1/t` at the :math:`t`-th tracked batch when ``momentum=None``
    (a cumulative average). In eval the running statistics replace the batch's, so the layer
    is a fixed per-channel affine map of :math:`x`.

    As in PyTorch: a bf16 or float16 input (autocast) is normalized with statistics
    accumulated in float32 and comes back in its own dtype; the output keeps the input's
    memory format (channels_last stays channels_last); an empty batch (N = 0) gives an empty
    output and, in training, counts a batch without changing the running statistics.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for stability. Default: ``1e-5``.
        momentum: the factor :math:`m` of the running averages, or ``None`` for a cumulative
            average. Default: ``0.1``.
        affine: learn a per-channel scale :math:`\gamma` (``weight``, initialized to 1) and
            shift :math:`\beta` (``bias``, initialized to 0). Default: ``True``.
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked``; if ``False`` these are ``None`` and batch statistics are
            used in eval too. Default: ``True``.
        device, dtype: where and in which floating type to create parameters and buffers.
            Default: ``None`` (PyTorch's defaults).
        bias: keyword only; with ``affine``, learn the shift :math:`\beta` too (``False``:
            ``bias`` is ``None``, a scale only). Default: ``True``.

    Shape:
        - Input: :math:`(N, C, H, W)`; in training (or without running statistics)
          :math:`N H W > 1`, or :math:`N = 0`.
        - Output: :math:`(N, C, H, W)`, the same shape.

    The training backward is :class:`BatchNormFunction`'s hand-written one, first-order only.

    Example::

        >>> bn = BatchNorm2d(16)
        >>> y = bn(torch.randn(8, 16, 32, 32))
        >>> bn.num_batches_tracked
        tensor(1)
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int("num_features", num_features)
        check_fraction("momentum", momentum, allow_none=True)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        register_channel_affine(self, num_features, affine, device, dtype, bias=bias)
        register_running_stats(self, num_features, track_running_stats, device, dtype)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch tracked."""
        reset_running_stats(self)

    def reset_parameters(self) -> None:
        """Reset the running statistics, and gamma to 1, beta to 0."""
        self.reset_running_stats()
        reset_channel_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.num_features)
        # As in PyTorch: eval uses the running statistics when there are any.
        if not self.training and self.running_mean is not None:
            return self._normalize_with_running_stats(x)
        if x.shape[0] == 0:
            # An empty batch, as in PyTorch: an empty output, still tied to the parameters
            # (zero gradients), and in training one more batch counted, statistics unchanged.
            if self.training and self.track_running_stats:
                self.num_batches_tracked.add_(1)
            return channel_affine(x, self.weight, self.bias).to(x.dtype)
        check_batch_statistics(type(self).__name__, x)
        y, mean, var = BatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            update_running_stats(self, mean, var, values_per_channel=x.numel() // x.shape[1])
        return y

    def _normalize_with_running_stats(self, x: torch.Tensor) -> torch.Tensor:
        # x_hat = (x - running_mean) / sqrt(running_var + eps): constants, so the layer is
        # affine in x and autograd differentiates these plain tensor ops exactly. Computed in
        # the accumulation dtype (float32 for a bf16 x), returned in x's dtype.
        x_acc = x.to(accumulation_dtype(x.dtype))
        inv_std = torch.rsqrt(_per_channel(self.running_var) + self.eps)  # (1, C, 1, 1)
        x_hat = (x_acc - _per_channel(self.running_mean)) * inv_std  # (N, C, H, W)
        # y = gamma * x_hat + beta
        return channel_affine(x_hat, self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )
