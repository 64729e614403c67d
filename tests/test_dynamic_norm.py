"""DynamicNorm2d (DN-B and DN-C) against a direct transcription of the paper's eq. 6-7."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from dnbook.engine.config import TrainConfig
from dnbook.engine.environment import REPO_ROOT
from dnbook.norms import DynamicNorm2d, GroupedFC, make_norm

ACTIVATIONS = {"relu": torch.relu, "silu": F.silu, "gelu": F.gelu}
SCALES = {
    "sigmoid": lambda s: 2 * torch.sigmoid(s),
    "linear": lambda s: 1 + s,
    "tanh": lambda s: 1 + torch.tanh(s),
}
SHIFTS = {"linear": lambda t: t, "tanh": torch.tanh}


def reference(layer: DynamicNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6-7 written out with plain tensor ops and FC2 as a dense block-diagonal matrix."""
    c = layer.num_features
    if layer.training or not layer.track_running_stats:
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = layer.running_mean, layer.running_var
    std = torch.sqrt(var + layer.eps)
    x_tilde = (x - mean[:, None, None]) / std[:, None, None]
    w1 = layer.fc1.weight  # (C', C)
    b1 = layer.fc1.bias if layer.fc1.bias is not None else torch.zeros_like(w1[:, 0])
    groups = layer.fc2.groups
    w2 = torch.block_diag(*layer.fc2.weight.view(groups, 2 * c // groups, -1))  # (2C, C')
    act = ACTIVATIONS[layer.activation]
    maybe_detach = (lambda v: v.detach()) if layer.detach_sc_input else (lambda v: v)
    if layer.mode == "B":
        z = maybe_detach((x_tilde if layer.sc_input == "normalized" else x).mean(dim=(2, 3)))
        st = act(z @ w1.T + b1) @ w2.T  # (N, 2C)
        s, t = st[:, :c], st[:, c:]
    else:
        hidden_e, hidden_std = maybe_detach(mean) @ w1.T + b1, maybe_detach(std) @ w1.T + b1
        if layer.merge == "fc1":
            st = act(hidden_e + hidden_std) @ w2.T
        else:
            st = act(hidden_e) @ w2.T + act(hidden_std) @ w2.T
        s, t = st[:c], st[c:]
    alpha, shift = SCALES[layer.scale](s), SHIFTS[layer.shift](t)
    return x_tilde * alpha[..., None, None] + shift[..., None, None]


CONFIGS = [
    {"mode": "B"},
    {"mode": "B", "g": "oup", "activation": "silu", "scale": "linear"},
    {"mode": "B", "g": 2, "activation": "gelu", "scale": "tanh", "shift": "tanh"},
    {"mode": "B", "sc_input": "normalized", "momentum": None},
    {"mode": "B", "detach_sc_input": True},
    {"mode": "B", "fc1_bias": True},
    {"mode": "C", "merge": "fc1"},
    {"mode": "C", "merge": "fc2", "fc1_bias": True},
    {"mode": "C", "merge": "fc2", "g": 2, "scale": "tanh", "shift": "tanh"},
    {"mode": "C", "merge": "fc1", "g": "oup", "detach_sc_input": True, "activation": "silu"},
]


def _layer(**options) -> DynamicNorm2d:
    """A DN layer of 24 channels (hidden width 6) with a random, non-zero FC2."""
    options = {"r": 4, "fc2_init": "default", **options}
    return DynamicNorm2d(24, **options).double()


def _batch(step: int = 0, n: int = 4) -> torch.Tensor:
    return (torch.randn(n, 24, 5, 5, dtype=torch.float64) * (1 + step) + step).requires_grad_()


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_matches_the_equations(options, training):
    layer = _layer(**options)
    bn = nn.BatchNorm2d(24, affine=False, momentum=layer.momentum).double()
    for step in range(3):  # non-trivial running statistics, updated exactly as PyTorch's BN
        x = _batch(step)
        layer(x), bn(x)
    torch.testing.assert_close(dict(layer.named_buffers()), dict(bn.named_buffers()))

    layer.train(training)
    x = _batch(3)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), reference(layer, x_ref)
    torch.testing.assert_close(y, y_ref)

    grad = torch.randn_like(y)
    weights = list(layer.parameters())
    assert len(weights) == 3 if options.get("fc1_bias") else 2
    grads = torch.autograd.grad(y, [x, *weights], grad)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, *weights], grad)
    torch.testing.assert_close(grads, grads_ref)


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_zero_initialized_fc2_is_batchnorm_with_unit_gamma(options, momentum):
    layer = DynamicNorm2d(24, r=4, **{**options, "momentum": momentum}).double()
    bn = nn.BatchNorm2d(24, momentum=momentum).double()
    for step in range(3):
        x = _batch(step)
        torch.testing.assert_close(layer(x), bn(x))
    torch.testing.assert_close(dict(layer.named_buffers()), dict(bn.named_buffers()))
    layer.eval(), bn.eval()
    x = _batch(3)
    torch.testing.assert_close(layer(x), bn(x))


def test_state_has_no_affine_parameters():
    layer = DynamicNorm2d(64, mode="B", r=16, g=1)
    assert set(layer.state_dict()) == {
        "sc_module.fc1.weight",
        "sc_module.fc2.weight",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }
    assert layer.fc1 is layer.sc_module.fc1 and layer.fc2 is layer.sc_module.fc2
    assert layer.fc1.weight.shape == (4, 64)  # c -> c // r
    assert layer.fc2.weight.shape == (128, 1)  # c // r -> 2c, one input per group (g=1)
    with_bias = DynamicNorm2d(64, mode="B", r=16, g=1, fc1_bias=True)
    assert set(with_bias.state_dict()) - set(layer.state_dict()) == {"sc_module.fc1.bias"}
    assert with_bias.fc1.bias.shape == (4,)


def _old_format(state: dict, prefix: str) -> dict:
    """``state`` as version 1 wrote it: the SC-module's FCs at the layer's top level."""
    old = OrderedDict(
        (key.replace(prefix + "sc_module.", prefix), value) for key, value in state.items()
    )
    # nn.Module.state_dict() records each module's version; version 1 had no sc_module
    old._metadata = OrderedDict(
        (name, dict(meta)) for name, meta in state._metadata.items() if "sc_module" not in name
    )
    old._metadata[prefix[:-1]]["version"] = 1
    return old


@pytest.mark.parametrize("mode", ["B", "C"])
def test_version_1_state_dict_loads(mode):
    # Weights stored before the SC-module became a submodule: fc1.weight, fc2.weight.
    def model():
        return nn.Sequential(nn.Conv2d(3, 24, 1), DynamicNorm2d(24, mode=mode, r=4)).double()

    torch.manual_seed(0)
    stored = model()
    with torch.no_grad():
        stored[1].fc2.weight.normal_()
    stored(torch.randn(4, 3, 5, 5, dtype=torch.float64))  # running statistics move
    old = _old_format(stored.state_dict(), "1.")
    assert "1.fc1.weight" in old and "1.sc_module.fc1.weight" not in old
    loaded = model()
    loaded.load_state_dict(old)
    torch.testing.assert_close(loaded.state_dict(), stored.state_dict(), rtol=0, atol=0)
    # without metadata too (a state dict rebuilt as a plain dict)
    loaded = model()
    loaded.load_state_dict(dict(old))
    torch.testing.assert_close(loaded.state_dict(), stored.state_dict(), rtol=0, atol=0)
    # the current format round-trips, and an unknown key is still an error
    loaded.load_state_dict(stored.state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        loaded.load_state_dict({**stored.state_dict(), "1.fc3.weight": torch.zeros(1)})


@pytest.mark.parametrize("options", [{"mode": "B", "g": 2}, {"mode": "C", "fc2_init": "default"}])
def test_seeded_weights_are_those_of_version_1(options):
    # Stored runs are reproducible from their seed: the SC-module draws its weights as the
    # layer did before it was a submodule (each FC built, then reset once by the layer).
    torch.manual_seed(3)
    layer = DynamicNorm2d(48, r=4, **options)
    torch.manual_seed(3)
    fc1, fc2 = nn.Linear(48, 12, bias=False), GroupedFC(12, 96, g=options.get("g", 1))
    fc1.reset_parameters(), fc2.reset_parameters()
    if options.get("fc2_init", "zeros") == "zeros":
        nn.init.zeros_(fc2.weight)
    torch.testing.assert_close(layer.fc1.weight, fc1.weight, rtol=0, atol=0)
    torch.testing.assert_close(layer.fc2.weight, fc2.weight, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["B", "C"])
def test_device_and_dtype(mode):
    layer = DynamicNorm2d(24, mode=mode, r=4, fc1_bias=True, dtype=torch.float64)
    assert {t.dtype for t in layer.parameters()} == {torch.float64}
    assert layer.running_mean.dtype == layer.running_var.dtype == torch.float64
    meta = DynamicNorm2d(24, mode=mode, r=4, device="meta")
    assert {t.device.type for t in (*meta.parameters(), *meta.buffers())} == {"meta"}


@pytest.mark.parametrize("mode", ["B", "C"])
def test_without_running_stats_eval_uses_batch_statistics(mode):
    layer = _layer(mode=mode, track_running_stats=False)
    assert layer.running_mean is None and layer.num_batches_tracked is None
    x = _batch()
    y_train = layer(x)
    torch.testing.assert_close(layer.eval()(x), y_train)


def test_dnb_in_eval_treats_each_sample_alone():
    torch.manual_seed(0)
    dn = lambda c: DynamicNorm2d(c, mode="B", r=4, fc2_init="default")  # noqa: E731
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), dn(16), nn.ReLU(), nn.Conv2d(16, 16, 3), dn(16)
    ).double()
    for _ in range(3):  # move the running statistics and weights away from their init
        model.zero_grad()
        model(torch.randn(8, 3, 8, 8, dtype=torch.float64)).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    model.eval()
    batch = torch.randn(64, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(0, 64, 9)])
    torch.testing.assert_close(alone, together[::9], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("mode", "shape"), [("B", (4, 24)), ("C", (24,))])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_record_affine(mode, shape, impl):
    layer = _layer(mode=mode, record_affine=True, impl=impl)
    assert layer.last_alpha is None
    x = _batch()
    y = layer(x)
    assert layer.last_alpha.shape == layer.last_shift.shape == shape
    assert not layer.last_alpha.requires_grad
    # the recorded values are the ones used: y = X_tilde * alpha + lambda
    x_tilde = F.batch_norm(x, None, None, training=True, eps=layer.eps)
    expected = x_tilde * layer.last_alpha[..., None, None] + layer.last_shift[..., None, None]
    torch.testing.assert_close(y, expected)
    off = _layer(mode=mode, impl=impl)  # off by default, and switched on later
    off(_batch())
    assert off.last_alpha is None
    off.record_affine = True
    off(_batch())
    assert off.last_alpha.shape == shape


@pytest.mark.parametrize(
    ("options", "fc1_macs", "fc2_macs"),
    [
        # DN-B: both FCs once per sample (N = 4), 24 -> 6 -> 48 with 3 groups for g=2.
        ({"mode": "B", "g": 2}, 4 * 24 * 6, 4 * 6 * 48 // 3),
        # DN-C: FC1 once per branch (E and Std); FC2 once (merge=fc1) or per branch (fc2).
        ({"mode": "C", "merge": "fc1"}, 2 * 24 * 6, 6 * 48 // 6),
        ({"mode": "C", "merge": "fc2", "g": "oup"}, 2 * 24 * 6, 2 * 6 * 48),
    ],
)
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_flop_counter_sees_both_fcs(options, fc1_macs, fc2_macs, impl):
    layer = DynamicNorm2d(24, r=4, impl=impl, **options).eval()
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(4, 24, 5, 5))
    assert counter.get_total_flops() == 2 * (fc1_macs + fc2_macs)
    if impl == "reference":  # the SC-module runs as modules; the functional runs on tensors
        counts = counter.get_flop_counts()
        assert sum(counts["DynamicNorm2d.sc_module.fc1"].values()) == 2 * fc1_macs
        assert sum(counts["DynamicNorm2d.sc_module.fc2"].values()) == 2 * fc2_macs


def test_reset_parameters_restores_the_initial_state():
    layer = _layer(mode="B", fc2_init="zeros")
    with torch.no_grad():
        layer.fc2.weight.fill_(1.0)
    layer(_batch())
    layer.reset_parameters()
    assert not layer.fc2.weight.any()
    assert layer.num_batches_tracked == 0 and not layer.running_mean.any()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "b"}, "mode must be one of 'B', 'C'; got 'b'"),
        ({"merge": "sum"}, "merge must be one of 'fc1', 'fc2'; got 'sum'"),
        ({"activation": "tanh"}, "activation must be one of 'relu', 'silu', 'gelu'"),
        ({"scale": "exp"}, "scale must be one of 'sigmoid', 'linear', 'tanh'; got 'exp'"),
        ({"shift": "sigmoid"}, "shift must be one of 'linear', 'tanh'; got 'sigmoid'"),
        ({"sc_input": "pooled"}, "sc_input must be one of 'normalized', 'raw'"),
        ({"fc2_init": "ones"}, "fc2_init must be one of 'zeros', 'default'; got 'ones'"),
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"eps": 0}, "eps must be positive, got 0"),
        ({"momentum": 1.5}, "momentum must be in \\[0, 1\\] or None, got 1.5"),
        ({"g": "all"}, "g must be a positive integer or 'oup', got 'all'"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        DynamicNorm2d(32, **options)


@pytest.mark.parametrize("mode", ["B", "C"])
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((4, 24, 5), "expected a 4-D input"),
        ((4, 23, 5, 5), "expected 24 channels"),
        ((1, 24, 1, 1), "expected more than 1 value per channel when training, got 1"),
    ],
)
def test_bad_input(mode, shape, message):
    with pytest.raises(ValueError, match=message):
        DynamicNorm2d(24, mode=mode, r=4)(torch.randn(shape))


def test_single_value_per_channel_is_fine_in_eval():
    layer = DynamicNorm2d(24, r=4).eval()
    assert layer(torch.randn(1, 24, 1, 1)).shape == (1, 24, 1, 1)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {},
            "64, mode=B, r=16, g=1, sc_input=raw, eps=1e-05, momentum=0.1, "
            "track_running_stats=True, activation=relu, scale=sigmoid, shift=tanh, "
            "detach_sc_input=False, fc2_init=zeros, fc1_bias=False, base_affine=False, "
            "record_affine=False, "
            "impl=fast",
        ),
        (
            {"mode": "C", "merge": "fc2", "g": "oup", "momentum": None},
            "64, mode=C, r=16, g=oup, merge=fc2, eps=1e-05, momentum=None, "
            "track_running_stats=True, activation=relu, scale=sigmoid, shift=tanh, "
            "detach_sc_input=False, fc2_init=zeros, fc1_bias=False, base_affine=False, "
            "record_affine=False, "
            "impl=fast",
        ),
    ],
)
def test_extra_repr(options, expected):
    assert DynamicNorm2d(64, **options).extra_repr() == expected


# Stored results, one per kind of norm spec: their names must not change when a DN option is
# added (fc1_bias is left out of the hash at its legacy value, False).
STORED = ["055909fd7f2b", "5d61c923483e", "517e60d2a865", "3d7055bad12d", "20321f20f4a7"]
STORED += ["56ad7add6a3a"]


@pytest.mark.parametrize("name", STORED)
def test_stored_result_hashes_do_not_change(name):
    stored = json.loads((REPO_ROOT / "results" / "cpu_v1" / f"{name}.json").read_text())
    assert stored["hash"] == name
    assert TrainConfig.from_dict(stored["config"]).hash() == name


def test_fc1_bias_in_the_spec_and_the_hash():
    plain = make_norm("dnb:r=16,g=1")
    assert plain.options["fc1_bias"] is False and plain.spec == "dnb:r=16,g=1"
    biased = make_norm("dnb:r=16,g=1,fc1_bias=true")
    assert biased.spec == "dnb:r=16,g=1,fc1_bias=true"
    assert biased(32).fc1.bias.shape == (2,) and plain(32).fc1.bias is None
    assert make_norm("dnc:fc1_bias=true")(32).fc1.bias is not None
    config = TrainConfig(norm="dnb:r=16,g=1")
    assert config.replace(norm="dnb:r=16,g=1,fc1_bias=false").hash() == config.hash()
    assert config.replace(norm="dnb:r=16,g=1,fc1_bias=true").hash() != config.hash()
    with pytest.raises(ValueError, match="fc1_bias must be true or false"):
        make_norm("dnb:fc1_bias=1")


# --- the base affine (issue 14: the book's own variant) ---


def test_base_affine_off_leaves_the_state_dict_and_the_hash_alone():
    from dnbook.engine.config import TrainConfig

    plain = DynamicNorm2d(16, r=4)
    assert plain.weight is None and plain.bias is None
    assert not any(key in ("weight", "bias") for key in plain.state_dict())
    assert "base_affine=False" in plain.extra_repr()
    default = TrainConfig(model="resnet18", norm="dnb:r=16,g=1")
    explicit = TrainConfig(model="resnet18", norm="dnb:r=16,g=1,base_affine=false")
    assert explicit.hash() == default.hash()
    assert TrainConfig(model="resnet18", norm="dnb:r=16,g=1,base_affine=true").hash() != (
        default.hash()
    )


@pytest.mark.parametrize("mode", ["B", "C"])
def test_base_affine_parameters_initialization_and_spec(mode):
    from dnbook.norms import make_norm

    factory = make_norm(f"dn{mode.lower()}:r=4,base_affine=true")
    assert "base_affine=true" in factory.spec
    layer = factory(16)
    assert layer.base_affine and "base_affine=True" in layer.extra_repr()
    assert {"weight", "bias"} <= set(layer.state_dict())
    torch.testing.assert_close(layer.weight.detach(), torch.ones(16))
    torch.testing.assert_close(layer.bias.detach(), torch.zeros(16))
    with torch.no_grad():
        layer.weight.fill_(3.0), layer.bias.fill_(1.0)
    layer.reset_parameters()
    assert layer.weight.eq(1).all() and layer.bias.eq(0).all()
    # with gamma = 1, beta = 0 the layer computes what it computes without the base affine
    plain = DynamicNorm2d(16, mode=mode, r=4)
    plain.load_state_dict(layer.state_dict(), strict=False)
    x = torch.randn(4, 16, 3, 3)
    torch.testing.assert_close(layer(x), plain(x))


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_base_affine_scales_alpha_and_shifts_lambda(impl):
    layer = DynamicNorm2d(8, r=2, fc2_init="default", base_affine=True, record_affine=True,
                          impl=impl).double()  # fmt: skip
    plain = DynamicNorm2d(8, r=2, fc2_init="default", record_affine=True, impl=impl).double()
    plain.load_state_dict(layer.state_dict(), strict=False)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2), layer.bias.uniform_(-1, 1)
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    layer(x), plain(x)
    torch.testing.assert_close(layer.last_alpha, plain.last_alpha * layer.weight.detach())
    torch.testing.assert_close(layer.last_shift, plain.last_shift + layer.bias.detach())


def test_trainer_groups_the_base_affine_with_the_norm_parameters():
    from torch import nn

    from dnbook.engine.trainer import param_groups

    model = nn.Sequential(nn.Conv2d(3, 8, 3), DynamicNorm2d(8, r=2, base_affine=True))
    decay, no_decay = param_groups(model, 5e-4, norm_weight_decay=False)
    norm = model[1]
    exempt = {id(p) for p in no_decay["params"]}
    assert id(norm.weight) in exempt and id(norm.bias) in exempt
    assert id(model[0].weight) in {id(p) for p in decay["params"]}
    [everything] = param_groups(model, 5e-4, norm_weight_decay=True)
    assert everything["weight_decay"] == 5e-4 and len(everything["params"]) == 6
