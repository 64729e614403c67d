r"""Moving Average Batch Normalization (MABN) and weight-centralized convolution.

Yan et al., "Towards Stabilizing Batch Statistics in Backward Propagation of Batch
Normalization" (ICLR 2020). With a small batch, BN's statistics are noisy. The forward pass has
the obvious ones (mean and variance), but the backward pass has two more: the per-channel means
of :math:`\delta` and of :math:`\delta z` that BN's input gradient subtracts (:math:`\delta`
is the gradient at the normalized value, chapter 0's symbols). MABN makes all of them cheap to
average over past iterations:

* it drops the centering (a weight-centralized conv, :class:`CenConv2d`, keeps the features
  roughly zero-mean instead), so the only forward statistic is the second moment
  :math:`\chi = E[x^2]` and the only backward statistic is :math:`\psi = E[\delta z]`;
* it replaces both by a simple moving average (SMA) over the last ``buffer_size`` iterations,
  so a real batch of ``N`` behaves like a batch of ``N * buffer_size``;
* it multiplies the output by a renormalization factor :math:`\kappa` that pulls the SMA
  statistic towards the long-run ``running_var``, which is what evaluation uses.

The moving averages are written :math:`\chi^{\mathrm{SMA}}, \psi^{\mathrm{SMA}}` and the factor
:math:`\kappa`, in chapter 0's symbols: there an overbar is a gradient, and Batch
Renormalization's letter for the factor is SE's and DN's reduction ratio.

:class:`MABN2d` follows the authors' code (``MABN.py`` in github.com/megvii-model/MABN)
step for step: which iterations use the moving averages, when :math:`\kappa` is switched on
and its clamp, and ``running_var``, which averages the statistic the layer normalized with
(the SMA once it is on), not the batch's own second moment. ``tests/test_mabn.py`` checks
forward, backward and buffers against an independent transcription of that code over more
than 1,000 iterations, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from dnbook.norms._validation import (
    check_batch_statistics,
    check_fraction,
    check_input,
    check_int,
    check_positive_int,
)
from dnbook.norms.batchnorm import accumulation_dtype

# The renormalization factor kappa stays fixed at 1 for at least this many iterations (the
# authors' code's choice).
RENORM_START = 1000
# After that, kappa is clamped to [1 / R_MAX, R_MAX].
R_MAX = 5.0


@dataclass
class _MABNStep:
    """What one training iteration of :class:`_MABNFunction` needs besides ``x, weight, bias``.

    The two windows are the module's buffers, shared (not copied): the Function writes the
    current forward statistic into ``forward_window[slot]`` in ``forward`` and the current
    backward statistic into ``backward_window[slot]`` in ``backward``.
    """

    forward_window: torch.Tensor  # (buffer_size, C): E[x^2] of the last buffer_size iterations
    backward_window: torch.Tensor  # (buffer_size, C): E[delta z] of the last buffer_size steps
    slot: int  # the row of this iteration in both windows
    use_sma: bool  # average the windows (True) or use this batch's own statistics (False)
    running_var: torch.Tensor | None  # (C,) for the renormalization; None means kappa = 1
    eps: float
    # filled in by the forward: the statistic the batch was normalized with, (C,)
    var: torch.Tensor | None = None


class _MABNFunction(torch.autograd.Function):
    r"""MABN's training forward and its hand-written backward.

    The backward is **stateful**: it writes this iteration's :math:`E[\delta z]` into the shared
    ``backward_window`` before averaging it, so the next iterations can reuse it. A forward
    without a backward (a training-mode forward under ``torch.no_grad``) leaves that row
    holding the statistic of ``buffer_size`` iterations ago. Re-running the forward (activation
    checkpointing) would count the iteration twice, so it is not supported.

    Once the SMA is on, the input gradient is deliberately *not* the gradient of the forward:
    past iterations' :math:`E[\delta z]` enter it, which is the point of MABN.

    Statistics and the normalization are computed in float32 for a bf16 or float16 ``x``
    (autocast) and in the windows' dtype otherwise; ``y`` and ``dL/dx`` come back in ``x``'s
    dtype and memory format.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, step: _MABNStep):
        channels = x.shape[1]
        ctx.input_dtype = x.dtype
        # computed in float32 at least (bf16 and float16 inputs), or the windows' wider dtype
        x = x.to(torch.promote_types(accumulation_dtype(x.dtype), step.forward_window.dtype))
        # E[x^2] per channel, no centering                                     # (C,)
        second_moment = x.square().mean(dim=(0, 2, 3))
        step.forward_window[step.slot] = second_moment
        # chi_sma = mean of the last buffer_size E[x^2] (this batch's own while warming up)
        var = step.forward_window.mean(dim=0) if step.use_sma else second_moment
        step.var = var
        # sigma = sqrt(var + eps)                                              # (C,)
        std = (var + step.eps).sqrt()
        # z = x / sigma                                                        # (N, C, H, W)
        z = x / std.view(1, channels, 1, 1)
        # kappa = sigma / sqrt(running_var + eps), clamped to [1/5, 5]; 1 while it is off
        if step.running_var is None:
            kappa = torch.ones_like(std)
        else:
            kappa = (std / (step.running_var + step.eps).sqrt()).clamp(1 / R_MAX, R_MAX)
        scale = kappa if weight is None else weight * kappa
        # y = weight * (kappa * z) + bias
        y = z * scale.view(1, channels, 1, 1)
        if bias is not None:
            y = y + bias.view(1, channels, 1, 1)
        ctx.save_for_backward(z, std, kappa, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.step = step
        return y.to(ctx.input_dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        z, std, kappa, weight = ctx.saved_tensors
        step = ctx.step
        channels = z.shape[1]
        grad_y = grad_y.to(z.dtype)
        scale = kappa if weight is None else weight * kappa
        # delta = dL/dy * weight * kappa                                       # (N, C, H, W)
        delta = grad_y * scale.view(1, channels, 1, 1)
        # E[delta z] per channel                                               # (C,)
        grad_stat = (delta * z).mean(dim=(0, 2, 3))
        step.backward_window[step.slot] = grad_stat
        # psi_sma = mean of the last buffer_size E[delta z] (this batch's own while warming up)
        grad_stat_used = step.backward_window.mean(dim=0) if step.use_sma else grad_stat
        # dx = (delta - z * psi_sma) / sigma
        grad_x = (delta - z * grad_stat_used.view(1, channels, 1, 1)) / std.view(1, channels, 1, 1)
        grad_x = grad_x.to(ctx.input_dtype)
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            # dweight = sum(dy * kappa * z)
            grad_weight = ((grad_y * z).sum(dim=(0, 2, 3)) * kappa).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            # dbias = sum(dy)
            grad_bias = grad_y.sum(dim=(0, 2, 3)).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None


class MABN2d(nn.Module):
    r"""Moving Average Batch Normalization over a 4-D input (Yan et al., ICLR 2020).

    In training, iteration :math:`t` (``num_batches_tracked`` after this batch) normalizes by
    the simple moving average of the per-channel second moment over the last
    :math:`B` = ``buffer_size`` iterations, without centering:

    .. math::

        \chi_t = \frac{1}{NHW} \sum_{n,h,w} x_{nchw}^2, \qquad
        \chi^{\mathrm{SMA}}_t = \frac{1}{B} \sum_{i=0}^{B-1} \chi_{t-i}, \qquad
        z = \frac{x}{\sqrt{\chi^{\mathrm{SMA}}_t + \epsilon}}, \qquad
        y = \gamma \, (\kappa z) + \beta,

    with the renormalization factor (a constant: no gradient flows through it)

    .. math::

        \kappa = \operatorname{clamp}\left(
            \frac{\sqrt{\chi^{\mathrm{SMA}}_t + \epsilon}}{\sqrt{\text{running\_var} + \epsilon}},
            \tfrac{1}{5}, 5\right),

    fixed at 1 for the first :math:`\max(1000, \text{warmup\_iters})` iterations. The backward
    pass averages its statistic the same way. With :math:`\delta = \frac{\partial L}{\partial y}
    \gamma \kappa`,

    .. math::

        \psi_t = \frac{1}{NHW} \sum_{n,h,w} \delta_{nchw} z_{nchw}, \qquad
        \psi^{\mathrm{SMA}}_t = \frac{1}{B} \sum_{i=0}^{B-1} \psi_{t-i}, \qquad
        \frac{\partial L}{\partial x}
            = \frac{\delta - z \, \psi^{\mathrm{SMA}}_t}{\sqrt{\chi^{\mathrm{SMA}}_t + \epsilon}}.

    While :math:`t \le B` or :math:`t <` ``warmup_iters`` (the authors' schedule),
    :math:`\chi^{\mathrm{SMA}}_t = \chi_t` and :math:`\psi^{\mathrm{SMA}}_t = \psi_t`: the
    layer is then BN without centering, and its backward is the exact gradient of its forward.
    Afterwards the backward is deliberately not the gradient of the forward: the past
    :math:`\psi` are reused as if the batch were :math:`B` times larger, so ``buffer_size`` is
    the simulated batch size over the real one. The backward is stateful: it writes
    :math:`\psi_t` into ``backward_stat_buffer`` (see ``_MABNFunction``), so run one backward
    per training forward.

    ``running_var`` follows MABN's convention (``momentum`` is the decay, unlike PyTorch's BN)
    and, as in the authors' code, averages the statistic the batch was normalized with:
    :math:`\text{running\_var} \leftarrow d \cdot \text{running\_var}
    + (1 - d)\,\chi^{\mathrm{SMA}}_t` (:math:`d` = ``momentum``; the SMA once it is on,
    :math:`\chi_t` before), updated after :math:`\kappa` is computed.
    Evaluation uses :math:`y = \gamma x / \sqrt{\text{running\_var} + \epsilon} + \beta`,
    with no :math:`\kappa`.

    This is the layer of the authors' code, ``MABN.py`` in github.com/megvii-model/MABN (its
    ``buffer_size`` is ``real_B // B`` there): the same schedule, renormalization, running
    variance and backward. A bf16 or float16 input (autocast) is normalized with float32
    statistics and comes back in its own dtype and memory format.

    Pair it with :class:`CenConv2d`: MABN never subtracts a mean, so the conv before it keeps
    its filters zero-mean instead.

    Args:
        num_features: :math:`C` of an input of shape :math:`(N, C, H, W)`.
        buffer_size: :math:`B`, the number of iterations the moving averages span, i.e. the
            simulated batch size divided by the real one. Default: 1 (no averaging).
        eps: added to the second moment before the square root. Default: 1e-5.
        momentum: decay of ``running_var`` (MABN's convention, the weight of the *old* value).
            Default: 0.98.
        warmup_iters: iterations :math:`t <` ``warmup_iters`` use their own batch's
            statistics (as do :math:`t \le B`); :math:`\kappa` stays 1 for
            :math:`\max(1000, \text{warmup\_iters})` iterations. Default: 100.
        affine: learnable per-channel ``weight`` (:math:`\gamma`) and ``bias``
            (:math:`\beta`). Default: ``True``.
        device, dtype: of the parameters and buffers.

    Buffers: ``running_var`` (C,), ``num_batches_tracked`` (the iteration counter :math:`t`),
    ``forward_stat_buffer`` and ``backward_stat_buffer`` (``buffer_size``, C), the windows of
    :math:`\chi` and :math:`\psi`, row :math:`(t - 1) \bmod B` holding iteration :math:`t`.
    All are in the state dict, so a checkpoint resumes the moving averages exactly.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as the input)

    Example::

        >>> conv = CenConv2d(3, 16, kernel_size=3, padding=1)
        >>> norm = MABN2d(16, buffer_size=4, warmup_iters=10)
        >>> y = norm(conv(torch.randn(2, 3, 8, 8)))
        >>> y.mean().backward()
        >>> y.shape, int(norm.num_batches_tracked)
        (torch.Size([2, 16, 8, 8]), 1)
    """

    def __init__(
        self,
        num_features: int,
        buffer_size: int = 1,
        eps: float = 1e-5,
        momentum: float = 0.98,
        warmup_iters: int = 100,
        affine: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_positive_int("num_features", num_features)
        self.buffer_size = check_positive_int("buffer_size", buffer_size)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        check_fraction("momentum", momentum)
        check_int("warmup_iters", warmup_iters, minimum=0)
        self.eps = eps
        self.momentum = momentum
        self.warmup_iters = warmup_iters
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_var", torch.empty(num_features, **factory))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )
        window_shape = (buffer_size, num_features)
        self.register_buffer("forward_stat_buffer", torch.empty(window_shape, **factory))
        self.register_buffer("backward_stat_buffer", torch.empty(window_shape, **factory))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Restart from iteration 0: ``running_var`` = 1, empty windows."""
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()
        self.forward_stat_buffer.zero_()
        self.backward_stat_buffer.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, buffer_size={self.buffer_size}, eps={self.eps}, "
            f"momentum={self.momentum}, warmup_iters={self.warmup_iters}, affine={self.affine}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.num_features)
        if not self.training:
            # y = weight * x / sqrt(running_var + eps) + bias
            scale = (self.running_var + self.eps).rsqrt()
            if self.weight is not None:
                scale = scale * self.weight
            y = x.to(torch.promote_types(accumulation_dtype(x.dtype), scale.dtype))
            y = y * scale.view(1, -1, 1, 1)
            y = y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
            return y.to(x.dtype)

        check_batch_statistics(type(self).__name__, x)
        self.num_batches_tracked.add_(1)
        # .item() syncs with the device once per layer and step; the schedule needs t on the host.
        t = int(self.num_batches_tracked.item())
        step = _MABNStep(
            forward_window=self.forward_stat_buffer,
            backward_window=self.backward_stat_buffer,
            slot=(t - 1) % self.buffer_size,
            # the authors' schedule: own statistics while t <= B or t < warmup_iters
            use_sma=t > self.buffer_size and t >= self.warmup_iters,
            running_var=self.running_var if t > max(RENORM_START, self.warmup_iters) else None,
            eps=self.eps,
        )
        y = _MABNFunction.apply(x, self.weight, self.bias, step)
        # running_var = momentum * running_var + (1 - momentum) * var, with var the statistic
        # the batch was normalized with (the SMA once it is on), as in the authors' code
        with torch.no_grad():
            self.running_var.lerp_(step.var.to(self.running_var.dtype), 1.0 - self.momentum)
        return y


class CenConv2d(nn.Conv2d):
    r"""A 2-D convolution with weight centralization: each filter has its mean subtracted.

    .. math::

        \hat W_{o} = W_{o} - \frac{1}{(C_\text{in} / \text{groups})\, k_H k_W}
            \sum_{i, h, w} W_{o i h w}, \qquad y = \hat W \star x + b.

    The stored ``weight`` is left as it is; the centering happens in every forward, so the
    gradient flows through it (the gradient of each filter has zero mean too). Zero-mean
    filters keep the outputs close to zero-mean, which is what lets :class:`MABN2d` skip the
    centering. Arguments are those of :class:`torch.nn.Conv2d`, except ``bias`` defaults to
    ``False`` (a norm layer follows).

    Shape:
        - Input: :math:`(N, C_\text{in}, H, W)`
        - Output: :math:`(N, C_\text{out}, H_\text{out}, W_\text{out})`, as for ``nn.Conv2d``.

    Example::

        >>> conv = CenConv2d(8, 4, kernel_size=3, padding=1, groups=2)
        >>> conv(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )

    def centered_weight(self) -> torch.Tensor:
        """The filters actually applied: ``weight`` minus each filter's mean."""
        # W_hat = W - mean over (in / groups, kH, kW)                  # (out, in / groups, kH, kW)
        return self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.centered_weight(), self.bias)
