r"""The fast path's (N, C) arithmetic: from the pixel moments :math:`m, q` of :math:`x - K`
to the per-(sample, channel) affine map :math:`A, B`, and its backward, as the
:class:`~dnbook.norms.fast_passes.Coefficients` that
:class:`~dnbook.norms.fast_passes.DynamicNormFunction` calls between its passes.

DN-B's is written out by hand (:class:`SampleCoefficients`): on a network's small late layers
what costs is the number of small (N, C) kernels, so no autograd graph between the passes.
DN-C's is an autograd graph differentiated with ``torch.autograd.grad``
(:class:`GraphCoefficients`, built by :func:`channel_coefficients`). The SC-module's pieces
(:data:`ACTIVATIONS`, :data:`SCALES`, :data:`SHIFTS`, the grouped FC2) and their hand-written
derivatives live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from dnbook.norms.fast_passes import as_dtype

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


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast off: the SC-module's small FCs run in their weights' dtype.
    (A no-op context when autocast is off already: entering an autocast context costs more
    than a small kernel.)"""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


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
        grad_alpha = as_dtype(grad_scale * inv_std, weight_dtype)
        grad_inv_std = (grad_scale * self.alpha).sum(dim=0)
        grad_shift = as_dtype(grad_shift, weight_dtype)
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
            grad_pooled = as_dtype(grad_pre @ self.fc1_weight, inv_std.dtype)  # dL/dz = dL/dh W1
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


def channel_coefficients(
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
