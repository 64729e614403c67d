"""The fast path of DynamicNorm2d against its teaching path, its float32 precision against
torch.nn.BatchNorm2d's, the functional, and the benchmark's smoke run."""

import ast
import copy
import importlib
import inspect
import json

import pytest
import torch

from dnbook import bench
from dnbook.models import mobilenet_v2
from dnbook.norms import DynamicNorm2d, fast_dynamic, fast_passes
from dnbook.norms.dynamic import ACTIVATIONS, SCALES, SHIFTS
from dnbook.norms.fast_dynamic import (
    DynamicNormFunction,
    GraphCoefficients,
    dynamic_norm,
    spatial_sums,
)

SHAPE = (4, 24, 5, 5)
# float64: the two paths differ only by rounding (shifted moments against two-pass statistics).
TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}

CONFIGS = [
    {"mode": "B"},
    {"mode": "B", "sc_input": "normalized"},
    {"mode": "B", "detach_sc_input": True},
    {"mode": "B", "sc_input": "normalized", "detach_sc_input": True, "momentum": None},
    {"mode": "B", "g": "oup", "activation": "silu", "scale": "linear"},
    {"mode": "B", "g": 2, "activation": "gelu", "scale": "tanh", "shift": "tanh"},
    {"mode": "B", "track_running_stats": False},
    {"mode": "C", "merge": "fc1"},
    {"mode": "C", "merge": "fc2", "g": 2, "scale": "tanh", "shift": "tanh"},
    {"mode": "C", "g": "oup", "detach_sc_input": True, "activation": "silu"},
    {"mode": "B", "fc1_bias": True},
    {"mode": "B", "fc1_bias": True, "sc_input": "raw", "g": 2},
    {"mode": "C", "fc1_bias": True, "merge": "fc2"},
    {"mode": "B", "base_affine": True},
    {"mode": "B", "base_affine": True, "sc_input": "raw", "g": 2, "scale": "tanh"},
    {"mode": "B", "base_affine": True, "detach_sc_input": True, "fc1_bias": True},
    {"mode": "C", "base_affine": True},
]


def _pair(**options) -> tuple[DynamicNorm2d, DynamicNorm2d]:
    """A fast and a reference layer in float64 with the same random, non-zero FC weights."""
    options = {"r": 4, "fc2_init": "default", **options}
    fast = DynamicNorm2d(SHAPE[1], impl="fast", **options).double()
    if fast.base_affine:  # away from gamma = 1, beta = 0, so that both matter
        with torch.no_grad():
            fast.weight.uniform_(0.5, 2), fast.bias.uniform_(-1, 1)
    reference = DynamicNorm2d(SHAPE[1], impl="reference", **options).double()
    reference.load_state_dict(fast.state_dict())
    return fast, reference


def _batch(step: int = 0) -> torch.Tensor:
    """Features whose mean and scale change from step to step, as a conv's output does."""
    return torch.randn(SHAPE, dtype=torch.float64) * (1 + step) + step


def _forward_backward(layer: DynamicNorm2d, x: torch.Tensor, grad_y: torch.Tensor) -> dict:
    x = x.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(grad_y)
    return {
        "y": y.detach(),
        "grad_x": x.grad,
        **{f"grad_{name}": p.grad for name, p in layer.named_parameters()},
    }


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_equals_reference(options, training):
    fast, reference = _pair(**options)
    for step in range(3):  # the running statistics move identically
        x, grad_y = _batch(step), torch.randn(SHAPE, dtype=torch.float64)
        torch.testing.assert_close(
            _forward_backward(fast, x, grad_y), _forward_backward(reference, x, grad_y), **TOLERANCE
        )
    fast.train(training), reference.train(training)
    x, grad_y = _batch(3), torch.randn(SHAPE, dtype=torch.float64)
    expected = _forward_backward(reference, x, grad_y)
    # the SC-module's gradients are compared
    assert expected["grad_sc_module.fc1.weight"].abs().sum() > 0
    torch.testing.assert_close(_forward_backward(fast, x, grad_y), expected, **TOLERANCE)
    torch.testing.assert_close(
        dict(fast.named_buffers()), dict(reference.named_buffers()), **TOLERANCE
    )


@pytest.mark.parametrize(
    "options",
    [CONFIGS[0], CONFIGS[1], CONFIGS[7], CONFIGS[10], CONFIGS[12], CONFIGS[13], CONFIGS[16]],
)
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_through_the_layer(options, training):
    # The shifted moments' backward: K is taken from x (one pixel per channel in training),
    # and the numerical gradient perturbs that pixel too; the output does not depend on K.
    layer = DynamicNorm2d(6, r=2, fc2_init="default", **options).double().train(training)
    layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    x = (torch.randn(3, 6, 2, 3, dtype=torch.float64) + 3).requires_grad_()
    weights = tuple(layer.parameters())
    # gradcheck perturbs the weights in place, so the layer sees each perturbation.
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *weights))


def test_gradcheck_of_the_function_with_any_coefficients():
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    center = torch.randn(5, dtype=torch.float64)

    def coefficients(mean, mean_square):  # (N, C) -> (N, C): an arbitrary smooth map
        return 1 + torch.tanh(mean * weight), mean_square * weight - mean

    def function(x, weight):
        graph = GraphCoefficients(coefficients, [weight])
        return DynamicNormFunction.apply(x, center, graph, weight)

    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x, weight))


def test_function_computes_shifted_x_times_scale_plus_shift():
    x, center = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y = DynamicNormFunction.apply(x, center, GraphCoefficients(lambda m, q: (m, q), []))
    shifted = x - center[:, None, None]
    mean, mean_square = shifted.mean(dim=(2, 3)), shifted.square().mean(dim=(2, 3))
    torch.testing.assert_close(y, shifted * mean[..., None, None] + mean_square[..., None, None])


@pytest.mark.parametrize("mode", ["B", "C"])
@pytest.mark.parametrize("training", [True, False])
def test_functional_returns_the_statistics_and_writes_nothing(mode, training):
    layer = DynamicNorm2d(SHAPE[1], mode=mode, r=4, fc2_init="default", fc1_bias=True).double()
    layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    buffers = {name: b.clone() for name, b in layer.named_buffers()}
    x = _batch(2)
    sc = layer.sc_module
    args = (x, layer.running_mean, layer.running_var, sc.fc1.weight, sc.fc1.bias, sc.fc2.weight)
    recorded = []
    y, mean, var = dynamic_norm(
        *args, training, layer.eps, mode=mode, affine_hook=lambda *ab: recorded.append(ab)
    )
    torch.testing.assert_close(dict(layer.named_buffers()), buffers, rtol=0, atol=0)
    if training:
        expected_var, expected_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    else:
        expected_mean, expected_var = buffers["running_mean"], buffers["running_var"]
    torch.testing.assert_close((mean, var), (expected_mean, expected_var), **TOLERANCE)
    assert not mean.requires_grad and not var.requires_grad
    # the module gives the same output (eval: the same running statistics)
    torch.testing.assert_close(y, layer.train(training)(x), **TOLERANCE)
    [(alpha, shift)] = recorded
    assert alpha.shape == shift.shape == ((SHAPE[0], SHAPE[1]) if mode == "B" else (SHAPE[1],))


def test_functional_eval_needs_running_statistics():
    layer = DynamicNorm2d(8)
    sc = layer.sc_module
    with pytest.raises(ValueError, match="training=False needs running_mean and running_var"):
        dynamic_norm(torch.randn(2, 8, 3, 3), None, None, sc.fc1.weight, None, sc.fc2.weight)


@pytest.mark.parametrize("module", sorted(bench.FAST_PATH_FILES))
def test_no_import_cycle_between_the_layer_and_its_functional(module):
    """The fast path imports nothing from dnbook but its own modules (so no cycle with the
    layer, and ``bench.fast_path_at`` can load an earlier revision of it beside today's)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    outside = {n for n in imported if n.startswith("dnbook") and n not in bench.FAST_PATH_FILES}
    assert not outside, outside


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("same", [False, True], ids=["a,x", "x,x"])
@pytest.mark.parametrize("scratch", [False, True])
@pytest.mark.parametrize("blocks", [False, True], ids=["one block", "a block per sample"])
def test_spatial_sums(monkeypatch, dtype, channels_last, same, scratch, blocks):
    if blocks:  # the half-precision channels_last sums go a block of samples at a time
        monkeypatch.setattr(fast_passes, "BLOCK_ELEMENTS", 1)
    a, x = torch.randn(2, 3, 3, 5, 4, dtype=torch.float64)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    a_in, x_in = (t.to(dtype).contiguous(memory_format=memory_format) for t in (a, x))
    if same:  # the forward's call: sum x^2 and sum x from one tensor
        a_in = x_in
    kept = x_in.clone()
    memory = torch.empty_like(x_in) if scratch else None
    sum_ax, sum_a = spatial_sums(a_in, x_in, scratch=memory)
    assert torch.equal(x_in, kept)  # the inputs are never written to
    a, x = a_in.double(), x_in.double()  # the rounded inputs, exactly
    assert sum_ax.dtype == sum_a.dtype == torch.promote_types(dtype, torch.float32)
    tolerance = TOLERANCE if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(sum_ax.double(), (a * x).sum(dim=(2, 3)), **tolerance)
    torch.testing.assert_close(sum_a.double(), a.sum(dim=(2, 3)), **tolerance)


@pytest.mark.parametrize(
    ("table", "functions"),
    [
        (fast_dynamic.SCALE_BACKWARDS, SCALES),
        (fast_dynamic.SHIFT_BACKWARDS, SHIFTS),
        (fast_dynamic.ACTIVATION_BACKWARDS, {k: v() for k, v in ACTIVATIONS.items()}),
    ],
)
def test_hand_written_derivatives_match_autograd(table, functions):
    # DN-B's backward takes each option's derivative from these tables: one per option.
    assert table.keys() == functions.keys()
    activation = table is fast_dynamic.ACTIVATION_BACKWARDS  # written in h, not in f(h)
    for name, function in functions.items():
        h = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
        grad = torch.rand(13, dtype=torch.float64)
        out = function(h)
        (expected,) = torch.autograd.grad(out, h, grad)
        argument = h.detach() if activation else out.detach()
        torch.testing.assert_close(table[name](grad, argument), expected, **TOLERANCE)


def test_backward_can_run_twice_with_retain_graph():
    fast, reference = _pair()
    grads, batch = [], _batch()
    for layer in (fast, reference):
        x = batch.clone().requires_grad_()
        y = layer(x)
        y.sum().backward(retain_graph=True)
        y.square().sum().backward()
        grads.append((x.grad, layer.fc1.weight.grad))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("options", [CONFIGS[0], CONFIGS[3], CONFIGS[9]])
def test_input_gradient_through_a_frozen_layer_in_eval(options):
    # With the SC input detached, A and B are constants: only x needs a gradient.
    fast, reference = _pair(**options)
    batch, grads = _batch(), []
    for layer in (fast, reference):
        layer.requires_grad_(False).eval()
        x = batch.clone().requires_grad_()
        layer(x).square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], **TOLERANCE)


def test_no_graph_under_no_grad():
    layer = DynamicNorm2d(SHAPE[1], r=4, fc2_init="default")
    with torch.no_grad():
        y = layer(torch.randn(SHAPE))
    assert not y.requires_grad and y.grad_fn is None


def _relative_errors(layer: torch.nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> dict:
    """Max |float32 - float64| / max |float64| of the output, the input's gradient and the
    parameters' gradients (all of them, flattened): copies of ``layer`` run in both dtypes."""
    results = {}
    for dtype in (torch.float32, torch.float64):
        out = _forward_backward(copy.deepcopy(layer).to(dtype), x.to(dtype), grad_y.to(dtype))
        params = torch.cat([g.flatten() for key, g in out.items() if key not in ("y", "grad_x")])
        results[dtype] = {"output": out["y"], "input grad": out["grad_x"], "param grads": params}
    exact, rounded = results[torch.float64], results[torch.float32]
    return {
        key: ((rounded[key].double() - exact[key]).abs().max() / exact[key].abs().max()).item()
        for key in exact
    }


# At mean/std 1 every float32 path is at rounding level (a few epsilons) and DN does more
# float32 arithmetic than BN (its SC-module), so the bound has this floor.
FLOOR = 8 * torch.finfo(torch.float32).eps
SEED = 0


@pytest.mark.parametrize("ratio", [1, 100, 1_000, 10_000])
@pytest.mark.parametrize("mode", ["B", "C"])
@pytest.mark.parametrize("training", [True, False])
def test_float32_error_is_at_most_twice_batchnorms(ratio, mode, training):
    """Mean/std up to 1e4 (chapter 6 sees norm inputs whose means reach 2,600): the fast path's
    float32 error against float64 is at most twice torch.nn.BatchNorm2d's on the same input,
    for the output, the input's gradient and the parameters' gradients (BN's weight and bias,
    DN's SC-module), or twice a floor of 8 float32 epsilons where BN's is smaller still."""
    torch.manual_seed(SEED + ratio)
    n, c, h, w = 8, 24, 6, 6
    std = 1e-4  # a small spread, so that DN-C's E[X] input (ratio * std) stays at most 1
    # channel means that differ from sample to sample (as a conv's output), near ratio * std
    x = std * (ratio + 0.5 * torch.randn(n, c, 1, 1) + torch.randn(n, c, h, w))
    x = x.double()  # float32 values, exactly
    grad_y = torch.randn(n, c, h, w).double()
    # eps well below the variance (1e-8), so that the normalization is not eps's
    bn = torch.nn.BatchNorm2d(c, eps=1e-12)
    torch.nn.init.uniform_(bn.weight, 0.5, 1.5), torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    # GELU: ReLU's kink turns a 1e-7 difference in FC1's output into another derivative
    dn = DynamicNorm2d(c, mode=mode, r=4, eps=1e-12, fc2_init="default", activation="gelu")
    for layer in (bn, dn):  # eval: running statistics near the batch's
        layer.running_mean.fill_(ratio * std), layer.running_var.fill_(1.25 * std**2)
        layer.train(training)
    errors = {"bn": _relative_errors(bn, x, grad_y), "dn": _relative_errors(dn, x, grad_y)}
    for key, bn_error in errors["bn"].items():
        assert errors["dn"][key] <= 2 * max(bn_error, FLOOR), (key, errors)


def test_channels_last_and_bfloat16_inputs():
    layer = DynamicNorm2d(SHAPE[1], r=4, fc2_init="default")
    x = torch.randn(SHAPE)
    y = layer(x)
    channels_last = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.testing.assert_close(layer(channels_last), y)
    layer(channels_last).sum().backward()
    assert channels_last.grad.isfinite().all()
    y_bf16 = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf16.float(), y, rtol=0.05, atol=0.05)


def test_models_use_the_fast_path_and_the_reference_stays_selectable():
    model = mobilenet_v2(num_classes=10, norm="dnb:r=16,g=1", width_mult=0.25, stem="cifar")
    layers = [m for m in model.modules() if isinstance(m, DynamicNorm2d)]
    assert layers and all(layer.impl == "fast" for layer in layers)
    bench.use_reference_path(model)
    assert all(layer.impl == "reference" for layer in layers)
    assert "impl=reference" in repr(layers[0])
    with pytest.raises(ValueError, match="impl must be one of 'fast', 'reference'; got 'triton'"):
        DynamicNorm2d(8, impl="triton")


def test_benchmark_quick_run_writes_its_figures(tmp_path, capsys):
    specs = ["bn", "dnb:r=16,g=1", "dnb:r=16,g=1@reference"]
    argv = ["--quick", "--threads", "1", "--out", str(tmp_path), "--name", "smoke"]
    assert bench.main([*argv, "--specs", *specs]) == 0
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert {"command", "device", "hardware", "versions", "settings", "models", "layers"} <= set(
        result
    )
    assert {"load_average_before", "load_average_after", "wall_time_s"} <= set(result)
    assert result["settings"]["threads"] == 1 and result["settings"]["baseline"] == "bn"
    [model_entry] = result["models"]
    assert list(model_entry["norms"]) == specs
    for row in model_entry["norms"].values():
        assert len(row["wall_ms"]) == bench.QUICK["steps"] and row["median_wall_ms"] > 0
        assert {"ratio_wall_ms", "images_per_s"} <= set(row)
    assert model_entry["norms"]["bn"]["ratio_wall_ms"] == 1
    assert [entry["shape"] for entry in result["layers"]] == [list(bench.QUICK["layer_shapes"][0])]
    assert "| `dnb:r=16,g=1@reference` |" in (tmp_path / "smoke.md").read_text()
    assert "MobileNetV2, batch 4" in capsys.readouterr().out


def test_benchmark_rejects_a_bad_layer_shape():
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--layer-shapes", "4,16,4"])


@pytest.mark.parametrize(
    ("spec", "forward", "backward"),
    [
        ("bn", (1, 1, 1), (2, 1, 1)),  # torch.nn.BatchNorm2d: one fused kernel each way
        # x' = x - K; sums; x' * A, + B | sums; A g, + C1 x', + C0
        ("dnb:r=16,g=1", (4, 3, 2), (6, 3, 1)),
        ("dnc", (4, 3, 2), (6, 3, 1)),
        ("dnb:r=16,g=1@reference", (4, 3, 3), (10, 5, 5)),
    ],
)
def test_cost_model_of_one_layer(spec, forward, backward):
    # Activation-sized (reads, writes, allocations): the fast path allocates one tensor each way.
    traffic = bench.memory_traffic(spec, (4, 32, 3, 3))
    for direction, expected in (("forward", forward), ("backward", backward)):
        counts = traffic[direction]
        assert (counts["reads"], counts["writes"], counts["allocations"]) == expected


LAYOUT_SHAPES = [(4, 24, 5, 5), (3, 16, 1, 1), (2, 8, 16, 16), (5, 40, 4, 4)]


@pytest.mark.parametrize("shape", LAYOUT_SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("options", [CONFIGS[0], CONFIGS[4], CONFIGS[7], CONFIGS[14]])
@pytest.mark.parametrize("training", [True, False])
def test_fast_path_equals_reference_in_every_layout(shape, channels_last, options, training):
    """float64, forward and backward: the fast path on a channels_last input works on its
    (N, HW, C) views, on a contiguous one through BatchNorm's kernels; both give the teaching
    path's numbers, and the output and dL/dx keep the input's layout."""
    options = {"r": 4, "fc2_init": "default", **options}
    fast = DynamicNorm2d(shape[1], impl="fast", **options).double()
    if fast.base_affine:
        with torch.no_grad():
            fast.weight.uniform_(0.5, 2), fast.bias.uniform_(-1, 1)
    reference = DynamicNorm2d(shape[1], impl="reference", **options).double()
    reference.load_state_dict(fast.state_dict())
    fast.train(training), reference.train(training)
    fast.running_mean.uniform_(-1, 1), fast.running_var.uniform_(0.5, 2)
    reference.load_state_dict(fast.state_dict())
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).contiguous(memory_format=layout)
    grad_y = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    got, expected = _forward_backward(fast, x, grad_y), _forward_backward(reference, x, grad_y)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    assert got["y"].is_contiguous(memory_format=layout)
    assert got["grad_x"].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_of_the_function_in_both_layouts(channels_last):
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    center = torch.randn(5, dtype=torch.float64)

    def coefficients(mean, mean_square):
        return 1 + torch.tanh(mean * weight), mean_square * weight - mean

    def function(x, weight):
        return DynamicNormFunction.apply(
            x, center, GraphCoefficients(coefficients, [weight]), weight
        )

    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(function, (x.requires_grad_(), weight))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_channel_affine(channels_last, dtype):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 6, 4, 5).to(dtype).contiguous(memory_format=layout)
    scale, shift = torch.randn(3, 6), torch.randn(6)
    y = fast_dynamic.per_channel_affine(x, scale, shift)
    expected = x.double() * scale.double()[..., None, None] + shift.double()[:, None, None]
    tolerance = {} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    torch.testing.assert_close(y.double(), expected, **tolerance)
    assert y.dtype == dtype and y.is_contiguous(memory_format=layout) and y._base is None


OLD_PATH = "b30379c"  # main before this fast path (the first channels_last-aware one)


def test_benchmark_times_an_earlier_fast_path_from_git():
    try:
        bench.fast_path_at(OLD_PATH)
    except Exception:  # a shallow clone or no git: nothing to compare with
        pytest.skip(f"git revision {OLD_PATH} not available")
    old = bench.build_layer(f"dnb:r=4@path={OLD_PATH}", 16, torch.device("cpu")).double()
    new = bench.build_layer("dnb:r=4", 16, torch.device("cpu")).double()
    with torch.no_grad():
        new.fc2.weight.normal_()
    old.load_state_dict(new.state_dict())
    x, grad_y = torch.randn(2, 4, 16, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        _forward_backward(old, x, grad_y), _forward_backward(new, x, grad_y), **TOLERANCE
    )
    torch.testing.assert_close(old.running_var, new.running_var, **TOLERANCE)
    with pytest.raises(ValueError, match="unknown path @triton"):
        bench.build_layer("dnb:r=4@triton", 16, torch.device("cpu"))


# The evaluation forward without gradients (DN-B, running statistics): one reduction and one
# affine pass, block by block on a CPU; a small block size puts block boundaries inside the batch.
EVAL_SHAPE = (5, 24, 6, 7)
BF16_EPS = 2.0**-7


def _eval_pair(sc_input: str, g, **options) -> tuple[DynamicNorm2d, DynamicNorm2d]:
    """A fast and a reference DN-B in eval, float32, non-trivial weights and running statistics."""
    torch.manual_seed(0)
    fast = DynamicNorm2d(EVAL_SHAPE[1], r=4, g=g, sc_input=sc_input, fc2_init="default", **options)
    with torch.no_grad():
        fast.fc2.weight.mul_(3)  # alpha and lambda vary from sample to sample
        fast.running_mean.uniform_(-1, 1), fast.running_var.uniform_(0.5, 2)
    reference = DynamicNorm2d(
        EVAL_SHAPE[1], r=4, g=g, sc_input=sc_input, fc2_init="default", impl="reference", **options
    )
    reference.load_state_dict(fast.state_dict())
    return fast.eval(), reference.eval()


def _eval_forward(layer: DynamicNorm2d, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return layer(x)


@pytest.mark.parametrize("block", [None, 50], ids=["one-block", "small-blocks"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("precision", ["float64", "float32", "bf16-autocast"])
@pytest.mark.parametrize("g", [1, "oup"])
@pytest.mark.parametrize("sc_input", ["raw", "normalized"])
def test_no_grad_evaluation_equals_reference(
    sc_input, g, precision, channels_last, block, monkeypatch
):
    if block is not None:
        monkeypatch.setattr("dnbook.norms.fast_passes.BLOCK_ELEMENTS", block)
    fast, reference = _eval_pair(sc_input, g)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = (3 + 0.5 * torch.randn(EVAL_SHAPE[:2] + (1, 1)) + torch.randn(EVAL_SHAPE)).contiguous(
        memory_format=layout
    )
    autocast = precision == "bf16-autocast"
    if precision == "float64":
        fast, reference, x = fast.double(), reference.double(), x.double()
    elif autocast:
        x = x.bfloat16()  # what an autocast convolution hands the layer
    buffers = copy.deepcopy(dict(fast.named_buffers()))
    got = _eval_forward(fast, x, autocast)
    expected = _eval_forward(reference, x, autocast)
    assert got.dtype == x.dtype and got.is_contiguous(memory_format=layout)
    assert got.grad_fn is None
    torch.testing.assert_close(dict(fast.named_buffers()), buffers, rtol=0, atol=0)
    if precision == "float64":
        torch.testing.assert_close(got, expected, **TOLERANCE)
    elif precision == "float32":
        torch.testing.assert_close(got, expected)
    else:
        # the fast path computes x A + B in float32 and rounds once; the reference rounds
        # X_hat, X_hat alpha and the sum: both within a few bf16 epsilons of the float32 layer
        exact = _eval_forward(reference.float(), x.float(), autocast=False).double()
        for y in (got, expected):
            error = (y.double() - exact).abs().max()
            assert error <= 4 * BF16_EPS * exact.abs().max(), error.item()


@pytest.mark.parametrize(
    "options", [CONFIGS[10], CONFIGS[11], CONFIGS[13], CONFIGS[14], CONFIGS[15]]
)
def test_no_grad_evaluation_with_every_option(options):
    """float64: FC1's bias, g=2, the base affine, the recorded alpha and lambda."""
    fast, reference = _pair(**options, record_affine=True)
    fast.eval(), reference.eval()
    with torch.no_grad():
        fast.running_mean.uniform_(-1, 1), fast.running_var.uniform_(0.5, 2)
    reference.load_state_dict(fast.state_dict())
    x = _batch(2)
    with torch.no_grad():
        got, expected = fast(x), reference(x)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    torch.testing.assert_close(fast.last_alpha, reference.last_alpha, **TOLERANCE)
    torch.testing.assert_close(fast.last_shift, reference.last_shift, **TOLERANCE)


@pytest.mark.parametrize("ratio", [1, 100, 1_000, 10_000])
@pytest.mark.parametrize("sc_input", ["raw", "normalized"])
def test_no_grad_evaluation_float32_error_is_at_most_twice_batchnorms(ratio, sc_input):
    """As the test above with gradients, for the no-grad evaluation forward's output."""
    torch.manual_seed(SEED + ratio)
    n, c, h, w = 8, 24, 6, 6
    std = 1e-4
    x = std * (ratio + 0.5 * torch.randn(n, c, 1, 1) + torch.randn(n, c, h, w))
    x = x.double()
    bn = torch.nn.BatchNorm2d(c, eps=1e-12)
    torch.nn.init.uniform_(bn.weight, 0.5, 1.5), torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    dn = DynamicNorm2d(c, r=4, eps=1e-12, fc2_init="default", activation="gelu", sc_input=sc_input)
    errors = {}
    for name, layer in (("bn", bn), ("dn", dn)):
        layer.running_mean.fill_(ratio * std), layer.running_var.fill_(1.25 * std**2)
        layer.eval()
        with torch.no_grad():
            exact = copy.deepcopy(layer).double()(x)
            rounded = copy.deepcopy(layer).float()(x.float())
        errors[name] = ((rounded.double() - exact).abs().max() / exact.abs().max()).item()
    assert errors["dn"] <= 2 * max(errors["bn"], FLOOR), errors


@pytest.mark.parametrize("channels_last", [False, True])
def test_no_grad_training_forward_is_unchanged(channels_last):
    """Training mode without gradients keeps the batch statistics' path (and updates the
    running statistics); only evaluation with running statistics takes the two-pass path."""
    fast, reference = _pair(sc_input="raw")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = _batch(1).contiguous(memory_format=layout)
    with torch.no_grad():
        got, expected = fast(x), reference(x)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    torch.testing.assert_close(
        dict(fast.named_buffers()), dict(reference.named_buffers()), **TOLERANCE
    )
    assert fast.num_batches_tracked == 1
