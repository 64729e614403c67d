r"""The fast path of :class:`~dnbook.norms.DynamicNorm2d`: BN's passes over memory, not more.

The teaching path of ``DynamicNorm2d`` follows the equations: normalize (``F.batch_norm``),
pool, run the SC-module, scale, shift; each step reads or writes the whole (N, C, H, W)
activation, and its backward mirrors each. But everything DN needs from the activation is two
numbers per (sample, channel), so the fast path touches it in three places only.

**Forward.** One reduction gives, with :math:`M = HW` pixels,

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

**Backward.** Let :math:`g = \partial L / \partial \hat X`. One reduction gives
:math:`\partial L/\partial A = \sum_{hw} g x` and :math:`\partial L/\partial B = \sum_{hw} g`.
The (N, C) arithmetic carries these back to :math:`\partial L/\partial m` and
:math:`\partial L/\partial q` (through the SC-module's FCs, the batch statistics and the pooled
input). Since :math:`\partial m_{nc}/\partial x = 1/M` and
:math:`\partial q_{nc}/\partial x = 2x/M`, the input's gradient is one more elementwise pass,

.. math::
    \frac{\partial L}{\partial x} = A\, g + C_1 x + C_0, \qquad
    C_1 = \frac{2}{M} \frac{\partial L}{\partial q}, \quad
    C_0 = \frac{1}{M} \frac{\partial L}{\partial m}
    \qquad \text{(per sample and channel)},

which holds every path at once: through :math:`\mu, \sigma^2` (as BN's backward), through
:math:`A, B`, and through the pooled input into the SC-module (absent when
``detach_sc_input``).

:class:`DynamicNormFunction` is those passes; the (N, C) arithmetic between them is a
:class:`Coefficients` object with a forward ``(m, q) -> (A, B)`` and a backward. DN-B's is
written out by hand (:class:`SampleCoefficients`): on the small late layers of a network the
activation passes are cheap and what costs is the number of small (N, C) operations, each a
kernel launch with its fixed price, so fewer of them and no autograd graph between the passes.
DN-C's (batch-shared, and the layer the paper found does not train) is an autograd graph
differentiated with ``torch.autograd.grad`` (:class:`GraphCoefficients`).

Both reductions are PyTorch's inference-mode BatchNorm backward kernel applied to the
activation viewed as one sample of :math:`NC` channels: with running mean 0 and variance 1 it
returns :math:`\sum_{hw} g x` and :math:`\sum_{hw} g` per channel from a single read of
:math:`g` and :math:`x`, faster than ``(g * x).sum()`` (which writes a temporary) and
``g.sum()`` together. The forward uses it with :math:`g = x`.

Cost model, counted by ``dnbook.bench.memory_traffic`` at the ATen level (activation-sized
reads / writes / new tensors, forward | backward; chapter 12): the teaching path 4/3/3 | 10/5/5,
this path 3/2/1 | 6/3/1, ``torch.nn.BatchNorm2d`` (one fused kernel each way) 1/1/1 | 2/1/1.
The price is kernel count: about 30 | 40 kernels for DN-B, most of them on (N, C) tensors,
against BN's 3 | 3; on a 4x4 map they, not the passes, are most of DN-B's time.

Precision: :math:`\sigma^2 = E[x^2] - E[x]^2` loses about :math:`\log_{10}(\mu^2/\sigma^2)` of
float32's seven digits (sums are float32 for half-precision input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from dnbook.norms import batchnorm

if TYPE_CHECKING:
    from dnbook.norms.dynamic import DynamicNorm2d

Tensor = torch.Tensor
aten = torch.ops.aten

# dL/ds from dL/dalpha, as a function of alpha = f(s) (keys: DynamicNorm2d's ``scale``).
# sigmoid: alpha = 2 sigma(s), alpha' = 2 sigma (1 - sigma) = (1 - (alpha - 1)^2) / 2
# tanh:    alpha = 1 + tanh(s), alpha' = 1 - tanh^2 = 1 - (alpha - 1)^2
SCALE_BACKWARDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sigmoid": lambda grad, alpha: aten.tanh_backward(grad, alpha - 1).mul_(0.5),
    "linear": lambda grad, alpha: grad,
    "tanh": lambda grad, alpha: aten.tanh_backward(grad, alpha - 1),
}
# dL/dt from dL/dlambda, as a function of lambda = h(t) (keys: ``shift``).
SHIFT_BACKWARDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "linear": lambda grad, shift: grad,
    "tanh": aten.tanh_backward,  # lambda' = 1 - lambda^2
}
# dL/dh from dL/d act(h), as a function of h (keys: ``activation``).
ACTIVATION_BACKWARDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "relu": lambda grad, h: aten.threshold_backward(grad, h, 0),
    "silu": aten.silu_backward,
    "gelu": aten.gelu_backward,  # nn.GELU's exact form (approximate="none")
}


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision inputs (a bf16 sum loses the variance), else x's dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def _per_channel(t: Tensor, like: Tensor) -> Tensor:
    """(N, C) or (C,) -> (N, C, 1, 1) or (C, 1, 1) in ``like``'s dtype, to broadcast over H, W."""
    return t[..., None, None].to(like.dtype)


def spatial_sums(a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(sum_hw a x, sum_hw a)`` for (N, C, H, W) tensors: (N, C) each, in one read of both.

    PyTorch's BatchNorm backward in inference mode, for an input ``x``, upstream gradient ``a``,
    running mean :math:`\mu` and variance :math:`v`, returns per channel
    :math:`\sum a\,(x - \mu)/\sqrt{v + \epsilon}` (the weight's gradient) and :math:`\sum a`
    (the bias's). With :math:`\mu = 0`, :math:`v = 1`, :math:`\epsilon = 0` and the tensors
    viewed as one sample of :math:`NC` channels, those are the two sums wanted, accumulated in
    float32 for half-precision inputs. (A copy is made for a ``channels_last`` input.)
    """
    n, c, h, w = x.shape
    flat = (1, n * c, h, w)
    zeros = torch.zeros(n * c, dtype=_accumulation_dtype(x), device=x.device)
    ones = torch.ones_like(zeros)
    _, sum_ax, sum_a = aten.native_batch_norm_backward(
        a.reshape(flat), x.reshape(flat), None, zeros, ones, None, None, False, 0.0,
        [False, True, True],
    )  # fmt: skip
    return sum_ax.view(n, c), sum_a.view(n, c)


class Coefficients(Protocol):
    """DN's arithmetic between the two passes: ``forward(m, q) -> (A, B)``, each (N, C) or
    (C,), and its ``backward(dL/dA, dL/dB, needs) -> (dL/dm, dL/dq, weight gradients)``
    (``None`` for a gradient that is zero or not needed; ``needs`` flags the weights)."""

    def forward(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]: ...

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]: ...


class DynamicNormFunction(torch.autograd.Function):
    r"""``apply(x, coefficients, *weights)``: :math:`y = x A + B` with ``(A, B) =
    coefficients.forward(m, q)``, :math:`m, q` the (N, C) pixel means of :math:`x` and
    :math:`x^2`.

    ``weights`` are the parameters ``coefficients`` uses (so that autograd gives them their
    gradients, which ``coefficients.backward`` computes). The forward reads ``x`` once for the
    moments and once more to write ``y``; the backward reads ``g`` and ``x`` once for
    :math:`\sum_{hw} g x`, :math:`\sum_{hw} g`, and once more to write
    :math:`\partial L/\partial x = A g + C_1 x + C_0`. First-order only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, coefficients: Coefficients, *weights: Tensor
    ) -> Tensor:
        pixels = x.shape[2] * x.shape[3]
        sum_square, total = spatial_sums(x, x)
        # m = 1/M sum_hw x,  q = 1/M sum_hw x^2                             # (N, C) each
        mean, mean_square = total / pixels, sum_square / pixels
        scale, shift = coefficients.forward(mean, mean_square)  # A, B
        ctx.save_for_backward(x, scale)
        ctx.coefficients = coefficients
        # y = x * A + B: a multiply, then an in-place add. (torch.addcmul with two broadcast
        # operands takes an unvectorized loop on the CPU, about 3x slower at 4x4 pixels.)
        return (x * _per_channel(scale, x)).add_(_per_channel(shift, x))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, scale = ctx.saved_tensors
        # dL/dA = sum_hw g x,  dL/dB = sum_hw g                             # (N, C) each
        grad_scale, grad_shift = spatial_sums(grad_y, x)
        grad_mean, grad_mean_square, grad_weights = ctx.coefficients.backward(
            grad_scale, grad_shift, ctx.needs_input_grad[2:]
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            pixels = x.shape[2] * x.shape[3]
            # dL/dx = A g + C1 x + C0,  C1 = 2/M dL/dq,  C0 = 1/M dL/dm
            grad_x = grad_y * _per_channel(scale, x)
            if grad_mean_square is not None:
                grad_x.addcmul_(x, _per_channel(grad_mean_square * (2 / pixels), x))
            if grad_mean is not None:
                grad_x.add_(_per_channel(grad_mean / pixels, x))
        return grad_x, None, *grad_weights


class GraphCoefficients:
    """:class:`Coefficients` from any function ``(m, q) -> (A, B)`` made of autograd ops and
    the ``weights`` it uses: the forward records a small graph of its own, the backward
    differentiates it with ``torch.autograd.grad``. Any design option works unchanged; the
    price is autograd's bookkeeping on every small op."""

    def __init__(
        self, function: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], weights: Sequence[Tensor]
    ) -> None:
        self.function = function
        self.weights = tuple(weights)
        # No graph when nothing will need a gradient, as under torch.no_grad().
        self.record = torch.is_grad_enabled()

    def forward(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        with torch.set_grad_enabled(self.record):
            self.moments = (mean.requires_grad_(), mean_square.requires_grad_())
            self.scale, self.shift = self.function(*self.moments)
        return self.scale.detach(), self.shift.detach()

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
        wanted = [w for w, needed in zip(self.weights, needs, strict=True) if needed]
        # A or B is a constant when nothing it depends on needs a gradient (a frozen SC-module
        # in eval, say): autograd.grad refuses such outputs, so only the others go in.
        pairs = zip((self.scale, self.shift), (grad_scale, grad_shift), strict=True)
        outputs = [(out, grad) for out, grad in pairs if out.requires_grad]
        if not outputs:
            return None, None, [None] * len(needs)
        # retain_graph: gradcheck and retain_graph=True callers run the backward again.
        found = iter(
            torch.autograd.grad(
                [out for out, _ in outputs],
                (*self.moments, *wanted),
                [grad for _, grad in outputs],
                retain_graph=True,
                allow_unused=True,
            )
        )
        grad_mean, grad_mean_square = next(found), next(found)
        return grad_mean, grad_mean_square, [next(found) if needed else None for needed in needs]


def batch_statistics(
    layer: DynamicNorm2d, mean: Tensor, mean_square: Tensor, use_batch_stats: bool, pixels: int
) -> tuple[Tensor, Tensor]:
    """``(mu, sigma^2)``, (C,) each: the batch's from the moments of samples of ``pixels``
    pixels (updating the running statistics in training), or the running ones."""
    if not use_batch_stats:
        return layer.running_mean.to(mean.dtype), layer.running_var.to(mean.dtype)
    n, c = mean.shape
    # mu_c = E_n[m_nc],  sigma^2_c = E_n[q_nc] - mu_c^2   (biased, as BN normalizes)
    mu = mean.mean(dim=0)
    var = torch.addcmul(mean_square.mean(dim=0), mu, mu, value=-1).clamp_min(0)
    if layer.training and layer.track_running_stats:
        # torch.nn.BatchNorm2d's update (unbiased running_var; momentum=None: a cumulative
        # average), as written in dnbook's BatchNorm2d; n * M values per channel.
        batchnorm.update_running_stats(layer, mu, var, n * pixels)
    return mu, var


class SampleCoefficients:
    r"""DN-B's (N, C) arithmetic with its backward written out: :class:`Coefficients` for
    :math:`A = \alpha s`, :math:`B = \lambda - \mu A`, :math:`[\alpha, \lambda]` from the
    SC-module on the pooled input.

    The forward keeps what the backward needs (the statistics, the FCs' inputs, ``alpha``,
    ``lambda``); the backward applies the chain rule step by step, each step's equation above
    its line, with one small kernel per elementary operation.
    """

    def __init__(self, layer: DynamicNorm2d, use_batch_stats: bool, pixels: int) -> None:
        self.layer = layer
        self.use_batch_stats = use_batch_stats
        self.pixels = pixels

    def forward(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.layer
        mu, var = batch_statistics(layer, mean, mean_square, self.use_batch_stats, self.pixels)
        # s = 1 / sqrt(sigma^2 + eps)                                       # (C,)
        self.inv_std = torch.rsqrt(var + layer.eps)
        self.mu, self.mean = mu, mean
        if layer.sc_input == "normalized":
            # z = mean_hw(X_tilde) = (m - mu) s: the normalized feature's pool  (N, C)
            self.centered = mean - mu
            pooled = self.centered * self.inv_std
        else:
            pooled = mean  # z = m
        weight_dtype = layer.fc1.weight.dtype
        # [s, t] = FC2(act(FC1(z)))                                         # (N, 2C)
        self.pooled = pooled.to(weight_dtype)
        self.pre_activation = layer.fc1(self.pooled)  # (N, C')
        self.hidden = layer.act(self.pre_activation)
        s, t = layer.fc2(self.hidden).chunk(2, dim=1)  # (N, C) each
        self.alpha, self.shift = layer._alpha_and_shift(s, t)
        # A = alpha s,  B = lambda - mu A                                   # (N, C) each
        self.scale = self.alpha * self.inv_std
        return self.scale, torch.addcmul(self.shift, self.scale, mu, value=-1)

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
        layer, inv_std = self.layer, self.inv_std
        weight_dtype = layer.fc1.weight.dtype
        # B = lambda - mu A:  dL/dlambda = dL/dB,  dL/dA += -mu dL/dB,  dL/dmu = -sum_n A dL/dB
        grad_scale = torch.addcmul(grad_scale, grad_shift, self.mu, value=-1)
        grad_mu = -(grad_shift * self.scale).sum(dim=0)
        # A = alpha s:  dL/dalpha = s dL/dA,  dL/ds = sum_n alpha dL/dA
        grad_alpha = (grad_scale * inv_std).to(weight_dtype)
        grad_inv_std = (grad_scale * self.alpha).sum(dim=0)
        # alpha = f(s), lambda = h(t)
        grad_out = torch.cat(
            [
                SCALE_BACKWARDS[layer.scale](grad_alpha, self.alpha),
                SHIFT_BACKWARDS[layer.shift](grad_shift.to(weight_dtype), self.shift),
            ],
            dim=1,
        )  # dL/d[s, t]: (N, 2C)
        grad_hidden, grad_fc2 = grouped_linear_backward(
            grad_out, self.hidden, layer.fc2.weight, layer.fc2.groups
        )
        grad_pre = ACTIVATION_BACKWARDS[layer.activation](grad_hidden, self.pre_activation)
        # FC1: h = z W1^T:  dL/dW1 = (dL/dh)^T z
        grad_fc1 = grad_pre.t() @ self.pooled if needs[0] else None
        grad_mean = None
        if not layer.detach_sc_input:
            grad_pooled = (grad_pre @ layer.fc1.weight).to(inv_std.dtype)  # dL/dz = dL/dh W1
            if layer.sc_input == "normalized":
                # z = (m - mu) s:  dL/dm = s dL/dz,  dL/dmu -= sum_n s dL/dz,
                # dL/ds += sum_n (m - mu) dL/dz
                grad_mean = grad_pooled * inv_std
                grad_mu -= grad_mean.sum(dim=0)
                grad_inv_std += (grad_pooled * self.centered).sum(dim=0)
            else:
                grad_mean = grad_pooled
        grad_weights = [grad_fc1, grad_fc2 if needs[1] else None]
        if not self.use_batch_stats:
            return grad_mean, None, grad_weights  # mu, sigma^2 are the running constants
        n = self.mean.shape[0]
        # s = (sigma^2 + eps)^(-1/2):  dL/dsigma^2 = -s^3 / 2 dL/ds
        grad_var = grad_inv_std * inv_std.pow(3) * -0.5
        # sigma^2 = E_n[q] - mu^2:  dL/dq = dL/dsigma^2 / N,  dL/dmu -= 2 mu dL/dsigma^2
        grad_mean_square = grad_var / n  # (C,): the same for every sample
        grad_mu = torch.addcmul(grad_mu, self.mu, grad_var, value=-2)
        # mu = E_n[m]:  dL/dm += dL/dmu / N
        grad_mu /= n
        grad_mean = grad_mu if grad_mean is None else grad_mean + grad_mu
        return grad_mean, grad_mean_square, grad_weights


def grouped_linear_backward(
    grad_out: Tensor, inputs: Tensor, weight: Tensor, groups: int
) -> tuple[Tensor, Tensor]:
    """``(dL/dinputs, dL/dweight)`` of :class:`~dnbook.norms.GroupedFC` (no bias) with
    ``groups`` groups, for ``y = GroupedFC(inputs)``: per group ``k``,
    ``dL/dx_k = dL/dy_k W_k`` and ``dL/dW_k = dL/dy_k^T x_k``."""
    n = inputs.shape[0]
    if groups == 1:
        return grad_out @ weight, grad_out.t() @ inputs
    per_group_in = weight.shape[1]
    grad_groups = grad_out.view(n, groups, -1).transpose(0, 1)  # (G, N, out/G)
    weight_groups = weight.view(groups, -1, per_group_in)  # (G, out/G, in/G)
    input_groups = inputs.view(n, groups, per_group_in).transpose(0, 1)  # (G, N, in/G)
    grad_inputs = torch.bmm(grad_groups, weight_groups).transpose(0, 1).reshape(n, -1)
    grad_weight = torch.bmm(grad_groups.transpose(1, 2), input_groups).view_as(weight)
    return grad_inputs, grad_weight


def _dnc_coefficients(
    layer: DynamicNorm2d, use_batch_stats: bool, pixels: int
) -> GraphCoefficients:
    """DN-C's arithmetic as an autograd graph: A, B of shape (C,)."""

    def coefficients(mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        mu, var = batch_statistics(layer, mean, mean_square, use_batch_stats, pixels)
        weight_dtype = layer.fc1.weight.dtype
        s, t = layer._sc_module_dnc(mu.to(weight_dtype), var.to(weight_dtype)).chunk(2, dim=0)
        alpha, shift = layer._alpha_and_shift(s, t)
        # A = alpha s,  B = lambda - mu A: (C,), the same for every sample
        scale = alpha * torch.rsqrt(var + layer.eps)
        return scale.expand_as(mean), (shift - mu * scale).expand_as(mean)

    return GraphCoefficients(coefficients, (layer.fc1.weight, layer.fc2.weight))


def dynamic_norm(layer: DynamicNorm2d, x: Tensor, use_batch_stats: bool) -> Tensor:
    """``layer``'s forward (DN-B or DN-C, any design option) by :class:`DynamicNormFunction`.

    ``tests/test_fast_dynamic.py`` holds it equal to the teaching path in float64: outputs,
    input and weight gradients, running statistics.
    """
    pixels = x.shape[2] * x.shape[3]
    if layer.mode == "B":
        coefficients = SampleCoefficients(layer, use_batch_stats, pixels)
    else:
        coefficients = _dnc_coefficients(layer, use_batch_stats, pixels)
    return DynamicNormFunction.apply(x, coefficients, layer.fc1.weight, layer.fc2.weight)
