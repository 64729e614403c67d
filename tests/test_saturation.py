"""The saturation probe (dnbook.engine.saturation): its counts on planted values, and that a
probed run trains exactly as an unprobed one (the probe changes nothing the run computes)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from dnbook.engine import saturation
from dnbook.engine.saturation import SaturationProbe, measure
from dnbook.norms import DynamicNorm2d
from tests.test_engine import NUM_CLASSES, config, quiet_train


def dn_cnn(**dn_options) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1, bias=False),
            norm1=DynamicNorm2d(16, r=4, **dn_options),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(16, 16, 3, padding=1, bias=False),
            norm2=DynamicNorm2d(16, r=4, **dn_options),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(16, NUM_CLASSES),
        )
    )


def plain_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DNBOOK_RESULTS", str(tmp_path / "results"))


def test_fresh_layers_are_unsaturated_and_big_fc2_weights_saturate_them():
    torch.manual_seed(0)
    model, images = dn_cnn(), torch.randn(8, 3, 8, 8)
    fresh = measure(model, images, plain_forward)
    # FC2 starts at zero: alpha = 1, lambda = 0 everywhere
    assert fresh["all"]["alpha_saturated"] == 0 and fresh["all"]["lambda_saturated"] == 0
    for layer in (model.norm1, model.norm2):
        # s, t = FC2(relu(FC1 z)) far from 0 in every live unit: 2 sigmoid(s), tanh(t) pinned
        nn.init.constant_(layer.sc_module.fc2.weight, 1e3)
        nn.init.constant_(layer.sc_module.fc1.weight, 1.0)
    pinned = measure(model, images, plain_forward)
    # FC1 weights all 1 on a normalized input: h = sum over channels of z, the same for every
    # unit, so an image has all units on or all off
    zero = pinned["all"]["fc1_zero_images"]
    assert pinned["all"]["alpha_saturated"] == pytest.approx(1 - zero, abs=1e-6)
    assert pinned["all"]["lambda_saturated"] == pytest.approx(1 - zero, abs=1e-6)


def test_dead_units_and_zero_images_are_counted_per_layer():
    torch.manual_seed(0)
    model, images = dn_cnn(), torch.randn(8, 3, 8, 8)
    nn.init.constant_(model.norm1.sc_module.fc1.weight, 0.0)  # h = 0: every unit off, always
    found = measure(model, images, plain_forward)
    assert found["first"]["fc1_dead_units"] == 1.0 and found["first"]["fc1_zero_images"] == 1.0
    assert found["last"]["fc1_dead_units"] < 1.0  # random FC1 on 8 images: some unit fires


@pytest.mark.parametrize(
    ("options", "none_of"),
    [
        ({"scale": "linear", "shift": "linear"}, ("alpha_saturated", "lambda_saturated")),
        ({"activation": "silu"}, ("fc1_dead_units", "fc1_zero_images")),
    ],
)
def test_a_metric_a_layer_cannot_have_is_none(options, none_of):
    found = measure(dn_cnn(**options), torch.randn(4, 3, 8, 8), plain_forward)
    for metric in none_of:
        assert found["all"][metric] is None


def test_measure_leaves_the_layers_and_the_mode_as_they_were():
    model = dn_cnn()
    model.train()
    model.norm2.record_affine = True
    measure(model, torch.randn(4, 3, 8, 8), plain_forward)
    assert model.training and model.norm1.impl == "fast" and not model.norm1.record_affine
    assert model.norm2.record_affine and model.norm1.last_alpha is None
    assert int(model.norm1.num_batches_tracked) == 0  # eval mode: no statistics updated


def test_a_model_without_dn_b_cannot_be_probed():
    with pytest.raises(ValueError, match="no DN-B layer"):
        measure(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.randn(2, 3, 4, 4), plain_forward)


def test_probed_run_trains_exactly_as_an_unprobed_one(monkeypatch):
    cfg = config(epochs=2)
    probed = quiet_train(cfg, model_fn=lambda n: dn_cnn())
    # 48 images at batch 16: 3 steps an epoch; probe every step (and the final one)
    assert probed.saturation is not None
    monkeypatch.setattr(SaturationProbe, "maybe_record", lambda *args, **kwargs: None)
    unprobed = quiet_train(cfg, model_fn=lambda n: dn_cnn())
    torch.testing.assert_close(
        probed.model.state_dict(), unprobed.model.state_dict(), rtol=0, atol=0
    )
    assert probed.final == unprobed.final


def test_the_record_lists_every_probed_step(monkeypatch):
    monkeypatch.setattr(saturation, "PROBE_EVERY", 2)
    outcome = quiet_train(config(epochs=2), model_fn=lambda n: dn_cnn())
    record = outcome.to_dict()["saturation"]
    assert record["step"] == [0, 2, 4, 6]  # 6 steps: every 2nd, from 0, and the last
    assert len(record["all"]["alpha_saturated"]) == 4
    assert quiet_train(config(epochs=1)).saturation is None  # no DN-B layer: no probe


def test_base_affine_layers_are_measured_on_the_generated_alpha_and_lambda():
    from dnbook.engine import saturation
    from dnbook.norms import DynamicNorm2d

    layer = DynamicNorm2d(4, r=2, base_affine=True)
    with torch.no_grad():
        layer.weight.fill_(10.0), layer.bias.fill_(5.0)
    # generated alpha = 2 sigma(s) at 1.99 and 1.0, lambda = tanh(t) at 0 and 0.999
    layer.last_alpha = torch.tensor([[1.99, 1.0, 1.0, 1.0]]) * 10.0
    layer.last_shift = torch.tensor([[0.0, 0.999, 0.0, 0.0]]) + 5.0
    counts = saturation._layer_counts(layer, torch.ones(1, 2))
    assert counts["alpha_saturated"] == [1, 4.0]
    assert counts["lambda_saturated"] == [1, 4.0]
