"""dnbook.models: torchvision's structure in the ImageNet form, CIFAR stems, widths, pluggable
norms, and weight init that leaves norm layers alone."""

import math

import pytest
import torch
from torch import nn

from dnbook.models import (
    MODEL_NAMES,
    PAPER_MODEL_NAMES,
    PlainCNN,
    build_model,
    mobilenet_v2,
    resnet18,
)
from dnbook.norms import CenConv2d, DynamicNorm2d, GroupNorm, SEBatchNorm2d

torchvision = pytest.importorskip("torchvision")

# torchvision's models with 100 classes (the paper's ImageNet-100); values from torchvision.
TORCHVISION_PARAMS = {"mobilenet_v2": 2_351_972, "resnet18": 11_227_812, "resnet34": 21_335_972}
# Every BatchNorm2d of torchvision's model: the norm layers our model must build.
TORCHVISION_NORM_LAYERS = {"mobilenet_v2": 52, "resnet18": 20, "resnet34": 36}


def torchvision_model(name: str, **kwargs) -> nn.Module:
    return getattr(torchvision.models, name)(num_classes=100, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def leaves(model: nn.Module) -> list[tuple[str, type]]:
    return [(name, type(m)) for name, m in model.named_modules() if not list(m.children())]


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_parameter_count_is_torchvisions(name):
    assert num_params(build_model(name)) == TORCHVISION_PARAMS[name]
    assert num_params(torchvision_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_same_layers_and_outputs_as_torchvision(name):
    """Torchvision's weights load strictly and give the same outputs: the same network."""
    torch.manual_seed(0)
    theirs = torchvision_model(name).double().eval()
    ours = build_model(name).double().eval()
    assert leaves(ours) == leaves(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("width_mult", [0.5, 0.75, 1.4])
def test_mobilenet_width_mult_matches_torchvision(width_mult):
    """Channels rounded to multiples of 8 exactly as torchvision does (and the head grows >1)."""
    theirs = torchvision_model("mobilenet_v2", width_mult=width_mult)
    ours = mobilenet_v2(width_mult=width_mult)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert num_params(ours) == num_params(theirs)


def test_resnet_width_mult_scales_stage_widths():
    model = resnet18(width_mult=0.5)
    widths = [
        stage[-1].conv2.out_channels
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
    ]
    assert widths == [32, 64, 128, 256]
    assert model.conv1.out_channels == 32
    assert model.fc.in_features == 256


def final_feature_map(model: nn.Module, x: torch.Tensor) -> torch.Size:
    last_stage = model.features if hasattr(model, "features") else model.layer4
    shapes = []
    handle = last_stage.register_forward_hook(lambda module, args, out: shapes.append(out.shape))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return shapes[0]


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_cifar_stem_keeps_a_4x4_map_for_32x32_input(name):
    x = torch.randn(2, 3, 32, 32)
    model = build_model(name, num_classes=10, stem="cifar", width_mult=0.25)
    assert final_feature_map(model, x)[-2:] == (4, 4)
    assert model(x).shape == (2, 10)
    # The reason for the CIFAR stem: the ImageNet one shrinks 32x32 to 1x1.
    imagenet = build_model(name, num_classes=10, width_mult=0.25)
    assert final_feature_map(imagenet, x)[-2:] == (1, 1)


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_norm_callable_builds_every_norm_layer(name):
    channels = []

    def norm(num_features: int) -> nn.Module:
        channels.append(num_features)
        return nn.GroupNorm(1, num_features)

    model = build_model(name, norm=norm)
    bn_channels = [
        m.num_features for m in torchvision_model(name).modules() if isinstance(m, nn.BatchNorm2d)
    ]
    assert sorted(channels) == sorted(bn_channels)
    assert len(channels) == TORCHVISION_NORM_LAYERS[name]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    ("spec", "layer"),
    [
        ("gn:groups=8", GroupNorm),
        ("se:r=16", SEBatchNorm2d),
        ("dnb:r=16,g=1", DynamicNorm2d),
        ("dnc:r=16,merge=fc1", DynamicNorm2d),
    ],
)
@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_norm_spec_replaces_every_norm_layer(name, spec, layer):
    model = build_model(name, norm=spec)
    assert sum(isinstance(m, layer) for m in model.modules()) == TORCHVISION_NORM_LAYERS[name]


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_mabn_builds_weight_centralized_convs(name):
    model = build_model(name, norm="mabn", num_classes=10, stem="cifar", width_mult=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    assert all(isinstance(conv, CenConv2d) for conv in convs)


@pytest.mark.parametrize(
    "spec",
    [
        "bn",
        "gn:groups=8",
        "mabn",
        "se:r=16",
        "dnb:r=16,g=1",
        "dnb:r=16,g=oup",
        "dnc:r=16,merge=fc2",
    ],
)
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])  # ResNet-34: same blocks
def test_forward_backward_with_every_norm(name, spec):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, norm=spec, stem="cifar", width_mult=0.25)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_model_init_leaves_norm_layers_alone():
    """DN's FC2 starts at zero (its own init); a model-level init over nn.Linear would break it."""
    model = mobilenet_v2(norm="dnb:r=16,g=1,init=zeros")
    dn_layers = [m for m in model.modules() if isinstance(m, DynamicNorm2d)]
    assert all(torch.count_nonzero(m.fc2.weight) == 0 for m in dn_layers)
    assert all(m.fc1.weight.std() > 0.01 for m in dn_layers if m.fc1.weight.numel() > 100)


@pytest.mark.parametrize("name", PAPER_MODEL_NAMES)
def test_conv_and_classifier_init_as_torchvision(name):
    torch.manual_seed(0)
    model = build_model(name)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels / groups * k * k)).
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 10_000]
    for conv in convs:
        fan_out = conv.out_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
    fc = model.classifier[1] if name == "mobilenet_v2" else model.fc
    if name == "mobilenet_v2":  # torchvision: N(0, 0.01), zero bias
        assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert torch.count_nonzero(fc.bias) == 0
    else:  # torchvision keeps nn.Linear's default: U(-1/sqrt(512), 1/sqrt(512))
        assert fc.weight.abs().max().item() <= 1 / math.sqrt(512)
        assert fc.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.05)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="'cifar10'"):
        build_model("resnet18", stem="cifar10")
    with pytest.raises(ValueError, match="'imagenet'"):
        mobilenet_v2(stem="tiny")
    with pytest.raises(ValueError, match="unknown norm"):
        resnet18(norm="layernorm")


def test_model_names_are_the_papers_and_the_plain_cnn():
    assert MODEL_NAMES[:-1] == PAPER_MODEL_NAMES
    assert MODEL_NAMES[-1] == "plain_cnn"


@pytest.mark.parametrize("spec", ["none", "bn", "gn:groups=8", "mabn:buffer=4"])
def test_plain_cnn_trains_with_each_testbed_norm(spec):
    """Chapter 1 and 2's testbed: one norm layer after each of five convs; biases only with none."""
    torch.manual_seed(0)
    model = build_model("plain_cnn", num_classes=10, norm=spec, stem="cifar", width_mult=0.5)
    assert isinstance(model, PlainCNN)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 128, 128]
    assert all((c.bias is not None) == (spec == "none") for c in convs)
    assert all(isinstance(c, CenConv2d) == spec.startswith("mabn") for c in convs)
    if spec == "none":
        assert not any(isinstance(m, nn.BatchNorm2d | GroupNorm) for m in model.modules())
    assert final_feature_map_plain(model) == (8, 8)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def final_feature_map_plain(model: PlainCNN) -> tuple[int, int]:
    with torch.no_grad():
        return tuple(model.eval().features(torch.randn(1, 3, 32, 32)).shape[-2:])
