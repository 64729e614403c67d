r"""The fast path of :class:`~dnbook.norms.DynamicNorm2d`: BN's passes over memory, not more.

The teaching path of ``DynamicNorm2d`` follows the equations: normalize (``F.batch_norm``),
pool, run the SC-module, scale, shift; each step reads or writes the whole (N, C, H, W)
activation, and its backward mirrors each. But everything DN needs from the activation is two
numbers per (sample, channel), so the fast path touches it in three places only.

**Forward.** One reduction pass gives, with :math:`M = HW` pixels,

.. math::
    m_{nc} = \tfrac{1}{M}\textstyle\sum_{hw} x_{nchw}, \qquad
    q_{nc} = \tfrac{1}{M}\textstyle\sum_{hw} x_{nchw}^2 .

Everything else is arithmetic on (N, C) or (C,) vectors: the batch statistics
:math:`\mu_c = \mathrm{mean}_n\, m_{nc}`, :math:`\sigma^2_c = \mathrm{mean}_n\, q_{nc} - \mu_c^2`
and :math:`s_c = (\sigma^2_c + \epsilon)^{-1/2}`; DN-B's pooled input, :math:`m_{nc}`
(``sc_input="raw"``) or :math:`\mathrm{mean}_{hw}\tilde X = (m_{nc} - \mu_c)\, s_c`
(``"normalized"``, no extra pass); the SC-module's :math:`\alpha, \lambda`. Eq. 6-7 then fold
into one affine map per (n, c), written in one elementwise pass:

.. math::
    \hat X = (X - \mu)\, s\, \alpha + \lambda = X A + B, \qquad A = \alpha s, \quad
    B = \lambda - \mu A .

**Backward.** Let :math:`g = \partial L / \partial \hat X`. One pass reduces
:math:`\partial L/\partial A = \sum_{hw} g x` and :math:`\partial L/\partial B = \sum_{hw} g`.
Autograd carries these (N, C) gradients back through the (N, C) arithmetic (the SC-module's
FCs, the batch statistics, the pooled input) to :math:`\partial L/\partial m` and
:math:`\partial L/\partial q`. Since :math:`\partial m_{nc}/\partial x = 1/M` and
:math:`\partial q_{nc}/\partial x = 2x/M`, the input's gradient is one more elementwise pass,

.. math::
    \frac{\partial L}{\partial x} = A\, g + C_1 x + C_0, \qquad
    C_1 = \frac{2}{M} \frac{\partial L}{\partial q}, \quad
    C_0 = \frac{1}{M} \frac{\partial L}{\partial m}
    \qquad \text{(per sample and channel)},

which holds every path at once: through :math:`\mu, \sigma^2` (as BN's backward), through
:math:`A, B`, and through the pooled input into the SC-module (absent when
``detach_sc_input``). :class:`DynamicNormFunction` is that forward and backward; the (N, C)
arithmetic between its two passes is an ordinary autograd graph that it builds in its forward
and differentiates in its backward, so every design option of the layer needs no code here.

Cost model, counted by ``dnbook.bench.memory_traffic`` at the ATen level (activation-sized
reads / writes / new tensors, forward | backward): the teaching path 4/3/3 | 10/5/5, this path
4/2/1 | 8/4/1, ``torch.nn.BatchNorm2d`` (one fused kernel each way) 1/1/1 | 2/1/1. New
activation-sized tensors are the dearest on a shared CPU (fresh memory to map and fault in),
so the backward writes its input gradient into the memory of its one temporary. The price is
kernel count: about 30 | 50 small (N, C) kernels, against BN's 3 | 3.

Precision: :math:`\sigma^2 = E[x^2] - E[x]^2` loses about :math:`\log_{10}(\mu^2/\sigma^2)` of
float32's seven digits (sums are float32 for half-precision input). PyTorch's CPU BatchNorm
accumulates in float64, which is one reason it is slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from dnbook.norms import batchnorm

if TYPE_CHECKING:
    from dnbook.norms.dynamic import DynamicNorm2d

SPATIAL_DIMS = (2, 3)

# (m, q) -> (A, B): the (N, C) arithmetic between the two passes, built from autograd ops.
Coefficients = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (a bf16 sum loses the variance), else x's dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, C, 1, 1) in ``like``'s dtype, to broadcast over H, W."""
    return t[..., None, None].to(like.dtype)


def spatial_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, q)``: each (sample, channel)'s mean and mean square over the pixels, (N, C) each.

    Two fused reductions: ``sum`` and ``vector_norm`` write no temporary (``(x * x).sum()``
    would write one, as ``torch.linalg.vecdot`` does).
    """
    pixels = x.shape[2] * x.shape[3]
    dtype = _accumulation_dtype(x)
    # m = 1/M sum_hw x                                                      # (N, C)
    mean = x.sum(SPATIAL_DIMS, dtype=dtype) / pixels
    # q = 1/M sum_hw x^2 = ||x||^2 / M                                      # (N, C)
    mean_square = torch.linalg.vector_norm(x, dim=SPATIAL_DIMS, dtype=dtype).square() / pixels
    return mean, mean_square


class DynamicNormFunction(torch.autograd.Function):
    r"""``apply(x, coefficients, *weights)``: :math:`y = x A + B` with ``(A, B) =
    coefficients(m, q)``, :math:`m, q` the (N, C) pixel means of :math:`x` and :math:`x^2`.

    ``coefficients`` is any function of ``(m, q)`` made of autograd ops, ``(N, C) -> (N, C)``
    each, and ``weights`` the parameters it uses (so that they receive gradients). The forward
    reads ``x`` for the moments and once more to write ``y``; the backward reduces
    :math:`\sum_{hw} g x`, :math:`\sum_{hw} g`, differentiates ``coefficients`` with autograd,
    and writes :math:`\partial L/\partial x = A g + C_1 x + C_0` into the memory of its one
    temporary. First-order only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: torch.Tensor, coefficients: Coefficients, *weights: torch.Tensor
    ) -> torch.Tensor:
        moments = spatial_moments(x)
        # The (N, C) arithmetic as a small graph of its own, differentiated in backward (no
        # graph when nothing needs a gradient, as under torch.no_grad()).
        with torch.set_grad_enabled(any(ctx.needs_input_grad)):
            moments = tuple(moment.requires_grad_() for moment in moments)
            scale, shift = coefficients(*moments)  # A, B: (N, C) each
        ctx.save_for_backward(x)
        ctx.graph = (moments, weights, scale, shift)
        # y = x * A + B: a multiply, then an in-place add. (torch.addcmul with two broadcast
        # operands takes an unvectorized loop on the CPU, about 3x slower at 4x4 pixels.)
        return (x * _per_channel(scale.detach(), x)).add_(_per_channel(shift.detach(), x))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        (mean, mean_square), weights, scale, shift = ctx.graph
        dtype = _accumulation_dtype(x)
        # g * x: the one full-size tensor the backward allocates; dL/dx reuses its memory.
        buffer = grad_y * x
        # dL/dA = sum_hw g x,  dL/dB = sum_hw g                             # (N, C) each
        grads = (buffer.sum(SPATIAL_DIMS, dtype=dtype), grad_y.sum(SPATIAL_DIMS, dtype=dtype))
        # dL/dm, dL/dq and the weights' gradients, by autograd through the (N, C) graph.
        # retain_graph: gradcheck and retain_graph=True callers run the backward again.
        wanted = [w for w, needed in zip(weights, ctx.needs_input_grad[2:], strict=True) if needed]
        inputs = (mean, mean_square, *wanted)
        # A or B is a constant when nothing it depends on needs a gradient (a frozen SC-module
        # in eval, say): autograd.grad refuses such outputs, so only the others go in.
        pairs = zip((scale, shift), grads, strict=True)
        outputs = [(out, grad) for out, grad in pairs if out.requires_grad]
        found = iter(
            torch.autograd.grad(
                [out for out, _ in outputs],
                inputs,
                [grad for _, grad in outputs],
                retain_graph=True,
                allow_unused=True,
            )
            if outputs
            else [None] * len(inputs)
        )
        grad_mean, grad_mean_square = next(found), next(found)
        grad_weights = [next(found) if needed else None for needed in ctx.needs_input_grad[2:]]
        grad_x = None
        if ctx.needs_input_grad[0]:
            pixels = x.shape[2] * x.shape[3]
            # dL/dx = A g + C1 x + C0,  C1 = 2/M dL/dq,  C0 = 1/M dL/dm   (in place, in buffer)
            grad_x = torch.mul(grad_y, _per_channel(scale.detach(), x), out=buffer)
            if grad_mean is not None:
                grad_x.add_(_per_channel(grad_mean / pixels, x))
            if grad_mean_square is not None:
                grad_x.addcmul_(x, _per_channel(grad_mean_square * (2 / pixels), x))
        return grad_x, None, *grad_weights


def dynamic_norm(layer: DynamicNorm2d, x: torch.Tensor, use_batch_stats: bool) -> torch.Tensor:
    """``layer``'s forward (DN-B or DN-C, any design option) by :class:`DynamicNormFunction`.

    ``tests/test_fast_dynamic.py`` holds it equal to the teaching path in float64: outputs,
    input and weight gradients, running statistics.
    """
    n, c = x.shape[:2]
    update_running_stats = layer.training and layer.track_running_stats

    def coefficients(sample_mean: torch.Tensor, sample_mean_square: torch.Tensor):
        if use_batch_stats:
            # mu_c = E_n[m_nc],  sigma^2_c = E_n[q_nc] - mu_c^2   (biased, as BN normalizes)
            mean = sample_mean.mean(dim=0)
            var = (sample_mean_square.mean(dim=0) - mean.square()).clamp_min(0)
            if update_running_stats:
                # torch.nn.BatchNorm2d's update (unbiased running_var; momentum=None: a
                # cumulative average), as written in dnbook's BatchNorm2d.
                batchnorm.update_running_stats(layer, mean.detach(), var.detach(), x.numel() // c)
        else:
            mean, var = layer.running_mean, layer.running_var
        # s = 1 / sqrt(sigma^2 + eps)                                       # (C,)
        inv_std = torch.rsqrt(var + layer.eps)
        if layer.mode == "B":
            # mean_hw(X_tilde) = (m - mu) s: the normalized feature's pool, without the feature
            pooled = sample_mean if layer.sc_input == "raw" else (sample_mean - mean) * inv_std
            s, t = layer._sc_module(pooled.to(x.dtype)).chunk(2, dim=1)  # (N, C) each
        else:
            s, t = layer._sc_module_dnc(mean.to(x.dtype), var.to(x.dtype)).chunk(2, dim=0)
        alpha, shift = layer._alpha_and_shift(s, t)
        # A = alpha s,  B = lambda - mu A                                   # (N, C) each
        scale = alpha * inv_std
        return scale.expand(n, c), (shift - mean * scale).expand(n, c)

    return DynamicNormFunction.apply(x, coefficients, *layer.parameters())
