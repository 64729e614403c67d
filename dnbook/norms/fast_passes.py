r"""The fast path's passes over the activation, and the autograd Function made of them.

:class:`DynamicNormFunction` computes :math:`y = (x - K) A + B` in three activation-sized
passes forward and three backward (the derivation is :mod:`dnbook.norms.fast_dynamic`'s
docstring); what lies between the passes, the (N, C) arithmetic ``(m, q) -> (A, B)`` and its
backward, is a :class:`Coefficients` object (:mod:`dnbook.norms.fast_coefficients`). The two
passes it is built from, :func:`spatial_sums` and :func:`per_channel_affine`, work in the
input's own memory format (contiguous or ``channels_last``) and allocate nothing
activation-sized beyond what they are given.

This module and :mod:`dnbook.norms.fast_coefficients` import nothing from dnbook but each
other (``python -m dnbook bench`` loads an earlier revision of the fast path beside today's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

Tensor = torch.Tensor
aten = torch.ops.aten


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (a bf16 sum loses the variance), else ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, skipping the call where ``t`` has that dtype already."""
    return t if t.dtype == dtype else t.to(dtype)


def channels_last(x: Tensor) -> bool:
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
    if channels_last(x) and channels_last(a):
        a3, x3 = _pixels_by_channel(a), _pixels_by_channel(x)
        if x.dtype != acc or a.dtype != acc:
            return _half_spatial_sums(a3, x3, same=x is a, acc=acc)
        if scratch is None:
            product = torch.mul(a3, x3)
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


def _half_spatial_sums(
    a3: Tensor, x3: Tensor, same: bool, acc: torch.dtype
) -> tuple[Tensor, Tensor]:
    """:func:`spatial_sums` of half-precision (N, HW, C) views: :math:`a x` and the sums in
    float32 (a bf16 product keeps 8 bits). Both operands are converted first: a product of a
    bf16 and a float32 tensor takes PyTorch's mixed-dtype loop, many times slower on a CPU than
    a conversion and a float32 product (results/bench/README.md). On a CPU they are converted
    a block of samples at a time (:func:`_sample_blocks`), so that the float32 copies stay in
    cache instead of costing an activation-sized allocation's page faults; the sums are the
    same, sample by sample."""
    n, _, c = x3.shape
    sum_ax = torch.empty((n, c), dtype=acc, device=x3.device)
    sum_a = torch.empty_like(sum_ax)
    step = _samples_per_block(x3[0].numel(), n, x3.device)
    for start in range(0, n, step):
        part = slice(start, start + step)
        a_acc = a3[part].to(acc)
        torch.sum(a_acc, 1, out=sum_a[part])
        # sum_hw a x, with a x written over the block's own float32 copy
        product = a_acc.square_() if same else x3[part].to(acc).mul_(a_acc)
        torch.sum(product, 1, out=sum_ax[part])
    return sum_ax, sum_a


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
    if channels_last(x):
        # (N, HW, C) = (N, 1, C) + (N, HW, C) * (N, 1, C), in x's dtype ((C,) broadcasts as is)
        scale, shift = (as_dtype(t, x.dtype) if t.dim() < 2 else as_dtype(t, x.dtype)[:, None]
                        for t in (scale, shift))  # fmt: skip
        torch.addcmul(shift, _pixels_by_channel(x), scale, out=_pixels_by_channel(y))
        return y
    # BatchNorm's kernel takes float32 parameters for a half-precision input
    acc = accumulation_dtype(x.dtype)
    scale, shift = as_dtype(scale, acc).expand(n, c), as_dtype(shift, acc).expand(n, c)
    zeros = torch.zeros(n * c, dtype=acc, device=x.device)
    ones = torch.ones_like(zeros)
    unused = torch.empty(0, dtype=acc, device=x.device)  # the batch statistics it does not compute
    aten.native_batch_norm.out(
        _flat(x), scale.reshape(-1), shift.reshape(-1), zeros, ones, False, 0.0, 0.0,
        out=_flat(y), save_mean=unused, save_invstd=unused.clone(),
    )  # fmt: skip
    return y


# Elements of the input per block in the evaluation passes (a float32 block of this size, 1 MiB,
# stays in a core's cache).
BLOCK_ELEMENTS = 1 << 18


def _sample_blocks(x: Tensor) -> tuple[Tensor, int, range]:
    """``x`` as (N, HW, C) (channels_last) or (N, C, HW) (contiguous), the pixels' dimension in
    that view, and the start of each block of samples the evaluation passes work on: blocks of
    about :data:`BLOCK_ELEMENTS` on a CPU, one block of all samples elsewhere."""
    n, c, h, w = x.shape
    rows, dim = (_pixels_by_channel(x), 1) if channels_last(x) else (x.view(n, c, h * w), 2)
    return rows, dim, range(0, n, _samples_per_block(c * h * w, n, x.device))


def _samples_per_block(per_sample: int, n: int, device: torch.device) -> int:
    """Samples in one block of the block-wise passes: about :data:`BLOCK_ELEMENTS` elements on
    a CPU (at least one sample), all ``n`` elsewhere."""
    return max(1, BLOCK_ELEMENTS // max(1, per_sample)) if device.type == "cpu" else n


def centered_pixel_means(x: Tensor, center: Tensor) -> Tensor:
    r""":math:`m_{nc} = \mathrm{mean}_{hw}(x_{nchw} - K_c)`: (N, C), in float32 for a
    half-precision ``x`` (else in its dtype), for ``x`` contiguous or ``channels_last``.

    The evaluation forward's one reduction, over blocks of samples. A float32 or float64
    block is centered on :math:`K` (``center``, (C,)) before it is summed, so that the mean of
    :math:`x - K` keeps the dtype's digits when :math:`K` is far larger than the spread. A
    half-precision block is summed with float32 accumulation and :math:`K` subtracted from the
    (N, C) result: there the input's own rounding (8 bits) is far coarser than anything the
    float32 sum loses. ``torch.sum(..., dtype=float32)`` of a whole bf16 activation would
    allocate a float32 copy of it, and on a CPU a fresh tensor that size costs its page faults,
    several times the sum itself; a block's copy stays in cache.

    Example:
        >>> x = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
        >>> m = centered_pixel_means(x, torch.ones(3))
        >>> m.dtype, torch.allclose(m, (x.float() - 1).mean((2, 3)))
        (torch.float32, True)
    """
    if not (x.is_contiguous() or channels_last(x)):
        x = x.contiguous()
    acc = accumulation_dtype(x.dtype)
    rows, dim, starts = _sample_blocks(x)
    center = as_dtype(center, acc)
    means = torch.empty(x.shape[:2], dtype=acc, device=x.device)
    step = starts.step
    for start in starts:
        block, out = rows[start : start + step], means[start : start + step]
        if x.dtype == acc:
            torch.sum(block - (center if dim == 1 else center[:, None]), dim, out=out)
        else:
            torch.sum(block, dim, dtype=acc, out=out)
    pixels = x.shape[2] * x.shape[3]
    if x.dtype == acc:
        return means.div_(pixels)
    return torch.sub(means.div_(pixels), center, out=means)


def affine_of_input(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    r""":math:`y_{nchw} = x_{nchw} A_{nc} + B_{nc}`, computed in the accumulation dtype
    (float32 for a half-precision ``x``) and rounded once to ``x``'s dtype, in ``x``'s layout;
    ``scale`` and ``shift`` are (N, C) in the accumulation dtype.

    Contiguous: :func:`per_channel_affine` (BatchNorm's inference kernel, which computes in
    float32 for a half-precision input). channels_last: one ``torch.addcmul`` on the (N, HW, C)
    views where ``x`` has the accumulation dtype; otherwise block by block (as in
    :func:`centered_pixel_means`), each block converted, mapped in float32 and written back
    in ``x``'s dtype, so that no activation-sized float32 tensor is allocated."""
    if not (x.is_contiguous() or channels_last(x)):
        x = x.contiguous()
    if not channels_last(x):
        return per_channel_affine(x, scale, shift)
    y = torch.empty_like(x)
    rows, out_rows = _pixels_by_channel(x), _pixels_by_channel(y)
    scale, shift = scale[:, None], shift[:, None]  # (N, 1, C)
    if x.dtype == scale.dtype:
        torch.addcmul(shift, rows, scale, out=out_rows)
        return y
    _, _, starts = _sample_blocks(x)
    step = starts.step
    for start in starts:
        part = slice(start, start + step)
        out_rows[part].copy_(torch.addcmul(shift[part], rows[part].to(scale.dtype), scale[part]))
    return y


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
        if not (x.is_contiguous() or channels_last(x)):
            x = x.contiguous()
        pixels = x.shape[2] * x.shape[3]
        # x' = x - K: exact where x is near K (within a factor 2), which is where it matters;
        # the result keeps x's layout
        centered = x - as_dtype(center, x.dtype)[:, None, None]
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
        layout = torch.channels_last if channels_last(centered) else torch.contiguous_format
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
            grad_x.addcmul_(grad_y, as_dtype(scale, grad_x.dtype)[:, :, None, None])
        return grad_x, None, None, *grad_weights
