"""The claims ledger: every claim points at real registry variants and a chapter, and every
branch of every verdict rule is reached on small synthetic results, including "not run"."""

import json

import numpy as np
import pandas as pd
import pytest

from dnbook import claims
from dnbook.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_SEEDS,
    VERDICTS,
    ClassMeansAlike,
    CountOrder,
    MatchesPaperColumn,
    MultAddsIncrease,
    PairedGain,
    ResultsStore,
    TestBatchInvariance,
    TrainingOutcome,
)
from dnbook.complexity import PAPER_TABLE
from dnbook.experiments import EXPERIMENTS


def runs(values, profile="cpu", diverged=(), **columns):
    """A runs frame as :func:`dnbook.report.experiment_runs` gives it: ``values`` maps a variant
    to its ``test_acc_at_best_val`` per seed (seeds 0, 1, ...); ``diverged`` holds the
    (variant, seed) pairs whose run diverged; ``columns`` map a column to a value for every run,
    or to a {variant: [value per seed]} dict."""
    rows = []
    for variant, accuracies in values.items():
        for seed, acc in enumerate(accuracies):
            failed = (variant, seed) in diverged
            row = {
                "variant": variant,
                "seed": seed,
                "profile": profile,
                "status": "diverged" if failed else "finished",
                "test_acc_at_best_val": np.nan if failed else acc,
                "best_val_acc": np.nan if failed else acc,
                "train_loss": np.nan if failed else 1.5,
                "val_change": 1.0,
                "dataset": "cifar10",
                "n_train": 3000,
                "epochs": 3,
                "width_mult": 0.25,
                "hardware": "test CPU",
            }
            for column, value in columns.items():
                row[column] = value[variant][seed] if isinstance(value, dict) else value
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The registry of claims


def test_claims_are_unique_and_complete():
    ids = [claim.id for claim in CLAIMS]
    assert len(ids) == len(set(ids))
    for claim in CLAIMS:
        assert claim.paper and claim.ref and claim.rule.text
        assert claim.chapter.endswith(".ipynb") and claim.chapter[:2].isdigit()


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.experiments], ids=lambda c: c.id)
def test_claims_name_registered_variants(claim):
    """Every variant a rule reads is a label of the claim's first experiment (at every
    profile, since labels do not depend on the scale), and every experiment is registered."""
    assert set(claim.experiments) <= set(EXPERIMENTS)
    labels = {label for label, _ in EXPERIMENTS[claim.experiments[0]].variants}
    rule = claim.rule
    needed = getattr(rule, "variants", None) or (rule.variant,)
    assert set(needed) <= labels


# ---------------------------------------------------------------------------------------------
# PairedGain: every branch, at three thresholds


@pytest.mark.parametrize(
    ("gains", "threshold", "verdict"),
    [
        ((2.0, 3.0, 4.0), 0.0, HOLDS),
        ((-1.0, -0.5, -2.0), 0.0, FAILS),
        ((1.0, -0.5, 2.0), 0.0, INCONCLUSIVE),
        ((0.0, 0.0, 0.0), 0.0, FAILS),  # no seed shows a gain
        ((3.0, 2.5, 2.1), 2.0, HOLDS),
        ((1.0, 1.5, 2.0), 2.0, FAILS),  # no seed exceeds the claimed gain
        ((3.0, 3.0, 1.5), 2.0, INCONCLUSIVE),  # mean 2.5, but one seed falls short
        ((-0.5, 0.2, -0.9), -1.0, HOLDS),  # within the 1-point margin in every seed
        ((-2.0, -1.5, -1.0), -1.0, FAILS),
        ((-2.0, 0.5, 0.3), -1.0, INCONCLUSIVE),
    ],
)
def test_paired_gain_branches(gains, threshold, verdict):
    frame = runs({"A": [20 + g for g in gains], "B": [20.0] * len(gains)})
    found = PairedGain(("A",), ("B",), threshold=threshold).judge(frame)
    assert found.verdict == verdict
    assert found.profile == "cpu" and found.seeds == (0, 1, 2)
    assert f"d = {np.mean(gains):+.2f}" in found.measurement


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (runs({"A": [30.0, 31.0], "B": [20.0, 20.0]}), "2 seeds, fewer than 3"),
        (runs({"A": [30.0], "B": [20.0]}, profile="ci"), "ci profile"),
    ],
)
def test_paired_gain_needs_seeds_and_a_real_profile(frame, reason):
    found = PairedGain(("A",), ("B",)).judge(frame)
    assert found.verdict == INCONCLUSIVE and reason in found.reason


@pytest.mark.parametrize(("baseline", "verdict"), [(25.0, HOLDS), (11.0, INCONCLUSIVE)])
def test_paired_gain_needs_a_baseline_that_learned(baseline, verdict):
    """ "Stable at a higher lr" (within 1 point of the baseline) means nothing if the
    baseline itself sits at chance (10% here, margin CHANCE_MARGIN)."""
    frame = runs({"A": [baseline - 0.5] * 3, "B": [baseline] * 3})
    found = PairedGain(("A",), ("B",), threshold=-1.0, learned=("B",)).judge(frame)
    assert found.verdict == verdict
    if verdict == INCONCLUSIVE:
        assert "did not leave chance level" in found.reason


def test_paired_gain_pairs_only_common_seeds():
    frame = runs({"A": [30.0, 31.0, 32.0, 33.0], "B": [20.0, 20.0, 20.0]})
    found = PairedGain(("A",), ("B",)).judge(frame)
    assert found.verdict == HOLDS and found.seeds == (0, 1, 2)
    assert MIN_SEEDS == 3


def test_a_diverged_run_counts_at_chance():
    """A (seed 0) diverged: 10% (chance on CIFAR-10) against B's 20%, so that seed disagrees."""
    frame = runs({"A": [30.0, 30.0, 30.0], "B": [20.0, 20.0, 20.0]}, diverged={("A", 0)})
    rule = PairedGain(("A",), ("B",))
    assert rule.values(frame).loc[0, "A"] == pytest.approx(10.0)
    found = rule.judge(frame)
    assert found.verdict == INCONCLUSIVE and "1 diverged" in found.measurement
    # ... but a metric that is not an accuracy leaves the seed out
    changes = PairedGain(("A",), ("B",), metric="val_change").values(frame)
    assert list(changes.index) == [1, 2]


def test_a_curve_claim_needs_enough_epochs():
    frame = runs({"A": [2.0] * 3, "B": [1.0] * 3}, val_change={"A": [2.0] * 3, "B": [1.0] * 3})
    rule = PairedGain(("A",), ("B",), metric="val_change", min_epochs=5)
    found = rule.judge(frame)  # 3 epochs
    assert found.verdict == INCONCLUSIVE and "fewer than 5" in found.reason
    assert rule.judge(frame.assign(epochs=5)).verdict == HOLDS


def test_best_of_minus_and_difference_of_differences():
    frame = runs({"A": [25.0] * 3, "B": [20.0, 26.0, 20.0], "C": [24.0, 20.0, 24.0]})
    best = PairedGain(("A",), ("B", "C"), best_of_minus=True)
    assert best.judge(frame).verdict == INCONCLUSIVE  # seed 1: B beats A
    assert list(best.differences(best.values(frame))) == [
        1.0,
        -1.0,
        1.0,
    ]
    # (DN-B drops 1 point from lr 0.2 to 0.5, BN drops 8): DN-B loses less
    frame = runs(
        {
            "DN lr 0.5": [29.0] * 3,
            "DN lr 0.2": [30.0] * 3,
            "BN lr 0.5": [20.0] * 3,
            "BN lr 0.2": [28.0] * 3,
        }
    )
    drop = claims._drop_less("DN", "BN", "lr 0.5", "lr 0.2")
    found = drop.judge(frame)
    assert found.verdict == HOLDS and "d = +7.00" in found.measurement


# ---------------------------------------------------------------------------------------------
# TrainingOutcome


@pytest.mark.parametrize(
    ("best_val", "expect", "verdict"),
    [
        ([10.5, 11.0, 30.0], "fails", HOLDS),  # two of three at chance
        ([25.0, 30.0, 28.0], "fails", FAILS),
        ([11.0, 30.0, 28.0], "fails", INCONCLUSIVE),
        ([25.0, 30.0, 28.0], "trains", HOLDS),
        ([10.5, 11.0, 30.0], "trains", FAILS),
        ([11.0, 30.0, 28.0], "trains", INCONCLUSIVE),
    ],
)
def test_training_outcome_branches(best_val, expect, verdict):
    frame = runs({"X": best_val})
    assert TrainingOutcome("X", expect).judge(frame).verdict == verdict


def test_training_outcome_failure_criteria():
    """Diverged, a train loss not below ln 10, or a best val accuracy within 2 points of chance."""
    frame = runs(
        {"X": [30.0, 30.0, 11.9, 30.0]},
        diverged={("X", 0)},
        train_loss={"X": [np.nan, np.log(10), 1.0, 2.0]},
    )
    assert TrainingOutcome.failed(frame).tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="expect"):
        TrainingOutcome("X", "diverges")


def test_training_outcome_needs_seeds():
    found = TrainingOutcome("X").judge(runs({"X": [10.0, 10.0]}))
    assert found.verdict == INCONCLUSIVE and "fewer than 3" in found.reason


# ---------------------------------------------------------------------------------------------
# Exact counts


@pytest.mark.parametrize(
    ("params", "verdict"),
    [({"a": 3, "b": 2, "c": 1}, HOLDS), ({"a": 3, "b": 3, "c": 1}, FAILS)],
)
def test_count_order(params, verdict):
    found = CountOrder(("a", "b", "c")).judge(params)
    assert found.verdict == verdict and found.profile == "exact count"


@pytest.mark.parametrize(("dnb", "verdict"), [(1_006_000, HOLDS), (1_007_000 + 1, FAILS)])
def test_mult_adds_increase(dnb, verdict):
    assert MultAddsIncrease("dnb", limit_pct=0.7).judge({"dnb": dnb, "bn": 10**6}).verdict == (
        verdict
    )


def test_matches_paper_column():
    exact = {(r.model, r.norm): round(r.params_m * 1e6) for r in PAPER_TABLE}
    assert MatchesPaperColumn().judge(exact).verdict == HOLDS
    first = (PAPER_TABLE[0].model, PAPER_TABLE[0].norm)
    found = MatchesPaperColumn().judge({**exact, first: exact[first] + 20_000})
    assert found.verdict == FAILS and PAPER_TABLE[0].norm in found.measurement


def test_count_on_the_meta_device_matches_complexity():
    """MobileNetV2 with BN at 100 classes and 224 px: dnbook.complexity's documented counts."""
    assert claims.count("mobilenet_v2", "bn", "params") == 2_351_972
    assert claims.count("mobilenet_v2", "bn", "mult_adds") == 299_622_272


# ---------------------------------------------------------------------------------------------
# Measurements of trained models


def record(value, seed, profile="cpu"):
    config = {"dataset": "cifar10", "n_train": 3000, "epochs": 3, "width_mult": 0.25}
    return {"profile": profile, "config": {**config, "seed": seed}, "value": value}


CH8_ACCURACY = (("1", 50.0), ("2", 50.1), ("32", 50.0))


@pytest.mark.parametrize(
    "value",
    [
        {"1": 50.0, "2": 50.1, "32": 50.0},
        # chapter 8's: eval mode (the paper's setting) and train mode (the contrast)
        {
            "eval_images": 500,
            "eval": {b: {"accuracy": a, "changed_predictions": 0} for b, a in CH8_ACCURACY},
            "train": {b: {"accuracy": 10.0, "changed_predictions": 40} for b, _ in CH8_ACCURACY},
        },
        {"accuracy": {"1": 50.0, "2": 50.1, "32": 50.0}, "note": "eval mode"},
        {"batch_sizes": [1, 2, 32], "test_acc": [50.0, 50.1, 50.0]},
        [{"batch_size": b, "acc": a} for b, a in ((1, 50.0), (2, 50.1), (32, 50.0))],
    ],
)
def test_test_batch_formats(value):
    assert claims._accuracy_by_batch(value) == {1: 50.0, 2: 50.1, 32: 50.0}


@pytest.mark.parametrize(
    ("spreads", "profile", "verdict"),
    [
        ((0.0, 0.1, 0.2), "cpu", HOLDS),
        ((0.0, 0.1, 0.9), "cpu", FAILS),
        ((0.0, 0.1), "cpu", INCONCLUSIVE),
        ((0.0,), "ci", INCONCLUSIVE),
    ],
)
def test_test_batch_invariance(spreads, profile, verdict):
    records = [
        record({"1": 40.0 + s, "2": 40.0, "32": 40.0}, seed, profile)
        for seed, s in enumerate(spreads)
    ]
    assert TestBatchInvariance("X").judge(records).verdict == verdict


def test_unreadable_test_batch_value_is_inconclusive():
    found = TestBatchInvariance("X").judge([record({"what": "?"}, s) for s in range(3)])
    assert found.verdict == INCONCLUSIVE and "not understood" in found.reason


def affine_value(shift, seed, classes=4, channels=6, per_class=30):
    """An ``affine_by_class`` value: alpha and lambda of 2 layers, class k's mean moved by
    ``shift * k`` in every channel, within-class std 1."""
    rng = np.random.default_rng(seed)
    samples = [rng.normal(shift * k, 1.0, (per_class, channels)) for k in range(classes)]
    entry = {
        "class_mean": [s.mean(axis=0).tolist() for s in samples],
        "class_std": [s.std(axis=0, ddof=1).tolist() for s in samples],
    }
    layer = {"alpha": entry, "lambda": entry}
    return (
        {"images_per_class": [per_class] * classes, "layers": {"DN-start": layer, "DN-end": layer}},
        samples,
    )


def test_median_cohen_f_is_the_one_way_anova_effect_size():
    """From the stored means and stds, against the F ratio computed from the raw samples."""
    value, samples = affine_value(0.3, seed=0)
    pooled = np.concatenate(samples)
    n, k = len(pooled), len(samples)
    between = sum(len(s) * (s.mean(0) - pooled.mean(0)) ** 2 for s in samples) / (k - 1)
    within = sum(((s - s.mean(0)) ** 2).sum(0) for s in samples) / (n - k)
    f = np.sqrt(np.clip(between / within - 1, 0, None) * (k - 1) / n)  # n0 = n / k, balanced
    assert claims._median_cohen_f(value, "DN-start", "alpha") == pytest.approx(np.median(f))


@pytest.mark.parametrize(
    ("shifts", "verdict"),
    [
        ((0.0, 0.0, 0.0), HOLDS),  # the class means differ only by sampling noise
        ((1.0, 1.0, 1.0), FAILS),  # a class-mean spread as large as the within-class spread
        ((0.0, 1.0, 0.0), INCONCLUSIVE),
    ],
)
def test_class_means_alike(shifts, verdict):
    # 5,000 images per class: sampling noise alone gives f of about 0.01
    records = [
        record(affine_value(s, seed=100 + i, per_class=5000)[0], i) for i, s in enumerate(shifts)
    ]
    assert ClassMeansAlike("X").judge(records).verdict == verdict


def test_unreadable_affine_value_is_inconclusive():
    found = ClassMeansAlike("X").judge([record({"layers": {"a": {}}}, s) for s in range(3)])
    assert found.verdict == INCONCLUSIVE and "not understood" in found.reason


# ---------------------------------------------------------------------------------------------
# Reading the store


def _store_run(root, profile, config, acc, hardware="test CPU"):
    final = {"train_loss": 1.5, "train_acc": acc, "best_val_acc": acc}
    final |= {"test_acc_at_best_val": acc, "val_acc": acc, "test_acc_last": acc, "best_epoch": 3}
    curves = [{"epoch": e, "val_acc": acc - 3 + e} for e in (1, 2, 3)]
    result = {
        "hash": config.hash(),
        "config": config.to_dict(),
        "status": "finished",
        "curves": curves,
        "final": final,
        "wall_time_s": 1.0,
        "hardware": {"cpu": hardware, "gpu": None},
    }
    path = root / profile / f"{config.hash()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def _configs(name, profile, variant):
    labels = EXPERIMENTS[name].labels(profile)
    return [c for c in EXPERIMENTS[name].builder(profile) if labels[c.hash()] == variant]


def test_nothing_stored_is_not_run(tmp_path):
    store = ResultsStore(tmp_path)
    for claim in CLAIMS:
        if claim.experiments:
            found = claim.evaluate(store)
            assert found.verdict == INCONCLUSIVE
            assert found.reason.startswith(("not run", "not measured yet"))


def test_evaluate_reads_the_largest_profile_with_every_variant(tmp_path):
    """DN-B(16,1) beats BN by 2 points in every seed at cpu (3 seeds); ci has the reverse.
    A cpu grid with BN missing falls back to ci."""
    claim = next(c for c in CLAIMS if c.id == "dnb_g1_beats_bn")
    for profile in ("cpu", "ci"):
        for config in _configs("table2", profile, "DN-B(16,1)"):
            _store_run(tmp_path, profile, config, 22.0 + config.seed if profile == "cpu" else 9.0)
    for config in _configs("table2", "ci", "BN"):
        _store_run(tmp_path, "ci", config, 11.0)
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (INCONCLUSIVE, "ci")
    for config in _configs("table2", "cpu", "BN"):
        _store_run(tmp_path, "cpu", config, 20.0 + config.seed)
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile, found.seeds) == (HOLDS, "cpu", (0, 1, 2))
    assert found.hardware == "test CPU" and found.dataset.startswith("cifar10 (all train")
    # val accuracy rises by 1 point every epoch in these curves
    assert ResultsStore(tmp_path).runs("table2", "cpu")["val_change"].eq(1.0).all()


def test_evaluate_reads_stored_measurements(tmp_path):
    claim = next(c for c in CLAIMS if c.id == "test_batch")
    for config in _configs("table4", "cpu", "DN-B(16,1) b64"):
        path = tmp_path / "cpu" / "analysis" / f"test_batch-{config.hash()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = {"profile": "cpu", "config": config.to_dict(), "hardware": {"cpu": "test CPU"}}
        path.write_text(json.dumps({**stored, "value": {"1": 30.0, "2": 30.0, "32": 30.0}}))
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile, found.seeds) == (HOLDS, "cpu", (0, 1, 2))


def test_ledger_has_one_row_per_claim(tmp_path):
    chosen = [c for c in CLAIMS if c.experiments][:3]
    table = claims.ledger(chosen, results_root=tmp_path)
    assert list(table["id"]) == [c.id for c in chosen]
    assert set(table["verdict"]) <= set(VERDICTS)
