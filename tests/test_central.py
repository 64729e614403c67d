"""The central figure's points (dnbook.central): which stored runs count and how they pool."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dnbook import central

matplotlib.use("Agg")


def run(hash_, norm, lr, acc, *, model="mobilenet_v2", batch=64, amp=True, status="finished"):
    return {
        "hash": hash_,
        "model": model,
        "norm": norm,
        "lr": lr,
        "batch_size": batch,
        "amp": amp,
        "channels_last": True,
        "dataset": "cifar10",
        "status": status,
        "test_acc_at_best_val": np.nan if status == "diverged" else acc,
    }


@pytest.fixture
def stored(monkeypatch):
    """Two experiments' runs: a configuration shared by both, a batch-8 run, a float32 repeat,
    a norm the figure does not draw and a diverged seed."""
    by_experiment = {
        "lr_sweep": [
            run("a0", "bn", 0.2, 64.0),
            run("d0", "dnb:r=16,g=1", 0.5, 20.0),
            run("x0", "gn:groups=8", 0.2, 50.0),
        ],
        "table8": [
            run("a0", "bn", 0.2, 64.0),  # the same configuration: counted once
            run("a1", "bn", 0.2, 66.0),
            run("a2", "bn", 0.2, 65.0),
            run("b8", "bn", 0.2, 30.0, batch=8),
            run("f0", "bn", 0.2, 99.0, amp=False),
            run("d1", "dnb:r=16,g=1", 0.5, 0.0, status="diverged"),
        ],
    }

    def fake_runs(name, profile):
        rows = by_experiment.get(name, [])
        return (pd.DataFrame(rows) if rows else pd.DataFrame()), []

    monkeypatch.setattr(central, "experiment_runs", fake_runs)


def test_points_pool_each_configuration_once_at_batch_64_on_the_default_path(stored):
    points = central.central_points("cpu").set_index(["norm", "lr"])
    assert sorted(points.index) == [("BN", 0.2), ("DN-B(16,1)", 0.5)]
    bn = points.loc[("BN", 0.2)]
    assert bn["seeds"] == 3 and bn["mean"] == pytest.approx(65.0)
    low, high = stats.t.interval(0.95, 2, loc=65.0, scale=stats.sem([64.0, 66.0, 65.0]))
    assert (bn["low"], bn["high"]) == pytest.approx((low, high))


def test_a_diverged_seed_counts_at_chance(stored):
    dnb = central.central_points("cpu").set_index("norm").loc["DN-B(16,1)"]
    assert dnb["diverged"] == 1 and dnb["mean"] == pytest.approx((20.0 + 10.0) / 2)


@pytest.mark.parametrize("profile", ["ci", "cpu"])
def test_the_figure_draws_a_panel_per_model_and_the_paper_beside_ours(stored, profile):
    fig = central.plot_central(profile)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(" w")[0] for ax in panels] == list(central.MODELS.values())
    labels = panels[1].get_legend().get_texts()
    assert {t.get_text() for t in labels} >= {"BN (ours, 3-3 seeds)", "BN (paper, ImageNet-100)"}


def test_nothing_stored_gives_an_empty_table(monkeypatch):
    monkeypatch.setattr(central, "experiment_runs", lambda name, profile: (pd.DataFrame(), []))
    assert central.central_points("cpu").empty
