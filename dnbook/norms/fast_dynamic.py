r"""The fast path of :class:`~dnbook.norms.DynamicNorm2d`: BN's passes over memory, not more.

The teaching path of ``DynamicNorm2d`` follows the equations: normalize (``F.batch_norm``),
pool, run the SC-module, scale, shift; each step reads or writes the whole (N, C, H, W)
activation, and its backward mirrors each. But everything DN needs from the activation is two
numbers per (sample, channel), so the fast path touches it in three places only.

**Forward.** The input is first shifted by one value per channel, :math:`K_c` (a pixel of the
first sample in training, ``running_mean`` in eval): :math:`x' = x - K`. The output does not
depend on :math:`K`; the shift only keeps the sums below small, so that the variance keeps
float32's digits when the mean is far larger than the spread (the *shifted-data* variance).
One reduction of :math:`x'` gives, with :math:`M = HW` pixels,

.. math::
    m_{nc} = \tfrac{1}{M}\textstyle\sum_{hw} x'_{nchw}, \qquad
    q_{nc} = \tfrac{1}{M}\textstyle\sum_{hw} x'^2_{nchw} .

Everything else is arithmetic on (N, C) or (C,) vectors: the batch statistics
:math:`\mu'_c = \mathrm{mean}_n\, m_{nc}` (so :math:`\mu = K + \mu'`),
:math:`\sigma^2_c = \mathrm{mean}_n\, q_{nc} - \mu'^2_c` and
:math:`s_c = (\sigma^2_c + \epsilon)^{-1/2}`; DN-B's pooled input, :math:`K + m_{nc}`
(``sc_input="raw"``) or :math:`\mathrm{mean}_{hw}\tilde X = (m_{nc} - \mu'_c)\, s_c`
(``"normalized"``, no extra pass); the SC-module's :math:`\alpha, \lambda`. Eq. 6-7 then fold
into one affine map per (n, c), written in one elementwise pass:

.. math::
    \hat X = (X - \mu)\, s\, \alpha + \lambda = X' A + B, \qquad A = \alpha s, \quad
    B = \lambda - \mu' A .

**Backward.** Let :math:`g = \partial L / \partial \hat X`. One reduction gives
:math:`\partial L/\partial A = \sum_{hw} g x'` and :math:`\partial L/\partial B = \sum_{hw} g`.
The (N, C) arithmetic carries these back to :math:`\partial L/\partial m` and
:math:`\partial L/\partial q` (through the SC-module's FCs, the batch statistics and the pooled
input). Since :math:`\partial m_{nc}/\partial x = 1/M` and
:math:`\partial q_{nc}/\partial x = 2x'/M` (:math:`K` is a constant: the output does not
depend on it), the input's gradient is one more elementwise pass,

.. math::
    \frac{\partial L}{\partial x} = A\, g + C_1 x' + C_0, \qquad
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
``g.sum()`` together. The forward uses it with :math:`g = x = x'`.

:func:`dynamic_norm` is the functional: tensors and options in, ``(y, batch_mean, batch_var)``
out; :class:`~dnbook.norms.DynamicNorm2d` owns the running statistics and the SC-module.

Cost model, counted by ``dnbook.bench.memory_traffic`` at the ATen level (activation-sized
reads / writes / new tensors, forward | backward; chapter 12): the teaching path 4/3/3 | 10/5/5,
this path 4/3/2 | 6/3/1 (the shift is one more pass; the backward reads the saved
:math:`x'` in place of :math:`x`), ``torch.nn.BatchNorm2d`` (one fused kernel each way)
1/1/1 | 2/1/1.
The price is kernel count: about 30 | 40 kernels for DN-B, most of them on (N, C) tensors,
against BN's 3 | 3; on a 4x4 map they, not the passes, are most of DN-B's time.

Precision and dtypes: the statistics and the SC-module are computed in float32 for half-precision
inputs (bf16 or float16, as under autocast; the SC-module runs with autocast off, in its
weights' dtype), and the output and the input's gradient have the input's dtype, as PyTorch's
BatchNorm does. ``tests/test_fast_dynamic.py`` holds the float32 error against float64 to at
most twice ``torch.nn.BatchNorm2d``'s at mean/std ratios up to 1e4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn import functional as F

Tensor = torch.Tensor
aten = torch.ops.aten

# The activation between FC1 and FC2 (keys: DynamicNorm2d's ``activation``).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
}

# How FC2's first half s becomes the scale alpha. All three give alpha = 1 at s = 0.
SCALES: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": lambda s: 2 * torch.sigmoid(s),  # alpha in (0, 2)
    "linear": lambda s: 1 + s,  # alpha unbounded
    "tanh": lambda s: 1 + torch.tanh(s),  # alpha in (0, 2)
}

# How FC2's second half t becomes the shift lambda. Both give lambda = 0 at t = 0.
SHIFTS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda t: t,  # lambda unbounded
    "tanh": torch.tanh,  # lambda in (-1, 1)
}

MODES = ("B", "C")
MERGES = ("fc1", "fc2")
SC_INPUTS = ("normalized", "raw")

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


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (a bf16 sum loses the variance), else ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


def _per_channel(t: Tensor, like: Tensor) -> Tensor:
    """(N, C) or (C,) -> (N, C, 1, 1) or (C, 1, 1) in ``like``'s dtype, to broadcast over H, W."""
    return t[..., None, None].to(like.dtype)


def _no_autocast(device: torch.device) -> torch.autocast:
    """A context with autocast off: the SC-module's small FCs run in their weights' dtype."""
    return torch.autocast(device.type, enabled=False)


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
    zeros = torch.zeros(n * c, dtype=accumulation_dtype(x.dtype), device=x.device)
    ones = torch.ones_like(zeros)
    _, sum_ax, sum_a = aten.native_batch_norm_backward(
        a.reshape(flat), x.reshape(flat), None, zeros, ones, None, None, False, 0.0,
        [False, True, True],
    )  # fmt: skip
    return sum_ax.view(n, c), sum_a.view(n, c)


def grouped_linear(input: Tensor, weight: Tensor, groups: int) -> Tensor:
    """:class:`~dnbook.norms.GroupedFC`'s forward (no bias) on tensors: ``weight`` is
    (out, in / groups); per group ``k``, ``y_k = x_k W_k^T``."""
    if groups == 1:
        return F.linear(input, weight)
    n = input.shape[0]
    input_groups = input.reshape(n, groups, -1).transpose(0, 1)  # (G, N, in/G)
    weight_groups = weight.view(groups, -1, weight.shape[1])  # (G, out/G, in/G)
    # bmm, which FlopCounterMode counts (chapter 4)
    return torch.bmm(input_groups, weight_groups.transpose(1, 2)).transpose(0, 1).reshape(n, -1)


def grouped_linear_backward(
    grad_out: Tensor, inputs: Tensor, weight: Tensor, groups: int
) -> tuple[Tensor, Tensor]:
    """``(dL/dinputs, dL/dweight)`` of :func:`grouped_linear` with ``groups`` groups: per group
    ``k``, ``dL/dx_k = dL/dy_k W_k`` and ``dL/dW_k = dL/dy_k^T x_k``."""
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


def _groups(fc1_weight: Tensor, fc2_weight: Tensor) -> int:
    """FC2's number of groups, from the shapes: (C', C) and (2C, C' / G)."""
    return fc1_weight.shape[0] // fc2_weight.shape[1]


class Coefficients(Protocol):
    """DN's arithmetic between the two passes: ``forward(m, q) -> (A, B)``, each (N, C) or
    (C,), and its ``backward(dL/dA, dL/dB, needs) -> (dL/dm, dL/dq, weight gradients)``
    (``None`` for a gradient that is zero or not needed; ``needs`` flags the weights)."""

    def forward(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]: ...

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]: ...


class DynamicNormFunction(torch.autograd.Function):
    r"""``apply(x, center, coefficients, *weights)``: :math:`y = (x - K) A + B` with
    ``(A, B) = coefficients.forward(m, q)``, :math:`m, q` the (N, C) pixel means of
    :math:`x' = x - K` and :math:`x'^2`, :math:`K` = ``center`` (C,), a constant.

    ``weights`` are the parameters ``coefficients`` uses (so that autograd gives them their
    gradients, which ``coefficients.backward`` computes; ``None`` entries are allowed). The
    forward reads ``x`` once to write :math:`x'` (kept for the backward), once more for the
    moments and once more to write ``y``; the backward reads ``g`` and :math:`x'` once for
    :math:`\sum_{hw} g x'`, :math:`\sum_{hw} g`, and once more to write
    :math:`\partial L/\partial x = A g + C_1 x' + C_0`. First-order only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, center: Tensor, coefficients: Coefficients, *weights: Tensor
    ) -> Tensor:
        pixels = x.shape[2] * x.shape[3]
        # x' = x - K: exact where x is near K (within a factor 2), which is where it matters
        centered = x - center.to(x.dtype)[:, None, None]
        sum_square, total = spatial_sums(centered, centered)
        # m = 1/M sum_hw x',  q = 1/M sum_hw x'^2                           # (N, C) each
        mean, mean_square = total / pixels, sum_square / pixels
        scale, shift = coefficients.forward(mean, mean_square)  # A, B
        ctx.save_for_backward(centered, scale)
        ctx.coefficients = coefficients
        # y = x' * A + B: a multiply, then an in-place add. (torch.addcmul with two broadcast
        # operands takes an unvectorized loop on the CPU, about 3x slower at 4x4 pixels.)
        return (centered * _per_channel(scale, x)).add_(_per_channel(shift, x))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        centered, scale = ctx.saved_tensors
        # dL/dA = sum_hw g x',  dL/dB = sum_hw g                            # (N, C) each
        grad_scale, grad_shift = spatial_sums(grad_y, centered)
        grad_mean, grad_mean_square, grad_weights = ctx.coefficients.backward(
            grad_scale, grad_shift, ctx.needs_input_grad[3:]
        )
        grad_x = None
        if ctx.needs_input_grad[0]:
            pixels = centered.shape[2] * centered.shape[3]
            # dL/dx = A g + C1 x' + C0,  C1 = 2/M dL/dq,  C0 = 1/M dL/dm
            grad_x = grad_y * _per_channel(scale, grad_y)
            if grad_mean_square is not None:
                grad_x.addcmul_(centered, _per_channel(grad_mean_square * (2 / pixels), grad_y))
            if grad_mean is not None:
                grad_x.add_(_per_channel(grad_mean / pixels, grad_y))
        return grad_x, None, None, *grad_weights


class GraphCoefficients:
    """:class:`Coefficients` from any function ``(m, q) -> (A, B)`` made of autograd ops and
    the ``weights`` it uses: the forward records a small graph of its own, the backward
    differentiates it with ``torch.autograd.grad``. Any design option works unchanged; the
    price is autograd's bookkeeping on every small op."""

    def __init__(
        self,
        function: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        weights: Sequence[Tensor | None],
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
        outputs = [(out, grad.to(out.dtype)) for out, grad in pairs if out.requires_grad]
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
    mean: Tensor,
    mean_square: Tensor,
    center: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(mu - K, sigma^2, mu)``, (C,) each, from the moments ``mean``, ``mean_square`` (N, C)
    of :math:`x - K` (``center`` = :math:`K`): the batch's (``training``) or the running ones."""
    if not training:
        mu = running_mean.to(mean.dtype)
        return mu - center, running_var.to(mean.dtype), mu
    # mu' = E_n[m_nc],  sigma^2 = E_n[q_nc] - mu'^2   (biased, as BN normalizes)
    mu_shifted = mean.mean(dim=0)
    var = torch.addcmul(mean_square.mean(dim=0), mu_shifted, mu_shifted, value=-1).clamp_min(0)
    return mu_shifted, var, mu_shifted + center


class SampleCoefficients:
    r"""DN-B's (N, C) arithmetic with its backward written out: :class:`Coefficients` for
    :math:`A = \alpha s`, :math:`B = \lambda - \mu' A`, :math:`[\alpha, \lambda]` from the
    SC-module on the pooled input.

    The forward keeps what the backward needs (the statistics, the FCs' inputs, ``alpha``,
    ``lambda``); the backward applies the chain rule step by step, each step's equation above
    its line, with one small kernel per elementary operation.
    """

    def __init__(self, statistics: Callable, weights: Sequence[Tensor | None], options: dict):
        self.statistics = statistics  # (m, q) -> (mu', sigma^2, mu), see batch_statistics
        self.fc1_weight, self.fc1_bias, self.fc2_weight = weights
        self.options = options

    def forward(self, mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        options = self.options
        self.mu, self.var, self.batch_mean = self.statistics(mean, mean_square)
        mu = self.mu
        # s = 1 / sqrt(sigma^2 + eps)                                       # (C,)
        self.inv_std = torch.rsqrt(self.var + options["eps"])
        self.mean = mean
        if options["sc_input"] == "normalized":
            # z = mean_hw(X_tilde) = (m - mu') s: the normalized feature's pool  (N, C)
            self.centered = mean - mu
            pooled = self.centered * self.inv_std
        else:
            pooled = mean + options["center"]  # z = K + m, the raw feature's pool
        weight_dtype = self.fc1_weight.dtype
        with _no_autocast(mean.device):
            # [s, t] = FC2(act(FC1(z)))                                     # (N, 2C)
            self.pooled = pooled.to(weight_dtype)
            self.pre_activation = F.linear(self.pooled, self.fc1_weight, self.fc1_bias)  # (N, C')
            self.hidden = ACTIVATIONS[options["activation"]](self.pre_activation)
            self.groups = _groups(self.fc1_weight, self.fc2_weight)
            s, t = grouped_linear(self.hidden, self.fc2_weight, self.groups).chunk(2, dim=1)
            self.alpha, self.shift = SCALES[options["scale"]](s), SHIFTS[options["shift"]](t)
        if options["affine_hook"] is not None:
            options["affine_hook"](self.alpha.detach(), self.shift.detach())
        # A = alpha s,  B = lambda - mu' A                                  # (N, C) each
        self.scale = self.alpha * self.inv_std
        return self.scale, torch.addcmul(self.shift, self.scale, mu, value=-1)

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
        options, inv_std = self.options, self.inv_std
        weight_dtype = self.fc1_weight.dtype
        # B = lambda - mu' A:  dL/dlambda = dL/dB,  dL/dA += -mu' dL/dB,  dL/dmu' = -sum_n A dL/dB
        grad_scale = torch.addcmul(grad_scale, grad_shift, self.mu, value=-1)
        grad_mu = -(grad_shift * self.scale).sum(dim=0)
        # A = alpha s:  dL/dalpha = s dL/dA,  dL/ds = sum_n alpha dL/dA
        grad_alpha = (grad_scale * inv_std).to(weight_dtype)
        grad_inv_std = (grad_scale * self.alpha).sum(dim=0)
        # alpha = f(s), lambda = h(t)
        grad_out = torch.cat(
            [
                SCALE_BACKWARDS[options["scale"]](grad_alpha, self.alpha),
                SHIFT_BACKWARDS[options["shift"]](grad_shift.to(weight_dtype), self.shift),
            ],
            dim=1,
        )  # dL/d[s, t]: (N, 2C)
        grad_hidden, grad_fc2 = grouped_linear_backward(
            grad_out, self.hidden, self.fc2_weight, self.groups
        )
        grad_pre = ACTIVATION_BACKWARDS[options["activation"]](grad_hidden, self.pre_activation)
        # FC1: h = z W1^T + b1:  dL/dW1 = (dL/dh)^T z,  dL/db1 = sum_n dL/dh
        grad_fc1 = grad_pre.t() @ self.pooled if needs[0] else None
        grad_fc1_bias = grad_pre.sum(dim=0) if needs[1] else None
        grad_mean = None
        if not options["detach_sc_input"]:
            grad_pooled = (grad_pre @ self.fc1_weight).to(inv_std.dtype)  # dL/dz = dL/dh W1
            if options["sc_input"] == "normalized":
                # z = (m - mu') s:  dL/dm = s dL/dz,  dL/dmu' -= sum_n s dL/dz,
                # dL/ds += sum_n (m - mu') dL/dz
                grad_mean = grad_pooled * inv_std
                grad_mu -= grad_mean.sum(dim=0)
                grad_inv_std += (grad_pooled * self.centered).sum(dim=0)
            else:
                grad_mean = grad_pooled
        grad_weights = [grad_fc1, grad_fc1_bias, grad_fc2 if needs[2] else None]
        if not options["training"]:
            return grad_mean, None, grad_weights  # mu, sigma^2 are the running constants
        n = self.mean.shape[0]
        # s = (sigma^2 + eps)^(-1/2):  dL/dsigma^2 = -s^3 / 2 dL/ds
        grad_var = grad_inv_std * inv_std.pow(3) * -0.5
        # sigma^2 = E_n[q] - mu'^2:  dL/dq = dL/dsigma^2 / N,  dL/dmu' -= 2 mu' dL/dsigma^2
        grad_mean_square = grad_var / n  # (C,): the same for every sample
        grad_mu = torch.addcmul(grad_mu, self.mu, grad_var, value=-2)
        # mu' = E_n[m]:  dL/dm += dL/dmu' / N
        grad_mu /= n
        grad_mean = grad_mu if grad_mean is None else grad_mean + grad_mu
        return grad_mean, grad_mean_square, grad_weights


def _channel_coefficients(
    statistics: Callable, weights: Sequence[Tensor | None], options: dict
) -> GraphCoefficients:
    """DN-C's arithmetic as an autograd graph: A, B of shape (C,), expanded to (N, C)."""
    fc1_weight, fc1_bias, fc2_weight = weights
    groups = _groups(fc1_weight, fc2_weight)

    def coefficients(mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor]:
        mu, var, batch_mean = statistics(mean, mean_square)
        result.update(mu=mu, var=var, batch_mean=batch_mean)
        with _no_autocast(mean.device):
            # the SC-module's input: E[X] and Std[X] = sqrt(Var[X] + eps), as two branches
            branches = torch.stack([batch_mean, torch.sqrt(var + options["eps"])])  # (2, C)
            branches = branches.to(fc1_weight.dtype)
            if options["detach_sc_input"]:
                branches = branches.detach()
            hidden = F.linear(branches, fc1_weight, fc1_bias)  # (2, C'): shared weights
            act = ACTIVATIONS[options["activation"]]
            if options["merge"] == "fc1":
                # [s, t] = FC2(act(FC1(E) + FC1(Std)))
                st = grouped_linear(act(hidden.sum(dim=0, keepdim=True)), fc2_weight, groups)
            else:
                # [s, t] = FC2(act(FC1(E))) + FC2(act(FC1(Std)))
                st = grouped_linear(act(hidden), fc2_weight, groups).sum(dim=0, keepdim=True)
            s, t = st[0].chunk(2)
            alpha, shift = SCALES[options["scale"]](s), SHIFTS[options["shift"]](t)
        if options["affine_hook"] is not None:
            options["affine_hook"](alpha.detach(), shift.detach())
        # A = alpha s,  B = lambda - mu' A: (C,), the same for every sample
        scale = alpha * torch.rsqrt(var + options["eps"])
        return scale.expand_as(mean), (shift - mu * scale).expand_as(mean)

    result: dict[str, Tensor] = {}
    graph = GraphCoefficients(coefficients, weights)
    graph.result = result
    return graph


def dynamic_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    fc1_weight: Tensor,
    fc1_bias: Tensor | None,
    fc2_weight: Tensor,
    training: bool = False,
    eps: float = 1e-5,
    *,
    mode: str = "B",
    activation: str = "relu",
    scale: str = "sigmoid",
    shift: str = "tanh",
    merge: str = "fc1",
    sc_input: str = "normalized",
    detach_sc_input: bool = False,
    affine_hook: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Dynamic Normalization of an (N, C, H, W) ``input``: returns ``(y, mean, var)``.

    The functional form of :class:`~dnbook.norms.DynamicNorm2d` (which documents the
    equations and the options), in the manner of ``torch.nn.functional.batch_norm``: it reads
    the statistics and the SC-module's weights and writes nothing; the caller updates any
    running statistics from the returned ``mean`` and biased ``var``.

    Args:
        input: (N, C, H, W), any floating dtype and memory format.
        running_mean, running_var: (C,), used when ``training`` is ``False`` (may be ``None``
            otherwise).
        fc1_weight, fc1_bias: FC1's (C', C) weight and (C',) bias or ``None``.
        fc2_weight: the grouped FC2's (2C, C'/G) weight; G follows from the shapes.
        training: normalize with the batch's statistics (``True``) or the running ones.
        eps: added to the variance (default 1e-5).
        mode, activation, scale, shift, merge, sc_input, detach_sc_input: as in
            :class:`~dnbook.norms.DynamicNorm2d`.
        affine_hook: if given, called once with the detached :math:`\alpha` and
            :math:`\lambda` ((N, C) for DN-B, (C,) for DN-C); ``None`` (default) costs nothing.

    Returns:
        ``y`` (the input's shape, dtype and memory format), and the (C,) ``mean`` and biased
        ``var`` it normalized with (the batch's in training, else the running ones), in
        float32 for half-precision inputs (else in the input's dtype), not differentiable.
    """
    if not training and (running_mean is None or running_var is None):
        raise ValueError("dynamic_norm: training=False needs running_mean and running_var")
    stats_dtype = accumulation_dtype(input.dtype)
    if training:
        # K: one pixel per channel, near the channel's values (the output does not depend on it)
        center = input[0, :, input.shape[2] // 2, input.shape[3] // 2].detach().clone()
    else:
        center = running_mean.detach().to(input.dtype)
    center_stats = center.to(stats_dtype)

    def statistics(mean: Tensor, mean_square: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return batch_statistics(
            mean, mean_square, center_stats, running_mean, running_var, training
        )

    options = {
        "eps": eps,
        "activation": activation,
        "scale": scale,
        "shift": shift,
        "merge": merge,
        "sc_input": sc_input,
        "detach_sc_input": detach_sc_input,
        "training": training,
        "center": center_stats,
        "affine_hook": affine_hook,
    }
    weights = (fc1_weight, fc1_bias, fc2_weight)
    if mode == "B":
        coefficients = SampleCoefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.batch_mean, coefficients.var
    else:
        coefficients = _channel_coefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.result["batch_mean"], coefficients.result["var"]
    return y, mean.detach(), var.detach()
