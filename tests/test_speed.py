"""Time to accuracy from stored runs, the paths' comparison, the step breakdown, and the
step-level training curve every result stores."""

from __future__ import annotations

import json
import math
import re

import pytest

from dnbook import speed
from dnbook.engine import TrainConfig
from dnbook.engine.trainer import step_curve
from dnbook.experiments import EXPERIMENTS


def stored(config: TrainConfig, times, accs, profile="cpu") -> dict:
    curves = [
        {"epoch": e + 1, "time_s": t, "test_acc": a}
        for e, (t, a) in enumerate(zip(times, accs, strict=True))
    ]
    return {
        "hash": config.hash(),
        "profile": profile,
        "config": config.to_dict(),
        "status": "finished",
        "curves": curves,
        "final": {"test_acc_at_best_val": accs[-1]},
        "wall_time_s": sum(times),
        "precision": {"autocast": None, "memory_format": "contiguous"},
        "hardware": {"cpu": "test CPU"},
    }


@pytest.mark.parametrize(
    ("accs", "target", "expected"),
    [
        ((40.0, 65.0, 71.0), 70.0, (True, 3, 60.0)),
        ((40.0, 70.0, 71.0), 70.0, (True, 2, 30.0)),  # reaching the target exactly counts
        ((72.0, 65.0, 71.0), 70.0, (True, 1, 10.0)),
        ((40.0, 65.0, 69.9), 70.0, (False, None, None)),
    ],
)
def test_time_to_accuracy_counts_whole_epochs_until_the_first_hit(accs, target, expected):
    config = TrainConfig()
    row = speed.time_to_accuracy(stored(config, (10.0, 20.0, 30.0), accs), target)
    assert (row["reached"], row["epoch"], row["seconds"]) == expected


def test_compare_paths_pairs_seeds_and_takes_the_geometric_mean(tmp_path):
    experiment = EXPERIMENTS["cpu_pilot"]
    labels = experiment.labels("cpu")
    # new path: 100 s per epoch; fp32 channels_last 150 s; old path (the baseline) 200 s, or
    # 400 s for seed 2, so the speed-ups are 2, 2, 4
    seconds = {
        "bf16 channels_last": 100.0,
        "fp32 channels_last": 150.0,
        "fp32 contiguous": 200.0,
        "MobileNetV2 bf16 channels_last": 300.0,
        "MobileNetV2 fp32 contiguous": 600.0,
    }
    (tmp_path / "cpu").mkdir()
    for config in experiment.builder("cpu"):
        per_epoch = seconds[labels[config.hash()]]
        if labels[config.hash()] == "fp32 contiguous" and config.seed == 2:
            per_epoch *= 2
        result = stored(config, (per_epoch,) * 3, (50.0, 69.0, 71.0))
        (tmp_path / "cpu" / f"{config.hash()}.json").write_text(json.dumps(result))
    found = speed.compare_paths(
        "cpu_pilot", {"resnet18": 70.0, "mobilenet_v2": 60.0}, "cpu", tmp_path
    )
    assert found["summary"]["bf16 channels_last"]["baseline"] == "fp32 contiguous"
    # each model against its own earlier path; MobileNetV2 reaches 60% at epoch 2
    mobile = found["summary"]["MobileNetV2 bf16 channels_last"]
    assert mobile["baseline"] == "MobileNetV2 fp32 contiguous"
    assert mobile["speedup_vs_baseline"]["ratios"] == [2.0]
    assert found["runs"]["MobileNetV2 bf16 channels_last"][0]["epoch"] == 2
    fast = found["summary"]["bf16 channels_last"]["speedup_vs_baseline"]
    assert fast["n"] == 3 and sorted(fast["ratios"]) == pytest.approx([2.0, 2.0, 4.0])
    assert fast["geometric_mean"] == pytest.approx(16 ** (1 / 3))
    low, high = fast["ci95"]
    assert low < fast["geometric_mean"] < high
    assert found["summary"]["fp32 contiguous"]["speedup_vs_baseline"]["geometric_mean"] == 1.0
    shown = speed.markdown(
        found
        | {"command": "test", "hardware": {"cpu": "x", "cpu_cores": 2}, "versions": {"torch": "t"}}
    )
    assert "| bf16 channels_last |" in re.sub(r" +", " ", shown)


def test_step_breakdown_sorts_a_real_steps_time_into_categories():
    from tests.test_engine import synthetic_config

    found = speed.step_breakdown(synthetic_config(), steps=2, warmup=1)
    assert set(found["ms_per_step"]) == {
        "data",
        "convolution",
        "norm",
        "other forward/backward",
        "optimizer",
    }
    assert found["ms_per_step"]["convolution"] > 0 and found["ms_per_step"]["norm"] > 0
    assert sum(found["fraction"].values()) == pytest.approx(1.0)
    assert found["train_images_per_s"] > 0 and found["eval_images_per_s"] > 0


def test_step_curve_averages_windows_and_counts_nonfinite_steps():
    losses = [2.0, 4.0, 1.0, math.nan, 3.0]
    lrs = [0.1, 0.2, 0.3, 0.4, 0.5]
    curve = step_curve(losses, lrs, every=2)
    assert curve["step"] == [2, 4, 5]
    assert curve["loss"] == [3.0, 1.0, 3.0]  # the NaN is left out of its window's mean
    assert curve["lr"] == [0.2, 0.4, 0.5]
    assert curve["nonfinite_steps"] == 1 and curve["nonfinite_fraction"] == pytest.approx(0.2)
    assert step_curve([math.nan], [0.1], every=2)["loss"] == [None]
