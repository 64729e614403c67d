"""Tests for MABN2d (forward, hand-written backward, moving averages, renormalization, running
statistics, state dict) and CenConv2d. Everything compared runs in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from dnbook.norms.mabn import R_MAX, RENORM_START, CenConv2d, MABN2d, _MABNFunction, _MABNStep

DTYPE = torch.float64
SHAPES = [(4, 3, 5, 5), (2, 6, 3, 4), (8, 2, 1, 1)]


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=DTYPE)


def make_layer(channels: int, *, affine: bool = True, seed: int = 0, **kwargs) -> MABN2d:
    """An MABN2d in float64 with random (not identity) weight and bias."""
    layer = MABN2d(channels, affine=affine, dtype=DTYPE, **kwargs)
    if affine:
        with torch.no_grad():
            layer.weight.copy_(1.0 + 0.5 * randn(channels, seed=seed + 1))
            layer.bias.copy_(randn(channels, seed=seed + 2))
    return layer


def second_moment(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(dim=(0, 2, 3))


def per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def train_step(layer: MABN2d, x: torch.Tensor, grad_y: torch.Tensor):
    """One training iteration: forward, backward (fresh parameter gradients); returns (y, dx)."""
    layer.zero_grad()
    x = x.clone().requires_grad_()
    y = layer(x)
    y.backward(grad_y)
    return y.detach(), x.grad


# --- (1) forward during warm-up ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("buffer_size", [1, 3])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_uses_own_second_moment_during_warmup(shape, buffer_size, affine):
    channels = shape[1]
    layer = make_layer(channels, affine=affine, buffer_size=buffer_size, warmup_iters=5)
    for t in range(1, 4):
        x = randn(*shape, seed=t, scale=float(t)) + 0.3  # not zero-mean: nothing is centered
        y = layer(x)
        # y = w * x / sqrt(E[x^2] + eps) + b, E over (N, H, W), this batch only
        expected = x / per_channel(second_moment(x) + layer.eps).sqrt()
        if affine:
            expected = per_channel(layer.weight) * expected + per_channel(layer.bias)
        assert_close(y, expected.detach())


# --- (2) the hand-written backward against autograd -------------------------------------------


def reference_loss(layer: MABN2d, x, weight, bias, grad_y, past_x2, past_psi, running_var):
    """(y, loss): a loss whose autograd gradient is MABN's backward, from the forward's equations.

    ``past_x2`` and ``past_psi`` (the window rows of earlier iterations, summed) are constants;
    this iteration's E[x^2] is live, so autograd differentiates through its share of var_sma.
    The past backward statistics act like extra gradient reaching var_sma: a loss term
    K * var_sma with K = -(M / (2 sigma^2)) * sum(past psi), M = N*H*W, adds exactly
    -z * sum(past psi) / (B * sigma) to dx, which is MABN's formula. r is detached (a constant).
    """
    buffer_size = layer.buffer_size
    values_per_channel = x.numel() // x.shape[1]
    # var_sma = (sum of past E[x^2] + this batch's E[x^2]) / B
    var = (past_x2 + second_moment(x)) / buffer_size
    std = (var + layer.eps).sqrt()
    z = x / per_channel(std)
    if running_var is None:  # r is still fixed at 1
        r = torch.ones_like(std)
    else:
        r = (std.detach() / (running_var + layer.eps).sqrt()).clamp(1 / R_MAX, R_MAX)
    y = per_channel(weight * r) * z + per_channel(bias)
    k = -(values_per_channel / (2 * std.detach() ** 2)) * past_psi
    return y, (grad_y * y).sum() + (k * var).sum()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("buffer_size", [1, 2, 4])
@pytest.mark.parametrize("renorm", [False, True])
def test_backward_matches_autograd_with_buffered_statistics_constant(shape, buffer_size, renorm):
    channels = shape[1]
    layer = make_layer(channels, buffer_size=buffer_size, warmup_iters=0)
    for t in range(1, buffer_size + 3):  # fill the windows (and wrap around once)
        train_step(layer, randn(*shape, seed=10 + t), randn(*shape, seed=20 + t))
    if renorm:
        with torch.no_grad():
            layer.num_batches_tracked.fill_(RENORM_START + 7)
            layer.running_var.copy_(0.5 + randn(channels, seed=3).abs())
    t = int(layer.num_batches_tracked) + 1
    slot = (t - 1) % buffer_size
    others = [i for i in range(buffer_size) if i != slot]
    past_x2 = layer.forward_stat_buffer[others].sum(dim=0)
    past_psi = layer.backward_stat_buffer[others].sum(dim=0)
    running_var = layer.running_var.clone() if renorm else None

    x, grad_y = randn(*shape, seed=30), randn(*shape, seed=31)
    y, grad_x = train_step(layer, x, grad_y)

    x_ref = x.clone().requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    y_ref, loss = reference_loss(layer, x_ref, weight, bias, grad_y, past_x2, past_psi, running_var)
    loss.backward()
    assert_close(y, y_ref.detach())
    assert_close(grad_x, x_ref.grad)
    assert_close(layer.weight.grad, weight.grad)
    assert_close(layer.bias.grad, bias.grad)


def test_sma_backward_is_not_the_gradient_of_the_forward():
    """With buffer_size > 1 the past psi make dx differ from the true gradient: by design."""
    shape, buffer_size = (4, 3, 5, 5), 3
    layer = make_layer(3, buffer_size=buffer_size, warmup_iters=0)
    for t in range(1, buffer_size):
        train_step(layer, randn(*shape, seed=t), randn(*shape, seed=50 + t))
    x, grad_y = randn(*shape, seed=40), randn(*shape, seed=41)
    _, grad_x = train_step(layer, x, grad_y)

    x_ref = x.clone().requires_grad_()
    weight, bias = layer.weight.detach(), layer.bias.detach()
    past_x2 = layer.forward_stat_buffer[: buffer_size - 1].sum(dim=0)
    y_ref, _ = reference_loss(
        layer, x_ref, weight, bias, grad_y, past_x2, torch.zeros(3, dtype=DTYPE), None
    )
    (true_grad_x,) = torch.autograd.grad((grad_y * y_ref).sum(), x_ref)
    assert (grad_x - true_grad_x).abs().max() > 1e-3


# --- (3) gradcheck on the Function ------------------------------------------------------------


def make_step(channels: int, buffer_size: int, *, use_sma: bool, running_var=None, seed=0):
    """A _MABNStep whose windows hold random "past" statistics."""
    return _MABNStep(
        forward_window=1.0 + randn(buffer_size, channels, seed=seed).abs(),
        backward_window=randn(buffer_size, channels, seed=seed + 1),
        slot=buffer_size - 1,
        use_sma=use_sma,
        running_var=running_var,
        eps=1e-5,
    )


@pytest.mark.parametrize("buffer_size", [1, 3])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("saturated_r", [False, True])
def test_gradcheck_where_the_backward_is_the_true_gradient(buffer_size, affine, saturated_r):
    """buffer_size = 1 with the SMA on, or any buffer_size while warming up: the exact gradient.

    r is treated as a constant; it is one where it is 1 or clamped (running_var tiny -> r = 5).
    """
    shape = (3, 2, 3, 3)
    running_var = torch.full((2,), 1e-6, dtype=DTYPE) if saturated_r else None
    step = make_step(2, buffer_size, use_sma=buffer_size == 1, running_var=running_var)
    x = randn(*shape, seed=1).requires_grad_()
    weight = (1.0 + randn(2, seed=2)).requires_grad_() if affine else None
    bias = randn(2, seed=3).requires_grad_() if affine else None
    assert torch.autograd.gradcheck(
        lambda x, w, b: _MABNFunction.apply(x, w, b, step), (x, weight, bias)
    )


@pytest.mark.parametrize("buffer_size", [2, 4])
def test_sma_regime_backward_follows_the_formula(buffer_size):
    """gradcheck does not apply once the SMA is on (the backward is not the true gradient), so
    the Function's backward is checked against MABN's formula written out, and the current
    iteration's statistics must land in the windows' slot."""
    shape, channels = (4, 3, 2, 5), 3
    running_var = 0.5 + randn(channels, seed=9).abs()
    step = make_step(channels, buffer_size, use_sma=True, running_var=running_var, seed=5)
    past_x2 = step.forward_window[:-1].clone()
    past_psi = step.backward_window[:-1].clone()
    x = randn(*shape, seed=6).requires_grad_()
    weight, bias = (1.0 + randn(channels, seed=7)).requires_grad_(), randn(channels, seed=8)
    grad_y = randn(*shape, seed=10)
    _MABNFunction.apply(x, weight, bias, step).backward(grad_y)

    var = torch.cat([past_x2, second_moment(x.detach())[None]]).mean(dim=0)
    std = (var + step.eps).sqrt()
    z = x.detach() / per_channel(std)
    r = (std / (running_var + step.eps).sqrt()).clamp(1 / R_MAX, R_MAX)
    g = grad_y * per_channel(weight.detach() * r)
    psi = (g * z).mean(dim=(0, 2, 3))
    psi_sma = torch.cat([past_psi, psi[None]]).mean(dim=0)
    assert_close(step.forward_window[-1], second_moment(x.detach()))
    assert_close(step.backward_window[-1], psi)
    assert_close(x.grad, (g - z * per_channel(psi_sma)) / per_channel(std))
    assert_close(weight.grad, (grad_y * z).sum(dim=(0, 2, 3)) * r)


# --- (4) when the moving averages start, and what they average --------------------------------


@pytest.mark.parametrize(("buffer_size", "warmup_iters"), [(3, 4), (4, 0), (1, 2), (2, 5)])
def test_sma_starts_after_warmup_and_averages_the_last_buffer_size_iterations(
    buffer_size, warmup_iters
):
    shape = (2, 3, 4, 4)
    layer = MABN2d(3, buffer_size=buffer_size, warmup_iters=warmup_iters, dtype=DTYPE)
    history_x2, history_psi = [], []
    for t in range(1, 11):
        x = randn(*shape, seed=t, scale=0.5 + t)  # a different scale every iteration
        grad_y = randn(*shape, seed=100 + t)
        y, grad_x = train_step(layer, x, grad_y)
        history_x2.append(second_moment(x))
        sma_on = t > buffer_size and t >= warmup_iters  # the authors' schedule
        window = slice(-buffer_size if sma_on else -1, None)
        var = torch.stack(history_x2[window]).mean(dim=0)
        std = per_channel(var + layer.eps).sqrt()
        z = x / std
        assert_close(y, z)  # weight 1, bias 0, r 1
        history_psi.append((grad_y * z).mean(dim=(0, 2, 3)))
        psi = torch.stack(history_psi[window]).mean(dim=0)
        assert_close(grad_x, (grad_y - z * per_channel(psi)) / std)


# --- (5) renormalization ----------------------------------------------------------------------


@pytest.mark.parametrize("warmup_iters", [10, 1500])
@pytest.mark.parametrize("running_var_scale", [2.0, 1e-4, 1e3])  # free, clamped at 5, at 1/5
def test_renormalization_is_one_then_clamped(warmup_iters, running_var_scale):
    shape, channels = (4, 3, 3, 3), 3
    layer = MABN2d(channels, warmup_iters=warmup_iters, dtype=DTYPE)
    start = max(RENORM_START, warmup_iters)
    x = randn(*shape, seed=1)
    std = (second_moment(x) + layer.eps).sqrt()
    running_var = running_var_scale * second_moment(x)
    with torch.no_grad():
        layer.num_batches_tracked.fill_(start - 1)
        layer.running_var.copy_(running_var)
    assert_close(layer(x), x / per_channel(std))  # iteration `start`: r = 1
    with torch.no_grad():
        layer.running_var.copy_(running_var)
    r = (std / (running_var + layer.eps).sqrt()).clamp(1 / R_MAX, R_MAX)
    assert_close(layer(x), per_channel(r) * x / per_channel(std))  # iteration start + 1
    if running_var_scale != 2.0:
        assert_close(r, torch.full_like(r, R_MAX if running_var_scale < 1 else 1 / R_MAX))


# --- (6) running_var and evaluation -----------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.98, 0.5, 0.0, 1.0])
@pytest.mark.parametrize("buffer_size", [1, 3])
def test_running_var_decays_towards_the_statistic_used(momentum, buffer_size):
    shape = (2, 3, 4, 4)
    layer = MABN2d(3, buffer_size=buffer_size, momentum=momentum, warmup_iters=1, dtype=DTYPE)
    expected = torch.ones(3, dtype=DTYPE)
    history = []
    for t in range(1, 9):
        x = randn(*shape, seed=t, scale=float(t))
        layer(x)
        history.append(second_moment(x))
        # MABN's convention: momentum weighs the old value; as in the authors' code, the new
        # value is the statistic the batch was normalized with: the SMA once it is on
        sma_on = t > buffer_size
        used = torch.stack(history[-buffer_size:]).mean(dim=0) if sma_on else history[-1]
        expected = momentum * expected + (1 - momentum) * used
        assert_close(layer.running_var, expected)
    assert int(layer.num_batches_tracked) == 8


@pytest.mark.parametrize("affine", [True, False])
def test_eval_divides_by_running_var_and_changes_no_state(affine):
    shape = (2, 3, 4, 4)
    layer = make_layer(3, affine=affine, buffer_size=2, warmup_iters=0)
    for t in range(1, 4):
        train_step(layer, randn(*shape, seed=t), randn(*shape, seed=10 + t))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()
    x = randn(1, 3, 1, 1, seed=5)  # one value per channel is fine in eval
    expected = x / per_channel(layer.running_var + layer.eps).sqrt()
    if affine:
        expected = per_channel(layer.weight) * expected + per_channel(layer.bias)
    assert_close(layer(x), expected.detach())
    for name, value in layer.state_dict().items():
        assert_close(value, state[name])


# --- (7) state dict ---------------------------------------------------------------------------


@pytest.mark.parametrize("buffer_size", [1, 3])
def test_state_dict_round_trip_resumes_the_moving_averages(buffer_size):
    shape = (2, 3, 4, 4)
    layer = make_layer(3, buffer_size=buffer_size, warmup_iters=2)
    for t in range(1, 5):
        train_step(layer, randn(*shape, seed=t), randn(*shape, seed=10 + t))
    state = layer.state_dict()
    windows = {"forward_stat_buffer", "backward_stat_buffer"}
    assert {"running_var", "num_batches_tracked", *windows} <= set(state)
    restored = MABN2d(3, buffer_size=buffer_size, warmup_iters=2, dtype=DTYPE)
    restored.load_state_dict(state)

    x, grad_y = randn(*shape, seed=20), randn(*shape, seed=21)
    y, grad_x = train_step(layer, x, grad_y)
    y_restored, grad_x_restored = train_step(restored, x, grad_y)
    assert_close(y_restored, y)
    assert_close(grad_x_restored, grad_x)
    for name, value in layer.state_dict().items():
        assert_close(restored.state_dict()[name], value)


def test_extra_repr_shows_every_setting():
    text = repr(MABN2d(8, buffer_size=4, eps=1e-3, momentum=0.9, warmup_iters=7, affine=False))
    assert text == (
        "MABN2d(8, buffer_size=4, eps=0.001, momentum=0.9, warmup_iters=7, affine=False)"
    )


def test_float32_module_runs_forward_and_backward():
    norm = MABN2d(16, buffer_size=2, warmup_iters=0)
    conv = CenConv2d(3, 16, kernel_size=3, padding=1)
    for _ in range(3):
        norm(conv(torch.randn(2, 3, 6, 6))).square().mean().backward()
    assert conv.weight.grad is not None and norm.weight.grad is not None
    assert torch.isfinite(norm.backward_stat_buffer).all()


# --- (8) CenConv2d ----------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_cenconv_uses_zero_mean_filters_and_passes_gradients(groups, bias, kernel_size):
    torch.manual_seed(0)
    conv = CenConv2d(4, 6, kernel_size, padding=kernel_size // 2, groups=groups, bias=bias)
    conv = conv.to(DTYPE)
    weight = conv.centered_weight()
    assert_close(weight.mean(dim=(1, 2, 3)), torch.zeros(6, dtype=DTYPE))
    assert_close(weight + conv.weight.mean(dim=(1, 2, 3), keepdim=True), conv.weight)

    x = randn(2, 4, 5, 5, seed=1).requires_grad_()
    y = conv(x)
    expected = F.conv2d(x, weight, conv.bias, padding=kernel_size // 2, groups=groups)
    assert_close(y, expected)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the gradient of a centered filter is centered too: the mean direction does not matter
    assert conv.weight.grad.abs().sum() > 0
    assert_close(conv.weight.grad.mean(dim=(1, 2, 3)), torch.zeros(6, dtype=DTYPE))


def test_cenconv_defaults_to_no_bias():
    assert CenConv2d(3, 8, 3).bias is None


# --- (9) bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_size": 1.5}, "buffer_size"),
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": 1.1}, "momentum"),
        ({"warmup_iters": -1}, "warmup_iters"),
        ({"eps": 0.0}, "eps"),
        ({"num_features": 0}, "num_features"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    settings = {"num_features": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        MABN2d(**settings)


@pytest.mark.parametrize(
    ("shape", "training", "message"),
    [
        ((2, 3, 4), True, "expected a 4-D input"),
        ((2, 3, 4), False, "expected a 4-D input"),
        ((2, 5, 4, 4), True, "expected 3 channels"),
        ((1, 3, 1, 1), True, "more than 1 value per channel"),
    ],
)
def test_bad_input_raises(shape, training, message):
    layer = MABN2d(3).train(training)
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(*shape))
    assert int(layer.num_batches_tracked) == 0


# --- (10) against the authors' code, iteration by iteration ----------------------------------
#
# A transcription, in plain tensor ops, of the layer in the authors' code (``MABN.py`` in
# github.com/megvii-model/MABN): its state (running_var, the iteration counter and the two
# windows indexed by ``iteration % buffer_size``), its forward, and its custom backward as the
# authors wrote them. It shares nothing with dnbook's implementation.


class _AuthorsMABNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state):
        t, size, eps = state["iters"], state["buffer_size"], state["eps"]
        c = x.shape[1]
        x2 = (x * x).mean(dim=3).mean(dim=2).mean(dim=0)
        state["buffer_x2"][t % size] = x2
        own = t <= size or t < state["warmup_iters"]
        var = (x2 if own else state["buffer_x2"].mean(dim=0)).view(1, c, 1, 1)
        z = x / (var + eps).sqrt()
        r = (var + eps).sqrt() / (state["running_var"] + eps).sqrt()
        if t <= max(1000, state["warmup_iters"]):
            r = torch.clamp(r, 1, 1)
        else:
            r = torch.clamp(r, 1 / 5, 5)
        y = r * z
        ctx.state, ctx.t = state, t
        ctx.save_for_backward(z, var, weight, r)
        m = state["momentum"]
        state["running_var"] = m * state["running_var"] + (1 - m) * var
        return weight.view(1, c, 1, 1) * y + bias.view(1, c, 1, 1)

    @staticmethod
    def backward(ctx, grad_output):
        z, var, weight, r = ctx.saved_tensors
        state, t = ctx.state, ctx.t
        size, eps = state["buffer_size"], state["eps"]
        c = grad_output.shape[1]
        y = r * z
        g = grad_output * weight.view(1, c, 1, 1) * r
        gz = (g * z).mean(dim=3).mean(dim=2).mean(dim=0)
        state["buffer_gz"][t % size] = gz
        own = t <= size or t < state["warmup_iters"]
        mean_gz = (gz if own else state["buffer_gz"].mean(dim=0)).view(1, c, 1, 1)
        gx = 1.0 / torch.sqrt(var + eps) * (g - z * mean_gz)
        grad_weight = (grad_output * y).sum(dim=3).sum(dim=2).sum(dim=0)
        return gx, grad_weight, grad_output.sum(dim=3).sum(dim=2).sum(dim=0), None


def _authors_state(channels: int, buffer_size: int, warmup_iters: int) -> dict:
    return {
        "iters": 0,
        "buffer_size": buffer_size,
        "warmup_iters": warmup_iters,
        "eps": 1e-5,
        "momentum": 0.98,
        "running_var": torch.ones(1, channels, 1, 1, dtype=DTYPE),
        "buffer_x2": torch.zeros(buffer_size, channels, dtype=DTYPE),
        "buffer_gz": torch.zeros(buffer_size, channels, dtype=DTYPE),
    }


def _authors_train_step(state, weight, bias, x, grad_y):
    state["iters"] += 1
    x = x.clone().requires_grad_()
    weight, bias = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    y = _AuthorsMABNFunction.apply(x, weight, bias, state)
    y.backward(grad_y)
    return y.detach(), x.grad, weight.grad, bias.grad


def _authors_input(t: int, shape) -> torch.Tensor:
    """A scale that swings over a ~37-iteration period, so the SMA, running_var and r differ."""
    scale = 1.0 + 0.6 * torch.sin(torch.tensor(2 * torch.pi * t / 37)).item()
    return randn(*shape, seed=t, scale=scale) + 0.1


def compare_with_authors_code(ours: MABN2d, iterations: int):
    """Train dnbook's MABN2d ``ours`` and the transcription side by side; yield, per iteration,
    ``(t, ours' (y, dL/dx, dL/dweight, dL/dbias, running_var), the transcription's, its state)``."""
    shape, channels, buffer_size = (2, 3, 4, 4), ours.num_features, ours.buffer_size
    weight, bias = ours.weight.detach().clone(), ours.bias.detach().clone()
    state = _authors_state(channels, buffer_size, ours.warmup_iters)
    for t in range(1, iterations + 1):
        x, grad_y = _authors_input(t, shape), randn(*shape, seed=10_000 + t)
        expected = _authors_train_step(state, weight, bias, x, grad_y)
        ours.zero_grad()
        y, grad_x = train_step(ours, x, grad_y)
        actual = (y, grad_x, ours.weight.grad, ours.bias.grad, ours.running_var)
        expected = (*expected, state["running_var"].flatten())
        yield t, actual, expected, state


@pytest.mark.parametrize(("buffer_size", "warmup_iters"), [(4, 10), (3, 100), (1, 0)])
def test_matches_the_authors_code_over_the_renormalization_phase(buffer_size, warmup_iters):
    iterations = RENORM_START + 100  # r switches on after iteration 1000
    r_was_free = False
    names = ("y", "grad_x", "grad_w", "grad_b", "running_var")
    layer = make_layer(3, buffer_size=buffer_size, warmup_iters=warmup_iters)
    for t, actual, expected, state in compare_with_authors_code(layer, iterations):
        for name, a, e in zip(names, actual, expected, strict=True):
            assert_close(a, e, atol=1e-8, rtol=1e-8, msg=lambda m, n=name, t=t: f"{n} at {t}: {m}")
        if t > RENORM_START:
            sma = state["buffer_x2"].mean(dim=0) if buffer_size > 1 else state["buffer_x2"][0]
            r = (sma + 1e-5).sqrt() / (state["running_var"].flatten() + 1e-5).sqrt()
            r_was_free |= bool(((r - 1).abs() > 1e-2).any())
    assert r_was_free, "the test must reach iterations where r differs from 1"
    layer.eval()
    x = _authors_input(0, (2, 3, 4, 4))
    c = x.shape[1]
    authors_eval = x / (state["running_var"].view(1, c, 1, 1) + 1e-5).sqrt()
    authors_eval = layer.weight.view(1, c, 1, 1) * authors_eval + layer.bias.view(1, c, 1, 1)
    assert_close(layer(x), authors_eval.detach(), atol=1e-8, rtol=1e-8)
