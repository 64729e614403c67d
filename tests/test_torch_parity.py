"""Drop-in parity with torch.nn: PyTorch's own module-test sample inputs, run through dnbook.

``torch.testing._internal.common_modules.module_db`` holds, for every ``torch.nn`` module, the
constructor arguments and inputs that PyTorch's own test suite runs (``BatchNorm2d``: default,
cumulative average, momentum, no affine, no running statistics, an empty batch, ``bias=False``;
``GroupNorm``: 2-D to 4-D inputs, LayerNorm- and InstanceNorm-like group counts, ``bias=False``).
For every sample, in train and eval mode, dnbook's twin is built with the *same* arguments and
the same state dict (random affine parameters and running statistics), and the two must agree
on the output, the gradients of the input and of the parameters, and the buffers.

Importing ``module_db`` has global side effects (it freezes ``torch.backends`` flags, parses
``sys.argv``, reseeds the RNG), so the samples are read once in a subprocess and passed back
through a file.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from dnbook.norms import BatchNorm2d, GroupNorm

# Every torch.nn layer with a dnbook twin, by module_db's name.
TWINS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "nn.BatchNorm2d": (nn.BatchNorm2d, BatchNorm2d),
    "nn.GroupNorm": (nn.GroupNorm, GroupNorm),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# float32: the parameter gradients are sums over the batch and the pixels, and two summation
# orders of terms larger than the sum differ by more than torch's elementwise default (CI saw
# grad_weight off by 1.6e-5 on a value near 2, i.e. 8e-6 relative, for BatchNorm2d in eval)
TOLERANCE = {
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
    torch.float32: {"atol": 1e-4, "rtol": 2e-5},
}

_EXTRACT = """
import sys, types, unittest
try:
    import expecttest  # noqa: F401  (common_utils needs it; it is only a test helper)
except ImportError:
    stub = types.ModuleType("expecttest")
    stub.TestCase, stub.ACCEPT = unittest.TestCase, False
    sys.modules["expecttest"] = stub
sys.argv = sys.argv[:1]
import torch
from torch.testing._internal.common_modules import module_db

names, dtypes = {names!r}, {{"float64": torch.float64, "float32": torch.float32}}
samples = []
for info in module_db:
    if info.name not in names:
        continue
    for dtype_name, dtype in dtypes.items():
        for training in (True, False):
            inputs = info.module_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=True, training=training
            )
            for index, sample in enumerate(inputs):
                forward = sample.forward_input
                assert len(forward.args) == 1 and not forward.kwargs, info.name
                samples.append({{
                    "name": info.name,
                    "desc": sample.desc or "default",
                    "index": index,
                    "dtype": dtype_name,
                    "training": training,
                    "args": tuple(sample.constructor_input.args),
                    "kwargs": dict(sample.constructor_input.kwargs),
                    "input": forward.args[0].detach(),
                }})
torch.save(samples, sys.argv[1] if len(sys.argv) > 1 else {path!r})
"""


def _torch_samples() -> list[dict]:
    """module_db's samples of the layers in ``TWINS``, read in a clean subprocess."""
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "samples.pt")
        code = _EXTRACT.format(names=sorted(TWINS), path=path)
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        return torch.load(path, weights_only=False)


SAMPLES = _torch_samples()


def _sample_id(sample: dict) -> str:
    mode = "train" if sample["training"] else "eval"
    return f"{sample['name']}-{sample['desc']}-{sample['index']}-{mode}-{sample['dtype']}"


def test_module_db_has_the_expected_samples():
    """The sample lists are PyTorch's (torch 2.14: 7 for BatchNorm2d, 10 for GroupNorm, each in
    train and eval and both dtypes); a torch that drops them must not pass this file silently."""
    for name in TWINS:
        assert sum(s["name"] == name for s in SAMPLES) >= 4 * 4, name
    assert any(s["input"].shape[0] == 0 for s in SAMPLES)  # the empty batch
    assert any(s["kwargs"].get("bias") is False for s in SAMPLES)


def _randomize(module: nn.Module, seed: int) -> None:
    """Random affine parameters and running statistics (so eval uses non-trivial ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            values = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
            low = 0.5 if name.endswith("var") else -1.5
            tensor.copy_(low + 2.0 * values)


def _run(module: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward and backward: output, input gradient, parameter gradients, buffers."""
    x = x.clone().requires_grad_()
    y = module(x)
    result = {"y": y.detach()}
    if y.requires_grad:
        y.backward(grad_y)
        result["grad_x"] = x.grad
        for name, param in module.named_parameters():
            result[f"grad_{name}"] = param.grad
    for name, buffer in module.named_buffers():
        result[name] = buffer.clone()
    return result


@pytest.mark.parametrize("sample", SAMPLES, ids=_sample_id)
def test_matches_torch_on_torchs_own_samples(sample):
    torch_cls, ours_cls = TWINS[sample["name"]]
    dtype = DTYPES[sample["dtype"]]
    args, kwargs = sample["args"], sample["kwargs"]
    reference = torch_cls(*args, **kwargs, dtype=dtype).train(sample["training"])
    ours = ours_cls(*args, **kwargs, dtype=dtype).train(sample["training"])
    _randomize(reference, seed=sample["index"])
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert repr(ours) == repr(reference)

    x = sample["input"]
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    for _ in range(2):  # twice: the running statistics are updated from updated ones
        expected = _run(reference, x, grad_y)
        actual = _run(ours, x, grad_y)
        assert actual.keys() == expected.keys()
        assert_close(actual, expected, **TOLERANCE[dtype])
