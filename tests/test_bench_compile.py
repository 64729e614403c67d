"""The benchmark's torch.compile variant: the spec suffixes, the whole-run arithmetic, the
timing of first calls and warm-up rounds, and a quick run with the compiler stubbed out (a real
compile of MobileNetV2 takes minutes on a CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dnbook import bench
from dnbook.bench import compiled
from dnbook.bench.timing import Timer, first_calls, interleaved


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bn", ("bn", None)),
        ("bn@compile", ("bn", "@compile")),
        ("dnb:r=16,g=1@compile-nodn", ("dnb:r=16,g=1", "@compile-nodn")),
        ("dnb:r=16,g=1@reference@compile", ("dnb:r=16,g=1@reference", "@compile")),
    ],
)
def test_split_compile(spec, expected):
    assert compiled.split_compile(spec) == expected


def test_compile_model_rejects_an_unknown_suffix():
    with pytest.raises(ValueError, match="unknown compile suffix"):
        compiled.compile_model(nn.Linear(2, 2), "@compile-fast")


def _row(first, median, eval_first, eval_median):
    clock = "cpu_ms"
    return {
        f"first_{clock}": first,
        f"median_{clock}": median,
        f"eval_first_{clock}": eval_first,
        f"eval_median_{clock}": eval_median,
    }


def test_whole_run_and_break_even():
    eager = _row([12.0, 10.0], 10.0, [50.0], 50.0)
    # 1,000 ms of compiling in the first call, 200 ms more in the first evaluation; 2 ms saved
    # a step
    fast = _row([1_008.0, 8.0], 8.0, [240.0], 40.0)
    assert compiled.whole_run(eager, "cpu_ms", steps=100, eval_batches=3) == pytest.approx(
        12 + 10 + 98 * 10 + 50 * 3
    )
    assert compiled.whole_run(fast, "cpu_ms", steps=100, eval_batches=3) == pytest.approx(
        1_008 + 8 + 98 * 8 + 240 + 2 * 40
    )
    # one-time costs: compiled 1,000 + 200, eager 2 + 0
    assert compiled.break_even(fast, eager, "cpu_ms") == pytest.approx((1_200 - 2) / 2)
    assert compiled.break_even(eager, fast, "cpu_ms") is None  # no faster: never pays

    rows = {"bn": eager, "bn@compile": fast}
    compiled.summarize_run(rows, "bn")
    assert rows["bn"]["whole_run_ratio_cpu_ms"] == 1
    assert rows["bn@compile"]["break_even_cpu_ms"] == pytest.approx(599)
    assert "break_even_cpu_ms" not in rows["bn"]


def test_first_calls_record_an_error_in_one_line_and_go_on():
    def fails():
        raise RuntimeError("no kernel\nsecond line")

    times, errors = first_calls({"ok": lambda: None, "bad": fails}, Timer(torch.device("cpu")))
    assert list(times) == ["ok"] and times["ok"][0] >= 0
    assert errors == {"bad": "RuntimeError: no kernel"}


def test_interleaved_keeps_the_warmup_times():
    times = interleaved({"a": lambda: None, "b": lambda: None}, 2, 3, Timer(torch.device("cpu")))
    for clocks in times.values():
        assert len(clocks["warmup_wall_ms"]) == len(clocks["warmup_cpu_ms"]) == 2
        assert len(clocks["wall_ms"]) == len(clocks["cpu_ms"]) == 3


def test_dynamo_counts_add_up_per_spec_and_phase():
    counts = compiled.DynamoCounts()
    step = counts.wrap("bn@compile", "train", lambda: None)
    step()
    assert counts.counts == {"bn@compile": {"train": {"frames": 0, "graphs": 0, "graph_breaks": 0}}}


class _Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise RuntimeError("cannot compile this")


def test_quick_run_with_the_compiler_stubbed(tmp_path, monkeypatch):
    """``@compile`` rows get first calls, evaluation, a whole-run estimate and a break-even;
    a spec whose first call raises is reported as failed, and the others go on."""

    def stub(model, suffix):
        return _Fails() if "dnb" in stub.spec_of[id(model)] else model

    built = bench.build_network

    def build(spec, width, device, model_name):
        model = built(spec, width, device, model_name)
        stub.spec_of[id(model)] = spec
        return model

    stub.spec_of = {}
    monkeypatch.setattr(bench, "build_network", build)
    monkeypatch.setattr(bench, "compile_model", stub)
    specs = ["bn", "bn@compile", "dnb:r=4@compile"]
    argv = ["--quick", "--threads", "1", "--eval-batch", "4", "--out", str(tmp_path)]
    assert bench.main([*argv, "--name", "compile", "--specs", *specs]) == 0
    result = json.loads((tmp_path / "compile.json").read_text())
    assert result["settings"]["compile"]["compile_threads"] == 1
    assert result["settings"]["run_steps"] == compiled.RUN_STEPS
    rows = result["models"][0]["norms"]
    assert rows["dnb:r=4@compile"] == {"error": "RuntimeError: cannot compile this"}
    for spec in ("bn", "bn@compile"):
        row = rows[spec]
        assert len(row["first_cpu_ms"]) == 1 + bench.QUICK["warmup"]
        assert len(row["eval_cpu_ms"]) == 2 and len(row["eval_first_cpu_ms"]) == 1
        assert row["whole_run_cpu_ms"] > 0 and len(row["after_eval_cpu_ms"]) == 1
    assert "break_even_cpu_ms" in rows["bn@compile"]
    assert rows["bn@compile"]["dynamo"]["train"]["graphs"] == 0  # nothing was compiled
    assert [spec for entry in result["layers"] for spec in entry["norms"]] == ["bn"]
    text = (tmp_path / "compile.md").read_text()
    assert "`dnb:r=4@compile` (batch 4) failed: RuntimeError: cannot compile this" in text
    assert "| `bn@compile` |" in text


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bn", ("bn", False)),
        ("bn@autocast=bf16", ("bn", True)),
        ("bn@autocast=off", ("bn", False)),
        (
            "dnb:r=16,g=1,input=raw@path=main@autocast=bf16",
            ("dnb:r=16,g=1,input=raw@path=main", True),
        ),
        ("dnb:r=16,g=1@reference@compile@autocast=off", ("dnb:r=16,g=1@reference@compile", False)),
    ],
)
def test_split_autocast(spec, expected):
    assert bench.split_autocast(spec) == expected
    assert bench.split_autocast(spec, default=True)[1] == (expected[1] or "@autocast=" not in spec)


@pytest.mark.parametrize("spec", ["bn@autocast=fp16", "@autocast=bf16"])
def test_split_autocast_rejects_a_bad_suffix(spec):
    with pytest.raises(ValueError, match="bad precision suffix"):
        bench.split_autocast(spec)


def test_break_even_pairs_a_compiled_spec_with_its_eager_form_in_the_same_precision():
    eager = _row([12.0, 10.0], 10.0, [50.0], 50.0)
    fast = _row([1_008.0, 8.0], 8.0, [240.0], 40.0)
    other = _row([12.0, 20.0], 20.0, [50.0], 50.0)  # the other precision: not the pair
    rows = {"bn@autocast=bf16": eager, "bn": other, "bn@compile@autocast=bf16": fast}
    compiled.summarize_run(rows, "bn")
    assert fast["break_even_cpu_ms"] == pytest.approx((1_200 - 2) / 2)


def test_quick_run_with_per_spec_precision_resnet_and_layer_evaluation(tmp_path):
    """Each spec runs in its own precision (a bf16 autocast output is seen in the model's
    logits' dtype), ResNet-18 is built on request, the layer rows time evaluation forwards."""
    specs = ["bn@autocast=off", "bn@autocast=bf16", "dnb:r=4,input=raw@autocast=bf16"]
    argv = ["--quick", "--threads", "1", "--eval-batch", "4", "--out", str(tmp_path)]
    argv += ["--model", "resnet18", "--layer-eval", "--memory-format", "channels_last"]
    assert bench.main([*argv, "--name", "precision", "--specs", *specs]) == 0
    result = json.loads((tmp_path / "precision.json").read_text())
    assert result["settings"]["model"] == "resnet18" and result["settings"]["layer_eval"]
    rows = result["models"][0]["norms"]
    assert list(rows) == specs and all(row["whole_run_cpu_ms"] > 0 for row in rows.values())
    assert list(result["layers"][0]["norms"]) == specs
    assert all("traffic" not in row for row in result["layers"][0]["norms"].values())
    text = (tmp_path / "precision.md").read_text()
    assert "ResNet-18 (CIFAR stem" in text and "evaluation forward" in text


def test_evaluation_step_of_a_layer_runs_in_the_specs_precision():
    seen = []
    layer = nn.BatchNorm2d(4)
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = torch.randn(2, 4, 3, 3).bfloat16()
    bench.timing.layer_eval_step(layer, x, autocast=True)()
    assert seen == [torch.bfloat16] and not layer.training
