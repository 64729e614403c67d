r"""The fast path of :class:`~dnbook.norms.DynamicNorm2d`: BN's passes over memory, not more.

The teaching path of ``DynamicNorm2d`` follows the equations: normalize (``F.batch_norm``),
pool, run the SC-module, scale, shift; each step reads or writes the whole (N, C, H, W)
activation, and its backward mirrors each. But everything DN needs from the activation is two
numbers per (sample, channel), so the fast path touches it in three places only.

**Forward.** The input is first shifted by one value per channel, :math:`K_c` (a pixel of the
first sample in training, ``running_mean`` in eval): :math:`x' = x - K`. The output does not
depend on :math:`K`; the shift only keeps the sums below small, so that the variance keeps
float32's digits when the mean is far larger than the spread (the *shifted-data* variance).
One reduction of :math:`x'` gives, with :math:`P = HW` positions,

.. math::
    m_{nc} = \tfrac{1}{P}\textstyle\sum_{hw} x'_{nchw}, \qquad
    q_{nc} = \tfrac{1}{P}\textstyle\sum_{hw} x'^2_{nchw} .

Everything else is arithmetic on (N, C) or (C,) vectors: the batch statistics
:math:`\mu'_c = \mathrm{mean}_n\, m_{nc}` (so :math:`\mu = K + \mu'`),
:math:`\sigma^2_c = \mathrm{mean}_n\, q_{nc} - \mu'^2_c` and
:math:`s_c = (\sigma^2_c + \epsilon)^{-1/2}`; DN-B's pooled input, :math:`K + m_{nc}`
(``sc_input="raw"``) or :math:`\mathrm{mean}_{hw}\hat X = (m_{nc} - \mu'_c)\, s_c`
(``"normalized"``, no extra pass); the SC-module's :math:`\alpha, \lambda`. Eq. 6-7 then fold
into one affine map per (n, c), written in one elementwise pass:

.. math::
    Y = (X - \mu)\, s\, \alpha + \lambda = X' A + B, \qquad A = \alpha s, \quad
    B = \lambda - \mu' A .

**Backward.** Let :math:`\bar Y = \partial L / \partial Y`. One reduction gives
:math:`\partial L/\partial A = \sum_{hw} \bar Y x'` and
:math:`\partial L/\partial B = \sum_{hw} \bar Y`.
The (N, C) arithmetic carries these back to :math:`\partial L/\partial m` and
:math:`\partial L/\partial q` (through the SC-module's FCs, the batch statistics and the pooled
input). Since :math:`\partial m_{nc}/\partial x = 1/P` and
:math:`\partial q_{nc}/\partial x = 2x'/P` (:math:`K` is a constant: the output does not
depend on it), the input's gradient is one more elementwise pass,

.. math::
    \frac{\partial L}{\partial x} = A\, \bar Y + C_1 x' + C_0, \qquad
    C_1 = \frac{2}{P} \frac{\partial L}{\partial q}, \quad
    C_0 = \frac{1}{P} \frac{\partial L}{\partial m}
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

**Layouts.** Every pass works in the input's own memory format, so no activation is copied
to another layout (``channels_last`` is what the CPU's convolutions are fastest in):

- *contiguous* (N, C, H, W): both reductions are PyTorch's inference-mode BatchNorm backward
  kernel applied to the activation viewed as one sample of :math:`NC` channels: with running
  mean 0 and variance 1 it returns :math:`\sum_{hw} g x` and :math:`\sum_{hw} g` per channel
  from a single read of :math:`g` and :math:`x` (the forward uses it with :math:`g = x = x'`).
  The per-(n, c) affine maps (:math:`x' A + B`, and :math:`C_1 x' + C_0` in the backward) are
  BatchNorm's inference kernel on the same view, with weight :math:`A` and bias :math:`B`:
  one vectorized pass, where ``torch.addcmul`` with two operands broadcast along the pixels
  would run an unvectorized loop.
- *channels_last*, memory (N, H, W, C): viewed as (N, HW, C), with no copy. The reductions
  sum over the middle dimension, vectorized along C; the affine maps are ``torch.addcmul``
  with (N, 1, C) operands, whose innermost dimension is contiguous in every operand. There
  :math:`\sum g x'` needs :math:`g x'` written once: into the memory that
  :math:`\partial L/\partial x` overwrites next (and :math:`x'^2` into :math:`y`'s).

**Allocations.** The forward allocates :math:`x'` and :math:`y`, the backward
:math:`\partial L/\partial x`, and nothing else activation-sized: on a CPU a fresh tensor
costs its page faults, as much as a pass or more, so the temporaries live in the output's
memory before the output is written.

:func:`dynamic_norm` is the functional: tensors and options in, ``(y, batch_mean, batch_var)``
out; :class:`~dnbook.norms.DynamicNorm2d` owns the running statistics and the SC-module.

Cost model, counted by ``dnbook.bench.memory_traffic`` at the ATen level on a contiguous
input (activation-sized reads / writes / new tensors, forward | backward, where the counter
takes an allocation for a write; chapter 12): the teaching path 4/3/3 | 10/5/5, this path
4/3/2 | 6/3/1 (the shift is one more pass; the backward reads the saved :math:`x'` in place of
:math:`x`), ``torch.nn.BatchNorm2d`` (one fused kernel each way) 1/1/1 | 2/1/1.
The price is kernel count: DN-B runs ten times as many kernels as BN's three each way, most of
them on (N, C) tensors (the statistics, the SC-module, the coefficients); on a 4x4 map they,
not the passes, are most of DN-B's time.

Precision and dtypes: the statistics and the SC-module are computed in float32 for half-precision
inputs (bf16 or float16, as under autocast; the SC-module runs with autocast off, in its
weights' dtype), and the output and the input's gradient have the input's dtype, as PyTorch's
BatchNorm does. ``tests/test_fast_dynamic.py`` holds the float32 error against float64 to at
most twice ``torch.nn.BatchNorm2d``'s at mean/std ratios up to 1e4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

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


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast off: the SC-module's small FCs run in their weights' dtype.
    (A no-op context when autocast is off already: entering an autocast context costs more
    than a small kernel.)"""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, skipping the call where ``t`` has that dtype already."""
    return t if t.dtype == dtype else t.to(dtype)


def _channels_last(x: Tensor) -> bool:
    """Whether the fast path works on ``x`` as (N, HW, C): channels_last and not also plain
    contiguous (a 1x1 map is both; the (N, C, HW) view serves it)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _pixels_by_channel(t: Tensor) -> Tensor:
    """A channels_last (N, C, H, W) tensor as its (N, HW, C) view: no copy."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n, h * w, c)


def _flat(t: Tensor) -> Tensor:
    """A contiguous (N, C, H, W) tensor as one sample of N C channels, (1, NC, H, W): no copy."""
    n, c, h, w = t.shape
    return t.view(1, n * c, h, w)


def spatial_sums(a: Tensor, x: Tensor, scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``(sum_hw a x, sum_hw a)`` for (N, C, H, W) tensors of one layout: (N, C) each,
    accumulated in float32 for half-precision inputs.

    Contiguous inputs: PyTorch's BatchNorm backward in inference mode, for an input ``x``,
    upstream gradient ``a``, running mean :math:`\mu` and variance :math:`v`, returns per
    channel :math:`\sum a\,(x - \mu)/\sqrt{v + \epsilon}` (the weight's gradient) and
    :math:`\sum a` (the bias's). With :math:`\mu = 0`, :math:`v = 1`, :math:`\epsilon = 0` and
    the tensors viewed as one sample of :math:`NC` channels, those are the two sums wanted,
    from a single read of both. ``channels_last`` inputs have no such view: :math:`a x` is
    written to ``scratch`` (a tensor of ``x``'s shape, dtype and layout that the caller
    overwrites next; a new one if ``None``) and both are reduced over the pixels of the
    (N, HW, C) views, vectorized along C.

    Args:
        a, x: (N, C, H, W), both contiguous or both ``channels_last`` (else made contiguous).
        scratch: for ``channels_last`` float inputs, memory of ``x``'s shape and layout that
            may be overwritten. Default: ``None`` (a new tensor).

    Shape:
        - Output: two (N, C) tensors

    Example:
        >>> a, x = torch.randn(2, 4, 3, 5, 5)
        >>> sum_ax, sum_a = spatial_sums(a, x)
        >>> torch.allclose(sum_ax, (a * x).sum((2, 3)), atol=1e-5)
        True
    """
    n, c = x.shape[:2]
    acc = accumulation_dtype(x.dtype)
    if _channels_last(x) and _channels_last(a):
        a3, x3 = _pixels_by_channel(a), _pixels_by_channel(x)
        if x.dtype != acc or scratch is None:
            # a x in float32 for half-precision inputs (a bf16 product keeps 8 bits)
            product = torch.mul(a3, x3.to(acc))
        else:
            product = torch.mul(a3, x3, out=_pixels_by_channel(scratch))
        return product.sum(1), a3.sum(1, dtype=acc)
    a, x = a.contiguous(), x.contiguous()
    zeros = torch.zeros(n * c, dtype=acc, device=x.device)
    ones = torch.ones_like(zeros)
    _, sum_ax, sum_a = aten.native_batch_norm_backward(
        _flat(a), _flat(x), None, zeros, ones, None, None, False, 0.0, [False, True, True]
    )
    return sum_ax.view(n, c), sum_a.view(n, c)


def per_channel_affine(
    x: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None
) -> Tensor:
    r""":math:`y_{nchw} = x_{nchw} A_{nc} + B_{nc}` in one pass, in ``x``'s layout and dtype
    (into ``out``, of ``x``'s shape, dtype and layout, if given).

    ``scale`` and ``shift`` broadcast to (N, C) (a (C,) tensor is one value per channel).
    channels_last: ``torch.addcmul`` on the (N, HW, C) views, whose innermost dimension C is
    contiguous in all three operands, so the loop is vectorized. Contiguous: there A and B
    would be broadcast along the innermost dimension, where ``addcmul`` with two broadcast
    operands runs an unvectorized loop; the inference-mode BatchNorm kernel on the
    (1, NC, H, W) view computes :math:`(x - 0) / \sqrt{1 + 0} \cdot A + B` vectorized instead.

    Args:
        x: (N, C, H, W), contiguous or ``channels_last``.
        scale, shift: :math:`A, B`, (N, C) or (C,).
        out: the output's memory. Default: ``None`` (a new tensor).

    Shape:
        - Output: :math:`(N, C, H, W)`, ``x``'s dtype and memory format

    Example:
        >>> x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
        >>> y = per_channel_affine(x, torch.full((2, 3), 2.0), torch.ones(3))
        >>> torch.allclose(y, 2 * x + 1), y.is_contiguous(memory_format=torch.channels_last)
        (True, True)
    """
    n, c, h, w = x.shape
    # a new tensor in x's layout (not a view of one: autograd lets a custom Function's output
    # be modified in place, as by a following ReLU(inplace=True), only if it is no view)
    y = torch.empty_like(x) if out is None else out
    if _channels_last(x):
        # (N, HW, C) = (N, 1, C) + (N, HW, C) * (N, 1, C), in x's dtype ((C,) broadcasts as is)
        scale, shift = (_as(t, x.dtype) if t.dim() < 2 else _as(t, x.dtype)[:, None]
                        for t in (scale, shift))  # fmt: skip
        torch.addcmul(shift, _pixels_by_channel(x), scale, out=_pixels_by_channel(y))
        return y
    # BatchNorm's kernel takes float32 parameters for a half-precision input
    acc = accumulation_dtype(x.dtype)
    scale, shift = _as(scale, acc).expand(n, c), _as(shift, acc).expand(n, c)
    zeros = torch.zeros(n * c, dtype=acc, device=x.device)
    ones = torch.ones_like(zeros)
    unused = torch.empty(0, dtype=acc, device=x.device)  # the batch statistics it does not compute
    aten.native_batch_norm.out(
        _flat(x), scale.reshape(-1), shift.reshape(-1), zeros, ones, False, 0.0, 0.0,
        out=_flat(y), save_mean=unused, save_invstd=unused.clone(),
    )  # fmt: skip
    return y


def grouped_linear(input: Tensor, weight: Tensor, groups: int) -> Tensor:
    """:class:`~dnbook.norms.GroupedFC`'s forward (no bias) on tensors: ``weight`` is
    (out, in / groups); per group ``k``, ``y_k = x_k W_k^T``."""
    if groups == 1:
        return F.linear(input, weight)
    n = input.shape[0]
    if weight.shape[1] == 1 and _get_current_dispatch_mode() is None:
        # one input per group (g=1): y_{k,j} = x_k W_{k,j}, one broadcast multiply, cheaper
        # than bmm's transposes and copy on these small sizes. Under a dispatch mode
        # (FlopCounterMode counts the FCs' multiply-adds in chapter 4, and counts bmm, not
        # mul) the bmm below runs.
        return (input[:, :, None] * weight.view(groups, -1)).view(n, -1)
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
    if per_group_in == 1:
        # y_{k,j} = x_k W_{k,j}:  dL/dx_k = sum_j dL/dy_{k,j} W_{k,j},
        # dL/dW_{k,j} = sum_n dL/dy_{n,k,j} x_{n,k}
        grad_groups = grad_out.view(n, groups, -1)  # (N, G, out/G)
        grad_inputs = (grad_groups * weight.view(groups, -1)).sum(2)
        grad_weight = (grad_groups * inputs[:, :, None]).sum(0).view_as(weight)
        return grad_inputs, grad_weight
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
    (``None`` for a gradient that is zero or not needed; ``needs`` flags the weights).
    ``dL/dq`` may be (C,), the same for every sample (as in training, where q enters only
    through the batch variance)."""

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
    moments and once more to write ``y``; the backward reads ``g`` and :math:`x'` for
    :math:`\sum_{hw} g x'` and :math:`\sum_{hw} g`, and writes
    :math:`\partial L/\partial x = A g + C_1 x' + C_0` in two more passes. Every pass works in
    the input's layout (contiguous or ``channels_last``; any other is made contiguous first),
    so no activation is copied to another layout. First-order only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, center: Tensor, coefficients: Coefficients, *weights: Tensor
    ) -> Tensor:
        if not (x.is_contiguous() or _channels_last(x)):
            x = x.contiguous()
        pixels = x.shape[2] * x.shape[3]
        # x' = x - K: exact where x is near K (within a factor 2), which is where it matters;
        # the result keeps x's layout
        centered = x - _as(center, x.dtype)[:, None, None]
        # y's memory, first the scratch of the x'^2 sums (channels_last), so that no other
        # activation-sized tensor is allocated: on a CPU a fresh one costs its page faults
        y = torch.empty_like(centered)
        sum_square, total = spatial_sums(centered, centered, scratch=y)
        # m = 1/M sum_hw x',  q = 1/M sum_hw x'^2                           # (N, C) each
        mean, mean_square = total / pixels, sum_square / pixels
        scale, shift = coefficients.forward(mean, mean_square)  # A, B
        ctx.save_for_backward(centered, scale)
        ctx.coefficients = coefficients
        # y = x' A + B, one pass
        return per_channel_affine(centered, scale, shift, out=y)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        centered, scale = ctx.saved_tensors
        layout = torch.channels_last if _channels_last(centered) else torch.contiguous_format
        grad_y = grad_y.contiguous(memory_format=layout)  # as a rule, no copy
        # dL/dx's memory, first the scratch of the g x' sums (channels_last)
        grad_x = torch.empty_like(centered) if ctx.needs_input_grad[0] else None
        # dL/dA = sum_hw g x',  dL/dB = sum_hw g                            # (N, C) each
        grad_scale, grad_shift = spatial_sums(grad_y, centered, scratch=grad_x)
        grad_mean, grad_mean_square, grad_weights = ctx.coefficients.backward(
            grad_scale, grad_shift, ctx.needs_input_grad[3:]
        )
        if grad_x is not None:
            pixels = centered.shape[2] * centered.shape[3]
            # dL/dx = A g + C1 x' + C0,  C1 = 2/M dL/dq,  C0 = 1/M dL/dm
            coefficient_1 = (
                scale.new_zeros(()) if grad_mean_square is None else grad_mean_square * (2 / pixels)
            )
            coefficient_0 = scale.new_zeros(()) if grad_mean is None else grad_mean / pixels
            per_channel_affine(centered, coefficient_1, coefficient_0, out=grad_x)
            # += A g: the (N, C, 1, 1) scale broadcast along the pixels, a vectorized loop in
            # either layout (only one operand is broadcast)
            grad_x.addcmul_(grad_y, _as(scale, grad_x.dtype)[:, :, None, None])
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
    SC-module on the pooled input (times and plus the base affine :math:`\gamma, \beta` when
    ``weights`` has them: :math:`\alpha = \gamma f(s)`, :math:`\lambda = \beta + h(t)`).

    ``weights`` = ``(fc1_weight, fc1_bias, fc2_weight, weight, bias)``, ``None`` for an absent
    one. The forward keeps what the backward needs (the statistics, the FCs' inputs, ``alpha``,
    ``lambda``); the backward applies the chain rule step by step, each step's equation above
    its line, with one small kernel per elementary operation and no autograd graph.
    """

    def __init__(self, statistics: Callable, weights: Sequence[Tensor | None], options: dict):
        self.statistics = statistics  # (m, q) -> (mu', sigma^2, mu), see batch_statistics
        self.fc1_weight, self.fc1_bias, self.fc2_weight, *affine = weights
        self.weight, self.bias = (*affine, None, None)[:2]
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
            # alpha = f(s), lambda = h(t); with the base affine gamma f(s), beta + h(t)
            self.generated_scale, self.generated_shift = (
                SCALES[options["scale"]](s),
                SHIFTS[options["shift"]](t),
            )
            self.alpha = self.generated_scale
            if self.weight is not None:
                self.alpha = self.generated_scale * self.weight
            shift = self.generated_shift
            if self.bias is not None:
                shift = shift + self.bias
        if options["affine_hook"] is not None:
            options["affine_hook"](self.alpha.detach(), shift.detach())
        # A = alpha s,  B = lambda - mu' A                                  # (N, C) each
        self.scale = self.alpha * self.inv_std
        return self.scale, torch.addcmul(shift, self.scale, mu, value=-1)

    def backward(
        self, grad_scale: Tensor, grad_shift: Tensor, needs: Sequence[bool]
    ) -> tuple[Tensor | None, Tensor | None, list[Tensor | None]]:
        options, inv_std = self.options, self.inv_std
        needs = (*needs, False, False)  # absent base affine: nothing needed
        weight_dtype = self.fc1_weight.dtype
        # B = lambda - mu' A:  dL/dlambda = dL/dB,  dL/dA += -mu' dL/dB,  dL/dmu' = -sum_n A dL/dB
        grad_scale = torch.addcmul(grad_scale, grad_shift, self.mu, value=-1)
        minus_grad_mu = (grad_shift * self.scale).sum(dim=0)  # -dL/dmu', summed up below
        # A = alpha s:  dL/dalpha = s dL/dA,  dL/ds = sum_n alpha dL/dA
        grad_alpha = _as(grad_scale * inv_std, weight_dtype)
        grad_inv_std = (grad_scale * self.alpha).sum(dim=0)
        grad_shift = _as(grad_shift, weight_dtype)
        # base affine, alpha = gamma f(s), lambda = beta + h(t):
        # dL/dgamma = sum_n f(s) dL/dalpha,  dL/df = gamma dL/dalpha,  dL/dbeta = sum_n dL/dlambda
        grad_weight = (grad_alpha * self.generated_scale).sum(dim=0) if needs[3] else None
        grad_bias = grad_shift.sum(dim=0) if needs[4] else None
        if self.weight is not None:
            grad_alpha = grad_alpha * self.weight
        # f(s), h(t)
        grad_out = torch.cat(
            [
                SCALE_BACKWARDS[options["scale"]](grad_alpha, self.generated_scale),
                SHIFT_BACKWARDS[options["shift"]](grad_shift, self.generated_shift),
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
        grad_weights = [grad_fc1, grad_fc1_bias, grad_fc2 if needs[2] else None]
        if self.weight is not None or self.bias is not None:
            grad_weights += [grad_weight, grad_bias]
        grad_mean = None
        if not options["detach_sc_input"]:
            grad_pooled = _as(grad_pre @ self.fc1_weight, inv_std.dtype)  # dL/dz = dL/dh W1
            if options["sc_input"] == "normalized":
                # z = (m - mu') s:  dL/dm = s dL/dz,  dL/dmu' -= sum_n s dL/dz,
                # dL/ds += sum_n (m - mu') dL/dz
                grad_mean = grad_pooled * inv_std
                minus_grad_mu += grad_mean.sum(dim=0)
                grad_inv_std += (grad_pooled * self.centered).sum(dim=0)
            else:
                grad_mean = grad_pooled
        if not options["training"]:
            return grad_mean, None, grad_weights  # mu, sigma^2 are the running constants
        n = self.mean.shape[0]
        # s = (sigma^2 + eps)^(-1/2):  dL/dsigma^2 = -s^3 / 2 dL/ds
        # sigma^2 = E_n[q] - mu'^2:  dL/dq = dL/dsigma^2 / N   (C,): the same for every sample
        grad_mean_square = grad_inv_std * inv_std.pow(3) * (-0.5 / n)
        # dL/dmu' -= 2 mu' dL/dsigma^2 = 2 N mu' dL/dq
        minus_grad_mu = torch.addcmul(minus_grad_mu, self.mu, grad_mean_square, value=2 * n)
        # mu' = E_n[m]:  dL/dm += dL/dmu' / N
        if grad_mean is None:
            grad_mean = (minus_grad_mu / -n).expand_as(self.mean)
        else:
            grad_mean = torch.sub(grad_mean, minus_grad_mu, alpha=1 / n)
        return grad_mean, grad_mean_square, grad_weights


def _channel_coefficients(
    statistics: Callable, weights: Sequence[Tensor | None], options: dict
) -> GraphCoefficients:
    """DN-C's arithmetic as an autograd graph: A, B of shape (C,), expanded to (N, C)."""
    fc1_weight, fc1_bias, fc2_weight, *affine = weights
    weight, bias = (*affine, None, None)[:2]
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
            # the base affine: alpha = gamma f(s), lambda = beta + h(t)
            if weight is not None:
                alpha = alpha * weight
            if bias is not None:
                shift = shift + bias
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
    weight: Tensor | None = None,
    bias: Tensor | None = None,
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
        input: (N, C, H, W), any floating dtype; contiguous and ``channels_last`` inputs are
            worked on in place of layout, any other is made contiguous.
        running_mean, running_var: (C,), used when ``training`` is ``False`` (may be ``None``
            otherwise).
        fc1_weight, fc1_bias: FC1's (C', C) weight and (C',) bias or ``None``.
        fc2_weight: the grouped FC2's (2C, C'/G) weight; G follows from the shapes.
        training: normalize with the batch's statistics (``True``) or the running ones.
            Default: ``False``.
        eps: added to the variance. Default: ``1e-5``.
        weight, bias: the base affine :math:`\gamma, \beta` (C,) of ``base_affine``:
            :math:`\alpha = \gamma f(s)`, :math:`\lambda = \beta + h(t)`. Default: ``None``
            (both or neither).
        mode, activation, scale, shift, merge, sc_input, detach_sc_input: as in
            :class:`~dnbook.norms.DynamicNorm2d`.
        affine_hook: if given, called once with the detached :math:`\alpha` and
            :math:`\lambda` ((N, C) for DN-B, (C,) for DN-C). Default: ``None`` (costs
            nothing).

    Returns:
        ``y`` (the input's shape, dtype and memory format), and the (C,) ``mean`` and biased
        ``var`` it normalized with (the batch's in training, else the running ones), in
        float32 for half-precision inputs (else in the input's dtype), not differentiable.
    """
    if not training and (running_mean is None or running_var is None):
        raise ValueError("dynamic_norm: training=False needs running_mean and running_var")
    if (weight is None) != (bias is None):
        raise ValueError("dynamic_norm: give both weight and bias (the base affine) or neither")
    stats_dtype = accumulation_dtype(input.dtype)
    if training:
        # K: one pixel per channel, near the channel's values (the output does not depend on
        # it); a copy, not a view: the backward keeps K, and a view would keep all of the
        # input's memory alive until then (the backward needs only x - K)
        center = input.detach()[0, :, input.shape[2] // 2, input.shape[3] // 2].clone()
    else:
        center = running_mean.detach().to(input.dtype)
    center_stats = _as(center, stats_dtype)

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
    if weight is not None:
        weights += (weight, bias)
    if mode == "B":
        coefficients = SampleCoefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.batch_mean, coefficients.var
    else:
        coefficients = _channel_coefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.result["batch_mean"], coefficients.result["var"]
    return y, mean.detach(), var.detach()
