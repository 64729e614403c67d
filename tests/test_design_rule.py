"""The pre-written rule that picks DN-B's default (dnbook.claims.design), on synthetic runs:
every branch (not tested, incomplete, kept by default, a narrow and a clear change), ties to
the incumbent, the book's own variants never chosen, divergence counted at chance."""

import math

import numpy as np
import pandas as pd
import pytest

from dnbook.claims.design import BOOK_OWN, choose_default, confirm_on_second_model, split_label
from dnbook.claims.verdicts import TEST
from dnbook.experiments import (
    DESIGN_V2_INCUMBENT,
    DESIGN_V2_LRS,
    EXPERIMENTS,
    TRANSFER_CHALLENGER,
    TRANSFER_INCUMBENT,
)

SEEDS = (0, 1, 2)
LRS = (0.2, 0.5)


def runs(accuracies: dict[str, list[float] | float], seeds=SEEDS, lrs=LRS, diverged=()):
    """One row per (variant, lr, seed); a float means that accuracy for every run, a list
    gives one per seed (the same at each lr) so that paired differences have a spread."""
    rows = []
    for name, acc in accuracies.items():
        for lr in lrs:
            for i, seed in enumerate(seeds):
                value = acc[i] if isinstance(acc, list) else acc
                failed = (name, lr) in diverged
                rows.append(
                    {
                        "variant": f"{name} lr {lr:g}",
                        "seed": seed,
                        TEST: math.nan if failed else value,
                        "status": "diverged" if failed else "ok",
                        "train_loss": math.nan if failed else (0.6 if value > 40 else 2.3),
                    }
                )
    return pd.DataFrame(rows)


BASE = {"BN": [74.0, 73.0, 75.0], "DN-B default": [73.0, 72.5, 74.0]}


def test_labels_split_into_variant_and_lr():
    assert split_label("DN-B unbounded + SC wd lr 0.5") == ("DN-B unbounded + SC wd", 0.5)


def test_a_control_that_did_not_learn_decides_nothing():
    frame = runs({"BN": 25.0, "DN-B default": 24.0, "DN-B r=4": [40.0, 41.0, 42.0]})
    choice = choose_default(frame, "DN-B default")
    assert choice.default is None and choice.confidence == "not tested"
    assert "BN did not learn" in choice.reason


def test_fewer_than_three_seeds_is_incomplete():
    frame = runs({**BASE, "DN-B r=4": [74.0, 75.0, 73.0]})
    frame = frame.iloc[:-1]  # one run of the last variant (lr 0.5, seed 2) missing
    choice = choose_default(frame, "DN-B default")
    assert choice.default is None and choice.reason.startswith("incomplete")


@pytest.mark.parametrize("delta", [0.0, 0.3, -2.0])
def test_the_incumbent_wins_ties_and_losses(delta):
    noisy = [a + delta + s for a, s in zip(BASE["DN-B default"], (1.0, -1.2, 0.4), strict=True)]
    choice = choose_default(runs({**BASE, "DN-B r=4": noisy}), "DN-B default")
    assert choice.default == "DN-B default"
    assert choice.confidence.startswith("kept by default")


@pytest.mark.parametrize(("delta", "confidence"), [(0.6, "narrow"), (3.0, "clear")])
def test_a_change_needs_its_interval_above_zero(delta, confidence):
    better = [a + delta + s for a, s in zip(BASE["DN-B default"], (0.05, -0.05, 0.0), strict=True)]
    choice = choose_default(runs({**BASE, "DN-B raw input": better}), "DN-B default")
    assert choice.default == "DN-B raw input"
    assert choice.confidence == confidence


def test_the_largest_qualifying_gain_wins():
    small = [a + 1.0 + s for a, s in zip(BASE["DN-B default"], (0.05, -0.05, 0.0), strict=True)]
    large = [a + 2.0 + s for a, s in zip(BASE["DN-B default"], (0.05, -0.05, 0.0), strict=True)]
    choice = choose_default(
        runs({**BASE, "DN-B fc1 bias": small, "DN-B r=4": large}), "DN-B default"
    )
    assert choice.default == "DN-B r=4"


def test_the_books_own_variant_is_never_chosen():
    name = f"DN-B base affine ({BOOK_OWN})"
    better = [a + 5.0 for a in np.add(BASE["DN-B default"], (0.1, -0.1, 0.0))]
    choice = choose_default(runs({**BASE, name: list(better)}), "DN-B default")
    assert choice.default == "DN-B default"
    assert name in set(choice.table["variant"])


def test_a_divergence_counts_at_chance():
    # better than the incumbent at lr*, diverged at 2.5 lr*: the pooled difference is negative
    better = [a + 3.0 for a in BASE["DN-B default"]]
    frame = runs({**BASE, "DN-B unbounded": better}, diverged=[("DN-B unbounded", 0.5)])
    choice = choose_default(frame, "DN-B default")
    assert choice.default == "DN-B default"
    row = choice.table.set_index("variant").loc["DN-B unbounded"]
    assert row["lr 0.5"] == pytest.approx(10.0)
    assert row["paired diff"].mean < 0


def test_the_registry_matches_the_rule():
    """The design study has the incumbent, the BN control and every variant at both lrs."""
    labels = [label for label, _ in EXPERIMENTS["dnb_design_v2"].variants]
    names = {split_label(label)[0] for label in labels}
    assert {"BN", DESIGN_V2_INCUMBENT} <= names
    assert {split_label(label)[1] for label in labels} == set(DESIGN_V2_LRS)
    assert len(labels) == len(names) * len(DESIGN_V2_LRS)


@pytest.mark.parametrize("missing", ["DN-B raw input", "DN-B base affine (book's own)"])
def test_a_registered_variant_with_no_runs_is_incomplete(missing):
    # the stored variants alone would decide (r=4 clearly better); one registered variant has
    # no run at all, so the study is not complete and nothing is decided
    frame = runs({**BASE, "DN-B r=4": [76.0, 75.5, 77.0]})
    expected = [f"{name} lr {lr:g}" for name in (*BASE, "DN-B r=4", missing) for lr in LRS]
    assert choose_default(frame, "DN-B default").default == "DN-B r=4"
    choice = choose_default(frame, "DN-B default", expected=expected)
    assert choice.default is None and choice.reason.startswith("incomplete")
    assert f"{missing} at lr 0.2" in choice.reason and f"{missing} at lr 0.5" in choice.reason


TRANSFER = {"BN": [66.0, 65.0, 65.5], "DN-B raw": [60.0, 61.0, 59.0]}


def test_the_chosen_layer_is_confirmed_where_the_old_one_does_not_beat_it():
    second = runs({**TRANSFER, "DN-B old": [60.5, 60.0, 59.5]})
    check = confirm_on_second_model(second, second.iloc[:0], "DN-B raw", "DN-B old")
    assert check.verdict == "confirmed" and check.pooled is None
    assert check.default == "DN-B raw"


@pytest.mark.parametrize(("first_gain", "expected"), [(0.5, "DN-B old"), (-6.0, "DN-B raw")])
def test_where_the_old_layer_wins_on_the_second_network_both_networks_decide(first_gain, expected):
    # the old layer is 4 points better on the second network; on the first it is better by
    # first_gain: pooled, a small loss there keeps it qualified, a large one does not
    second = runs({**TRANSFER, "DN-B old": [64.0, 65.5, 62.0]})
    first = runs(
        {
            "BN": [74.0, 73.0, 75.0],
            "DN-B raw": [73.0, 72.0, 74.5],
            "DN-B old": [73.0 + first_gain, 72.2 + first_gain, 74.1 + first_gain],
            "DN-B r=4": 90.0,  # another variant of the first study: never read here
        }
    )
    check = confirm_on_second_model(second, first, "DN-B raw", "DN-B old")
    assert check.verdict == "did not transfer" and check.second.default == "DN-B old"
    assert check.pooled is not None and check.pooled.table["pairs"].max() == 12
    assert check.default == expected


def test_the_second_network_incomplete_decides_nothing():
    second = runs({**TRANSFER, "DN-B old": [70.0, 71.0, 72.0]}).iloc[:-1]
    check = confirm_on_second_model(second, second, "DN-B raw", "DN-B old")
    assert check.verdict == "not tested" and check.default is None


def test_the_second_network_is_registered_with_the_study_labels():
    labels = [label for label, _ in EXPERIMENTS["dnb_design_v2_mobilenet"].variants]
    names = {split_label(label)[0] for label in labels}
    assert names == {"BN", TRANSFER_INCUMBENT, TRANSFER_CHALLENGER}
    assert {split_label(label)[1] for label in labels} == set(DESIGN_V2_LRS)
    # the challenger is the layer the study replaced; the incumbent trains Table 8's runs
    assert TRANSFER_CHALLENGER == DESIGN_V2_INCUMBENT
    specs = dict(EXPERIMENTS["dnb_design_v2_mobilenet"].variants)
    study = dict(EXPERIMENTS["dnb_design_v2"].variants)
    table8 = dict(EXPERIMENTS["table8"].variants)
    for lr in DESIGN_V2_LRS:
        old = specs[f"{TRANSFER_CHALLENGER} lr {lr}"]
        assert old["norm"] == study[f"{DESIGN_V2_INCUMBENT} lr {lr}"]["norm"]
        assert specs[f"{TRANSFER_INCUMBENT} lr {lr}"] == table8[f"DN-B(16,1) lr {lr}"]
        assert specs[f"BN lr {lr}"] == table8[f"BN lr {lr}"]
