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

:class:`~dnbook.norms.fast_passes.DynamicNormFunction` is those passes
(:mod:`dnbook.norms.fast_passes`); the (N, C) arithmetic between them is a
:class:`~dnbook.norms.fast_passes.Coefficients` object with a forward ``(m, q) -> (A, B)`` and
a backward (:mod:`dnbook.norms.fast_coefficients`). DN-B's is
written out by hand (:class:`SampleCoefficients`): on the small late layers of a network the
activation passes are cheap and what costs is the number of small (N, C) operations, each a
kernel launch with its fixed price, so fewer of them and no autograd graph between the passes.
DN-C's (batch-shared, and the layer the paper found does not train) is an autograd graph
differentiated with ``torch.autograd.grad`` (:class:`GraphCoefficients`).

**Evaluation without gradients.** With the running statistics (eval mode) and nothing that
needs a gradient (``torch.no_grad()``, as the trainer evaluates), DN-B is one affine map per
(sample, channel), :math:`Y = X A + (\lambda - \mu A)`, and needs from the activation only its
pixel means (the pooled input). :func:`dynamic_norm` then skips the autograd Function: one
reduction and one affine pass, block by block on a CPU, with no :math:`x'`, no mean of squares
and nothing kept (``_sample_evaluation``; the passes
:func:`~dnbook.norms.fast_passes.centered_pixel_means` and
:func:`~dnbook.norms.fast_passes.affine_of_input`). Training mode, with or without gradients,
and evaluation with gradients take the Function as before.

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
takes an allocation for a write; chapter 12; exact counts, pinned by
``tests/test_fast_dynamic.py``): the teaching path 4/3/3 | 10/5/5, this path
4/3/2 | 6/3/1 (the shift is one more pass; the backward reads the saved :math:`x'` in place of
:math:`x`), ``torch.nn.BatchNorm2d`` (one fused kernel each way) 1/1/1 | 2/1/1.
The price is kernel count: DN-B runs many more kernels than BN's three each way, most of
them on (N, C) tensors (the statistics, the SC-module, the coefficients), and on a network's
small late maps they, not the passes, are what DN-B's time goes to. The timings are in
``results/bench/README.md``.

Precision and dtypes: the statistics and the SC-module are computed in float32 for half-precision
inputs (bf16 or float16, as under autocast; the SC-module runs with autocast off, in its
weights' dtype), and the output and the input's gradient have the input's dtype, as PyTorch's
BatchNorm does. ``tests/test_fast_dynamic.py`` holds the float32 error against float64 to at
most twice ``torch.nn.BatchNorm2d``'s at mean/std ratios up to 1e4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dnbook.norms.fast_coefficients import ACTIVATION_BACKWARDS as ACTIVATION_BACKWARDS
from dnbook.norms.fast_coefficients import ACTIVATIONS as ACTIVATIONS
from dnbook.norms.fast_coefficients import SCALE_BACKWARDS as SCALE_BACKWARDS
from dnbook.norms.fast_coefficients import SCALES as SCALES
from dnbook.norms.fast_coefficients import SHIFT_BACKWARDS as SHIFT_BACKWARDS
from dnbook.norms.fast_coefficients import SHIFTS as SHIFTS
from dnbook.norms.fast_coefficients import GraphCoefficients as GraphCoefficients
from dnbook.norms.fast_coefficients import (
    SampleCoefficients,
    batch_statistics,
    channel_coefficients,
)
from dnbook.norms.fast_passes import Coefficients as Coefficients
from dnbook.norms.fast_passes import (
    DynamicNormFunction,
    accumulation_dtype,
    affine_of_input,
    as_dtype,
    centered_pixel_means,
)
from dnbook.norms.fast_passes import per_channel_affine as per_channel_affine
from dnbook.norms.fast_passes import spatial_sums as spatial_sums

Tensor = torch.Tensor

MODES = ("B", "C")
MERGES = ("fc1", "fc2")
SC_INPUTS = ("normalized", "raw")


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
    sc_input: str = "raw",
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
    weights = (fc1_weight, fc1_bias, fc2_weight)
    if weight is not None:
        weights += (weight, bias)
    if mode == "B" and not training and not _needs_grad(input, *weights):
        options = {
            "eps": eps,
            "activation": activation,
            "scale": scale,
            "shift": shift,
            "sc_input": sc_input,
            "affine_hook": affine_hook,
        }
        return _sample_evaluation(input, running_mean, running_var, weights, options)
    if training:
        # K: one pixel per channel, near the channel's values (the output does not depend on
        # it); a copy, not a view: the backward keeps K, and a view would keep all of the
        # input's memory alive until then (the backward needs only x - K)
        center = input.detach()[0, :, input.shape[2] // 2, input.shape[3] // 2].clone()
    else:
        center = running_mean.detach().to(input.dtype)
    center_stats = as_dtype(center, stats_dtype)

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
    if mode == "B":
        coefficients = SampleCoefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.batch_mean, coefficients.var
    else:
        coefficients = channel_coefficients(statistics, weights, options)
        y = DynamicNormFunction.apply(input, center, coefficients, *weights)
        mean, var = coefficients.result["batch_mean"], coefficients.result["var"]
    return y, mean.detach(), var.detach()


def _needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd would record a graph through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _sample_evaluation(
    input: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weights: tuple[Tensor | None, ...],
    options: dict,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""DN-B with the running statistics and no gradient: two passes over ``input``.

    With :math:`\mu, \sigma^2` the running statistics, the layer is one affine map per
    (sample, channel), :math:`y = x A + (\lambda - \mu A)` with :math:`A = \alpha s`; only
    the pooled input needs the activation, and only its pixel means. One reduction
    (:func:`~dnbook.norms.fast_passes.centered_pixel_means`, of :math:`x - \mu`, so that the
    normalized pool :math:`(m - \mu) s` keeps float32's digits when the mean is far larger
    than the spread) and one affine pass
    (:func:`~dnbook.norms.fast_passes.affine_of_input`); no :math:`x'`, no mean of squares,
    no state kept for a backward."""
    stats_dtype = accumulation_dtype(input.dtype)
    center = running_mean.detach().to(stats_dtype)  # K = mu, exactly: mu' = mu - K = 0

    def statistics(mean: Tensor, mean_square: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        return batch_statistics(mean, mean_square, center, running_mean, running_var, False)

    coefficients = SampleCoefficients(
        statistics,
        weights,
        {**options, "training": False, "center": center, "detach_sc_input": True},
    )
    mean = centered_pixel_means(input, center)  # m = mean_hw(x - mu)
    # A = alpha s, B = lambda - mu' A = lambda (mu' = 0); the eval mean of squares is unused
    scale, shift = coefficients.forward(mean, None)
    # y = (x - mu) A + lambda = x A + (lambda - mu A), one pass
    y = affine_of_input(input, scale, torch.addcmul(shift, scale, center, value=-1))
    return y, coefficients.batch_mean.detach(), coefficients.var.detach()
