"""The fast path of DynamicNorm2d against its teaching path, and the benchmark's smoke run."""

import json

import pytest
import torch

from dnbook import bench
from dnbook.models import mobilenet_v2
from dnbook.norms import DynamicNorm2d, fast_dynamic
from dnbook.norms.dynamic import ACTIVATIONS, SCALES, SHIFTS
from dnbook.norms.fast_dynamic import DynamicNormFunction, GraphCoefficients, spatial_sums

SHAPE = (4, 24, 5, 5)
# float64: the two paths differ only by rounding (E[x^2] - E[x]^2 against two-pass statistics).
TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}

CONFIGS = [
    {"mode": "B"},
    {"mode": "B", "sc_input": "raw"},
    {"mode": "B", "detach_sc_input": True},
    {"mode": "B", "sc_input": "raw", "detach_sc_input": True, "momentum": None},
    {"mode": "B", "g": "oup", "activation": "silu", "scale": "linear"},
    {"mode": "B", "g": 2, "activation": "gelu", "scale": "tanh", "shift": "tanh"},
    {"mode": "B", "track_running_stats": False},
    {"mode": "C", "merge": "fc1"},
    {"mode": "C", "merge": "fc2", "g": 2, "scale": "tanh", "shift": "tanh"},
    {"mode": "C", "g": "oup", "detach_sc_input": True, "activation": "silu"},
]


def _pair(**options) -> tuple[DynamicNorm2d, DynamicNorm2d]:
    """A fast and a reference layer in float64 with the same random, non-zero FC weights."""
    options = {"r": 4, "fc2_init": "default", **options}
    fast = DynamicNorm2d(SHAPE[1], impl="fast", **options).double()
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
    assert expected["grad_fc1.weight"].abs().sum() > 0  # the SC-module's gradients are compared
    torch.testing.assert_close(_forward_backward(fast, x, grad_y), expected, **TOLERANCE)
    torch.testing.assert_close(
        dict(fast.named_buffers()), dict(reference.named_buffers()), **TOLERANCE
    )


@pytest.mark.parametrize("options", [CONFIGS[0], CONFIGS[1], CONFIGS[7]])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_through_the_layer(options, training):
    layer = DynamicNorm2d(6, r=2, fc2_init="default", **options).double().train(training)
    layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 6, 2, 3, dtype=torch.float64, requires_grad=True)
    weights = (layer.fc1.weight, layer.fc2.weight)
    # gradcheck perturbs the weights in place, so the layer sees each perturbation.
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *weights))


def test_gradcheck_of_the_function_with_any_coefficients():
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def coefficients(mean, mean_square):  # (N, C) -> (N, C): an arbitrary smooth map
        return 1 + torch.tanh(mean * weight), mean_square * weight - mean

    def function(x, weight):
        return DynamicNormFunction.apply(x, GraphCoefficients(coefficients, [weight]), weight)

    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x, weight))


def test_function_computes_x_times_scale_plus_shift():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = DynamicNormFunction.apply(x, GraphCoefficients(lambda m, q: (m, q), []))
    mean, mean_square = x.mean(dim=(2, 3)), x.square().mean(dim=(2, 3))
    torch.testing.assert_close(y, x * mean[..., None, None] + mean_square[..., None, None])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_sums(dtype, channels_last):
    a, x = torch.randn(2, 2, 3, 5, 4, dtype=torch.float64)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    a_in, x_in = (t.to(dtype).contiguous(memory_format=memory_format) for t in (a, x))
    sum_ax, sum_a = spatial_sums(a_in, x_in)
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


@pytest.mark.parametrize("training", [True, False])
def test_float32_with_a_large_mean_stays_close(training):
    # E[x^2] - E[x]^2 in float32: a mean 20 standard deviations away costs ~3 digits of 7.
    fast, reference = (layer.float() for layer in _pair())
    for layer in (fast, reference):
        layer.train(training)
    x = torch.randn(8, 24, 8, 8) + 20
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-3, atol=1e-3)


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
        ("dnb:r=16,g=1", (3, 2, 1), (6, 3, 1)),  # sums; x * A, + B | sums; A g, + C1 x, + C0
        ("dnc", (3, 2, 1), (6, 3, 1)),
        ("dnb:r=16,g=1@reference", (4, 3, 3), (10, 5, 5)),
    ],
)
def test_cost_model_of_one_layer(spec, forward, backward):
    # Activation-sized (reads, writes, allocations): the fast path allocates one tensor each way.
    traffic = bench.memory_traffic(spec, (4, 32, 3, 3))
    for direction, expected in (("forward", forward), ("backward", backward)):
        counts = traffic[direction]
        assert (counts["reads"], counts["writes"], counts["allocations"]) == expected
