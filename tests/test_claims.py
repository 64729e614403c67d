"""The verdict engine: the paired interval against scipy's t distribution, every branch of
every rule (the four verdicts) on small synthetic results, the ledger read from a store, the
``claims`` command line, and the chapters: every verdict a chapter prints is the ledger's."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dnbook import claims
from dnbook.__main__ import main
from dnbook.claims import (
    CHANCE_MARGIN,
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_TESTED,
    VERDICTS,
    ClassMeansAlike,
    CountOrder,
    MatchesPaperColumn,
    MultAddsIncrease,
    NaNOutcome,
    PairedGain,
    ResultsStore,
    TestBatchInvariance,
    TrainingOutcome,
)
from dnbook.claims.ledger import _drop_less
from dnbook.claims.rules import CI_SMOKE
from dnbook.complexity import PAPER_TABLE
from dnbook.engine import store as engine_store
from dnbook.engine.profiles import get_profile
from dnbook.experiments import EXPERIMENTS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted({c.chapter for c in CLAIMS if c.chapter[:2] in {"06", "07", "08", "09", "10"}})
CHAPTERS.append("11_claims.ipynb")


def runs(values, profile="cpu", diverged=(), **columns):
    """A runs frame as :meth:`ResultsStore.runs` gives it: ``values`` maps a variant to its
    ``test_acc_at_best_val`` per seed (seeds 0, 1, ...); ``diverged`` holds the (variant,
    seed) pairs whose run diverged; ``columns`` map a column to a value for every run, or to a
    {variant: [value per seed]} dict. Train loss 1.0: below 0.8 ln 10, so a baseline at 40%
    or more has learned."""
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
                "train_loss": np.nan if failed else 1.0,
                "val_change": 1.0,
                "steps": 1406,
                "dataset": "cifar10",
                "n_train": None,
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
        assert (NOTEBOOKS / claim.chapter).exists()


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.experiments], ids=lambda c: c.id)
def test_claims_name_registered_variants(claim):
    """Every variant a rule reads (compared, baseline, may-fail) is a label of the claim's
    first experiment, and every experiment is registered."""
    assert set(claim.experiments) <= set(EXPERIMENTS)
    labels = {label for label, _ in EXPERIMENTS[claim.experiments[0]].variants}
    rule = claim.rule
    needed = set(getattr(rule, "variants", None) or (rule.variant,))
    needed |= set(getattr(rule, "baselines", ()))
    needed |= set(getattr(rule, "may_fail", ()))
    if isinstance(rule, TrainingOutcome | NaNOutcome):
        needed.add(rule.baseline)
    assert needed <= labels


# ---------------------------------------------------------------------------------------------
# Statistics


@pytest.mark.parametrize(
    "values", [(1.0, 2.0, 4.0), (-0.3, 0.1, 0.2, 0.9, 1.4), (5.0, 5.5), (10.0, -2.0, 3.0)]
)
def test_paired_interval_is_the_t_interval(values):
    """Against the textbook t interval, mean +- t(0.975, n - 1) s / sqrt(n), from stats.t."""
    found = claims.paired_interval(values)
    n, mean, sem = len(values), np.mean(values), stats.sem(values)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert (found.mean, found.n) == (pytest.approx(mean), n)
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))


def test_paired_interval_edge_cases():
    assert claims.paired_interval([2.0, 2.0, 2.0]).low == 2.0  # no spread: the point itself
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        claims.paired_interval([1.0])


@pytest.mark.parametrize(
    ("low", "high", "higher", "verdict"),
    [
        (0.5, 2.0, True, HOLDS),
        (-2.0, 0.0, True, FAILS),  # touching the claimed effect excludes "more than 0"
        (-1.0, 1.0, True, INCONCLUSIVE),
        (-2.0, -0.5, False, HOLDS),
        (0.0, 1.0, False, FAILS),
        (-1.0, 1.0, False, INCONCLUSIVE),
    ],
)
def test_side_of(low, high, higher, verdict):
    interval = claims.Interval((low + high) / 2, low, high, 3)
    assert claims.side_of(interval, 0.0, higher=higher) == verdict


@pytest.mark.parametrize(
    ("acc", "loss", "learned"),
    [(40.0, 1.0, True), (39.9, 1.0, False), (60.0, 0.8 * math.log(10), False), (60.0, 1.8, True)],
)
def test_learned_thresholds(acc, loss, learned):
    """40% on CIFAR-10 (a third of the way from 10% to 100%) and a loss below 0.8 ln 10."""
    frame = runs({"X": [acc] * 3}, train_loss=loss)
    assert claims.learned(frame, "cifar10")[0] is learned
    assert claims.learned_threshold("cifar10") == pytest.approx(40.0)
    assert claims.learned_threshold("cifar100") == pytest.approx(34.0)


def test_a_diverged_run_is_not_at_chance_but_never_learned():
    frame = runs({"X": [60.0, 10.5, 10.5]}, diverged={("X", 0)})
    assert not claims.at_chance(frame, "cifar10")
    assert not claims.learned(frame, "cifar10")[0]
    assert claims.at_chance(runs({"X": [10.5, 11.0, 12.0]}), "cifar10")


# ---------------------------------------------------------------------------------------------
# PairedGain: every branch, at three thresholds


@pytest.mark.parametrize(
    ("gains", "threshold", "verdict"),
    [
        ((2.0, 3.0, 4.0), 0.0, HOLDS),
        ((-1.0, -1.2, -1.4), 0.0, FAILS),
        ((1.0, -0.5, 2.0), 0.0, INCONCLUSIVE),
        ((0.0, 0.0, 0.0), 0.0, FAILS),  # no gain at all
        ((3.0, 3.1, 3.2), 2.0, HOLDS),
        ((1.0, 1.2, 1.4), 2.0, FAILS),  # the whole interval short of the claimed 2 points
        ((3.0, 3.0, 1.5), 2.0, INCONCLUSIVE),  # every seed > 0 yet the interval reaches 2
        ((3.0, 2.5, 2.1), 2.0, INCONCLUSIVE),  # every seed > 2: 3 seeds cannot exclude 2
        ((-0.5, -0.4, -0.6), -1.0, HOLDS),  # within the 1-point margin
        ((-2.0, -1.5, -1.8), -1.0, FAILS),
        ((-2.0, 0.5, 0.3), -1.0, INCONCLUSIVE),
    ],
)
def test_paired_gain_branches(gains, threshold, verdict):
    frame = runs({"A": [60 + g for g in gains], "B": [60.0] * len(gains)})
    found = PairedGain(("A",), ("B",), threshold=threshold).judge(frame)
    assert found.verdict == verdict
    assert found.profile == "cpu" and found.seeds == (0, 1, 2)
    assert found.mean == pytest.approx(np.mean(gains))
    assert f"d = {claims.paired_interval(gains)}" in found.measurement


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (runs({"A": [70.0, 71.0], "B": [60.0, 60.0]}), "2 seeds, fewer than the 3"),
        (runs({"A": [70.0], "B": [60.0]}, profile="ci"), "ci profile"),
        (runs({"A": [25.0, 26.0, 27.0], "B": [19.0, 19.5, 19.2]}), "the baseline B did not learn"),
        (runs({"A": [60.0] * 3, "B": [60.0] * 3}, train_loss=2.2), "the baseline B did not learn"),
        (runs({"A": [10.5, 11.0, 9.8], "B": [60.0] * 3}), "A sat at chance without diverging"),
    ],
)
def test_paired_gain_not_tested(frame, reason):
    found = PairedGain(("A",), ("B",)).judge(frame)
    assert found.verdict == NOT_TESTED and reason in found.reason


def test_a_variant_that_may_fail_can_sit_at_chance():
    """A failure the paper predicts (BN at a high lr) is what is measured, not a reason to stop."""
    frame = runs({"BN lo": [60.0, 61.0, 62.0], "BN hi": [10.5, 11.0, 9.8]})
    rule = PairedGain(("BN lo",), ("BN hi",), may_fail=("BN hi",))
    assert rule.baselines == ("BN lo",)
    assert rule.judge(frame).verdict == HOLDS
    assert PairedGain(("BN lo",), ("BN hi",)).judge(frame).verdict == NOT_TESTED


def test_paired_gain_pairs_only_common_seeds():
    frame = runs({"A": [70.0, 71.0, 72.0, 73.0], "B": [60.0, 60.0, 60.0]})
    found = PairedGain(("A",), ("B",)).judge(frame)
    assert found.verdict == HOLDS and found.seeds == (0, 1, 2)
    assert MIN_SEEDS == 3


def test_a_diverged_run_counts_at_chance():
    frame = runs({"A": [70.0, 70.0, 70.0], "B": [60.0, 60.0, 60.0]}, diverged={("A", 0)})
    rule = PairedGain(("A",), ("B",))
    assert rule.values(frame).loc[0, "A"] == pytest.approx(10.0)
    found = rule.judge(frame)  # d = -50, +10, +10
    assert found.verdict == INCONCLUSIVE and "1 diverged" in found.measurement
    # ... but a metric that is not an accuracy leaves the seed out
    changes = PairedGain(("A",), ("B",), metric="val_change").values(frame)
    assert list(changes.index) == [1, 2]


def test_a_curve_claim_needs_enough_epochs():
    change = {"A": [2.0, 2.1, 2.2], "B": [1.0, 1.0, 1.1]}
    frame = runs({"A": [60.0] * 3, "B": [60.0] * 3}, val_change=change)
    rule = PairedGain(("A",), ("B",), metric="val_change", min_epochs=5)
    found = rule.judge(frame)  # 3 epochs
    assert found.verdict == NOT_TESTED and "fewer than 5" in found.reason
    assert rule.judge(frame.assign(epochs=5)).verdict == HOLDS


@pytest.mark.parametrize("epochs", [0.375, 0.75, 3])
def test_a_fractional_epoch_schedule_is_judged_without_an_epoch_limit(epochs):
    # the small-batch runs train a fraction of an epoch by design (the paper's step ratio)
    frame = runs({"A": [65.0, 66.0, 64.0], "B": [60.0, 61.0, 59.5]}).assign(epochs=epochs)
    assert PairedGain(("A",), ("B",)).judge(frame).verdict == HOLDS
    limited = PairedGain(("A",), ("B",), min_epochs=1).judge(frame)
    assert limited.verdict == (NOT_TESTED if epochs < 1 else HOLDS)


def test_best_of_minus_and_difference_of_differences():
    frame = runs({"A": [65.0] * 3, "B": [60.0, 66.0, 60.0], "C": [64.0, 60.0, 64.0]})
    best = PairedGain(("A",), ("B", "C"), best_of_minus=True)
    assert list(best.differences(best.values(frame))) == [1.0, -1.0, 1.0]
    assert best.judge(frame).verdict == INCONCLUSIVE
    # (DN-B drops about 1 point from lr 0.2 to 0.5, BN about 8): DN-B loses less
    frame = runs(
        {
            "DN lr 0.5": [69.0, 68.5, 69.2],
            "DN lr 0.2": [70.0, 70.0, 70.0],
            "BN lr 0.5": [62.0, 61.0, 62.5],
            "BN lr 0.2": [70.0, 69.5, 70.2],
        }
    )
    drop = _drop_less("DN", "BN", "lr 0.5", "lr 0.2")
    assert drop.baselines == ("BN lr 0.2", "DN lr 0.2")
    found = drop.judge(frame)
    assert found.verdict == HOLDS and found.mean == pytest.approx(np.mean([7.0, 7.0, 6.9]))


# ---------------------------------------------------------------------------------------------
# TrainingOutcome and NaNOutcome


@pytest.mark.parametrize(
    ("best_val", "expect", "verdict"),
    [
        ([10.5, 11.0, 10.0], "fails", HOLDS),
        ([55.0, 60.0, 58.0], "fails", FAILS),
        ([11.0, 60.0, 28.0], "fails", INCONCLUSIVE),
        ([55.0, 60.0, 58.0], "trains", HOLDS),
        ([10.5, 11.0, 10.0], "trains", FAILS),
        ([11.0, 60.0, 28.0], "trains", INCONCLUSIVE),
    ],
)
def test_training_outcome_branches(best_val, expect, verdict):
    frame = runs({"X": best_val, "ref": [60.0] * 3})
    found = TrainingOutcome("X", "ref", expect).judge(frame)
    assert found.verdict == verdict
    interval = claims.paired_interval(best_val)
    assert found.interval == pytest.approx((interval.low, interval.high))


def test_training_outcome_diverged_seeds_count_at_chance():
    frame = runs({"X": [0.0, 0.0, 0.0], "ref": [60.0] * 3}, diverged={("X", s) for s in range(3)})
    found = TrainingOutcome("X", "ref").judge(frame)
    assert found.verdict == HOLDS and "3 diverged" in found.measurement
    assert 10.0 + CHANCE_MARGIN > 10.0


def test_training_outcome_not_tested():
    idle = runs({"X": [10.0] * 3, "ref": [19.0] * 3})
    assert "ref did not learn" in TrainingOutcome("X", "ref").judge(idle).reason
    few = runs({"X": [10.0] * 2, "ref": [60.0] * 2})
    assert TrainingOutcome("X", "ref").judge(few).verdict == NOT_TESTED
    with pytest.raises(ValueError, match="expect"):
        TrainingOutcome("X", "ref", "diverges")


@pytest.mark.parametrize(
    ("n_diverged", "profile", "verdict", "reason"),
    [
        (3, "cpu", HOLDS, "NaN in 3 of 3"),
        (2, "cpu", HOLDS, "NaN in 2 of 3"),
        (1, "cpu", INCONCLUSIVE, "some, not most"),
        (0, "cpu", NOT_TESTED, "not reproduced within 1,406 steps"),
        (0, "paper", FAILS, "the paper's length"),
    ],
)
def test_nan_outcome(n_diverged, profile, verdict, reason):
    diverged = {("DN-C", s) for s in range(n_diverged)}
    frame = runs({"DN-C": [50.0] * 3, "BN": [60.0] * 3}, profile=profile, diverged=diverged)
    found = NaNOutcome("DN-C").judge(frame)
    assert found.verdict == verdict and reason in found.reason
    ci = stats.binomtest(n_diverged, 3).proportion_ci(0.95)
    assert found.interval == pytest.approx((ci.low, ci.high))


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
    found = MultAddsIncrease("dnb", limit_pct=0.7).judge({"dnb": dnb, "bn": 10**6})
    assert found.verdict == verdict


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


def record(value, seed, profile="cpu", test_acc=60.0):
    config = {"dataset": "cifar10", "n_train": None, "epochs": 3, "width_mult": 0.25}
    run = pd.Series({"status": "finished", "test_acc_at_best_val": test_acc, "train_loss": 1.0})
    return {"profile": profile, "config": {**config, "seed": seed}, "value": value, "run": run}


CH8_ACCURACY = (("1", 50.0), ("2", 50.1), ("32", 50.0))


def ch8(accuracy: dict[str, float]) -> dict:
    """A ``test_batch`` value as chapter 8 stores it, eval mode only."""
    return {"eval": {b: {"accuracy": a} for b, a in accuracy.items()}}


def test_test_batch_reads_chapter_8s_format():
    # chapter 8's: eval mode (the paper's setting) and train mode (the contrast)
    value = {
        "eval_images": 500,
        "eval": {b: {"accuracy": a, "changed_predictions": 0} for b, a in CH8_ACCURACY},
        "train": {b: {"accuracy": 10.0, "changed_predictions": 40} for b, _ in CH8_ACCURACY},
    }
    assert claims.measured._accuracy_by_batch(value) == {1: 50.0, 2: 50.1, 32: 50.0}


@pytest.mark.parametrize(
    "value",
    [
        {"1": 50.0, "2": 50.1, "32": 50.0},
        {"accuracy": {"1": 50.0, "2": 50.1, "32": 50.0}},
        {"batch_sizes": [1, 2, 32], "test_acc": [50.0, 50.1, 50.0]},
        [{"batch_size": b, "acc": a} for b, a in ((1, 50.0), (2, 50.1), (32, 50.0))],
    ],
)
def test_test_batch_reads_no_other_format(value):
    assert claims.measured._accuracy_by_batch(value) == {}


@pytest.mark.parametrize(
    ("spreads", "profile", "test_acc", "verdict"),
    [
        ((0.0, 0.1, 0.2), "cpu", 60.0, HOLDS),
        ((0.9, 1.0, 1.1), "cpu", 60.0, FAILS),
        ((0.0, 0.1, 1.9), "cpu", 60.0, INCONCLUSIVE),
        ((0.0, 0.0, 0.0), "cpu", 11.0, NOT_TESTED),  # the measured models did not learn
        ((0.0, 0.1), "cpu", 60.0, NOT_TESTED),
        ((0.0,), "ci", 60.0, NOT_TESTED),
    ],
)
def test_test_batch_invariance(spreads, profile, test_acc, verdict):
    records = [
        record(ch8({"1": 40.0 + s, "2": 40.0, "32": 40.0}), seed, profile, test_acc)
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
    found = claims.median_cohen_f(value, "DN-start", "alpha")
    assert found == pytest.approx(np.median(f))


@pytest.mark.parametrize(
    ("shifts", "test_acc", "verdict"),
    [
        ((0.0, 0.0, 0.0), 60.0, HOLDS),  # the class means differ only by sampling noise
        ((1.0, 1.0, 1.0), 60.0, FAILS),  # a class-mean spread as large as the within-class one
        ((0.0, 1.0, 0.0), 60.0, INCONCLUSIVE),
        ((0.0, 0.0, 0.0), 10.5, NOT_TESTED),
    ],
)
def test_class_means_alike(shifts, test_acc, verdict):
    # 5,000 images per class: sampling noise alone gives f of about 0.01
    records = [
        record(affine_value(s, seed=100 + i, per_class=5000)[0], i, test_acc=test_acc)
        for i, s in enumerate(shifts)
    ]
    assert ClassMeansAlike("X").judge(records).verdict == verdict


def test_unreadable_affine_value_is_inconclusive():
    found = ClassMeansAlike("X").judge([record({"layers": {"a": {}}}, s) for s in range(3)])
    assert found.verdict == INCONCLUSIVE and "not understood" in found.reason


# ---------------------------------------------------------------------------------------------
# Reading the store


def _store_run(root, profile, config, acc, hardware="test CPU", status="finished"):
    final = {"train_loss": 1.0, "train_acc": acc, "best_val_acc": acc}
    final |= {"test_acc_at_best_val": acc, "val_acc": acc, "test_acc_last": acc, "best_epoch": 3}
    curves = [{"epoch": e, "val_acc": acc - 3 + e} for e in (1, 2, 3)]
    diverged = status == "diverged"
    result = {
        "hash": config.hash(),
        "config": config.to_dict(),
        "status": status,
        "curves": curves[:1] if diverged else curves,
        "final": None if diverged else final,
        "steps": 4218,
        "wall_time_s": 1.0,
        "hardware": {"cpu": hardware, "gpu": None},
    }
    path = root / profile / f"{config.hash()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def _configs(name, profile, variant):
    labels = EXPERIMENTS[name].labels(profile)
    return [c for c in EXPERIMENTS[name].builder(profile) if labels[c.hash()] == variant]


def test_nothing_stored_is_not_tested(tmp_path):
    store = ResultsStore(tmp_path)
    for claim in CLAIMS:
        if claim.experiments:
            found = claim.evaluate(store)
            assert found.verdict == NOT_TESTED
            assert found.reason.startswith(("not run", "not measured yet"))


def test_evaluate_reads_the_largest_profile_with_every_variant(tmp_path):
    """DN-B(16,1) beats BN by about 2 points in every seed at cpu; ci has the reverse. A cpu
    grid with BN missing falls back to ci, which never tests anything."""
    claim = next(c for c in CLAIMS if c.id == "dnb_g1_beats_bn")
    for profile in ("cpu", "ci"):
        for config in _configs("table2", profile, "DN-B(16,1)"):
            acc = 62.0 + config.seed + 0.1 * config.seed**2 if profile == "cpu" else 9.0
            _store_run(tmp_path, profile, config, acc)
    for config in _configs("table2", "ci", "BN"):
        _store_run(tmp_path, "ci", config, 11.0)
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (NOT_TESTED, "ci")
    for config in _configs("table2", "cpu", "BN"):
        _store_run(tmp_path, "cpu", config, 60.0 + config.seed)
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (HOLDS, "cpu")
    # Table 2 is a headline comparison: it reads the profile's headline seeds
    assert found.seeds == get_profile("cpu").headline_seeds
    assert found.hardware == "test CPU" and found.dataset.startswith("cifar10 (all train")
    # val accuracy rises by 1 point every epoch in these curves
    stored = ResultsStore(tmp_path).runs(EXPERIMENTS["table2"], "cpu")
    assert stored["val_change"].eq(1.0).all() and stored["steps"].eq(4218).all()


def test_evaluate_reads_stored_measurements(tmp_path):
    claim = next(c for c in CLAIMS if c.id == "test_batch")
    for config in _configs("table4", "cpu", "DN-B(16,1) b64"):
        _store_run(tmp_path, "cpu", config, 60.0)
        path = tmp_path / "cpu" / "analysis" / f"test_batch-{config.hash()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # measured under a profile name the folder no longer has (a renamed profile)
        stored = {
            "profile": "old",
            "hash": config.hash(),
            "config": config.to_dict(),
            "hardware": {"cpu": "test CPU"},
        }
        path.write_text(json.dumps({**stored, "value": ch8({"1": 30.0, "2": 30.0, "32": 30.0})}))
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (HOLDS, "cpu")


def test_cpu_is_read_after_gpu_and_before_cpu_v1():
    assert engine_store.PROFILE_ORDER == ("paper", "gpu", "cpu", "cpu_v1", "ci")


# (stored seeds of BN at cpu, diverged seeds among them, BN complete?) for Table 2, a headline
# comparison with 5 seeds at cpu
@pytest.mark.parametrize(
    ("seeds", "diverged", "complete"),
    [
        ((0, 1, 2, 3, 4), (), True),
        ((0, 1, 2, 3, 4), (3,), True),  # a diverged run is stored: it counts
        ((0, 1, 2), (), False),
        ((1, 2, 3, 4), (), False),
        ((), (), False),
    ],
)
def test_a_variant_is_complete_when_every_registered_run_is_stored(seeds, diverged, complete):
    table2 = EXPERIMENTS["table2"]
    stored = [
        c.hash() for c in _configs("table2", "cpu", "BN") if c.seed in seeds or c.seed in diverged
    ]
    assert ("BN" in engine_store.complete_variants(table2, "cpu", stored)) is complete
    others = [h for v in ("SE+BN", "DN-B(16,1)", "DN-B(16,oup)") for h in _hashes("table2", v)]
    assert engine_store.is_complete(table2, "cpu", stored + others) is complete
    assert not engine_store.is_complete(table2, "cpu", others)


def _hashes(name, variant, profile="cpu"):
    return [c.hash() for c in _configs(name, profile, variant)]


def _store_variant(root, profile, name, variant, acc, seeds=None, diverged=()):
    """Runs of ``variant`` at ``profile``: the given ``seeds`` (default all the registry's),
    test accuracy ``acc`` plus the seed; the seeds in ``diverged`` are stored as diverged."""
    for config in _configs(name, profile, variant):
        if seeds is None or config.seed in seeds:
            status = "diverged" if config.seed in diverged else "finished"
            _store_run(root, profile, config, acc + config.seed, status=status)


# At cpu_v1 both variants are complete, and BN (the baseline) did not learn there: not tested.
# At cpu, DN-B(16,1) beats BN by 2 points in every seed: holds, once both are complete.
@pytest.mark.parametrize(
    ("cpu_bn_seeds", "cpu_dnb_seeds", "profile", "verdict"),
    [
        (None, None, "cpu", HOLDS),
        (None, (0, 1, 2), "cpu_v1", NOT_TESTED),  # DN-B(16,1) half trained at cpu
        ((0, 1, 2, 3), None, "cpu_v1", NOT_TESTED),  # one BN seed to go
        ((), None, "cpu_v1", NOT_TESTED),  # BN not started at cpu
    ],
)
def test_a_rule_reads_cpu_only_where_its_variants_are_complete(
    tmp_path, cpu_bn_seeds, cpu_dnb_seeds, profile, verdict
):
    claim = next(c for c in CLAIMS if c.id == "dnb_g1_beats_bn")
    _store_variant(tmp_path, "cpu_v1", "table2", "BN", 20.0)
    _store_variant(tmp_path, "cpu_v1", "table2", "DN-B(16,1)", 22.0)
    _store_variant(tmp_path, "cpu", "table2", "BN", 60.0, cpu_bn_seeds)
    _store_variant(tmp_path, "cpu", "table2", "DN-B(16,1)", 62.0, cpu_dnb_seeds)
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (verdict, profile)
    # the other Table 2 variants are not stored anywhere: a rule needs only its own
    seeds = get_profile(profile).seeds_for(headline=True)
    assert found.seeds == seeds


def test_a_rule_at_ci_reads_the_smoke_runs_when_no_larger_profile_is_complete(tmp_path):
    claim = next(c for c in CLAIMS if c.id == "dnb_g1_beats_bn")
    _store_variant(tmp_path, "ci", "table2", "BN", 11.0)
    _store_variant(tmp_path, "ci", "table2", "DN-B(16,1)", 9.0)
    _store_variant(tmp_path, "cpu", "table2", "BN", 60.0, (0, 1))
    _store_variant(tmp_path, "cpu", "table2", "DN-B(16,1)", 62.0, (0, 1))
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile, found.reason) == (NOT_TESTED, "ci", CI_SMOKE)


# (cpu seeds of DN-B(16,1) b64 trained and measured, the profile the claim reads): cpu_v1 has
# all three seeds trained and measured
@pytest.mark.parametrize(("cpu_seeds", "profile"), [((0, 1, 2, 3, 4), "cpu"), ((0, 1), "cpu_v1")])
def test_a_measured_claim_passes_over_a_half_trained_variant(tmp_path, cpu_seeds, profile):
    claim = next(c for c in CLAIMS if c.id == "test_batch")
    for name in ("cpu_v1", "cpu"):
        for config in _configs("table4", name, "DN-B(16,1) b64"):
            if name == "cpu" and config.seed not in cpu_seeds:
                continue
            _store_run(tmp_path, name, config, 60.0)
            path = tmp_path / name / "analysis" / f"test_batch-{config.hash()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            value = ch8({"1": 30.0, "2": 30.0, "32": 30.0})
            stored = {"hash": config.hash(), "config": config.to_dict(), "value": value}
            path.write_text(json.dumps({**stored, "hardware": {"cpu": "test CPU"}}))
    found = claim.evaluate(ResultsStore(tmp_path))
    assert (found.verdict, found.profile) == (HOLDS, profile)


# What a chapter shows of Table 2: per profile, the variants stored there, each with all its
# seeds (None) or the ones given; then the profile each variant is shown from.
EVERY_VARIANT = {"BN": None, "SE+BN": None, "DN-B(16,1)": None, "DN-B(16,oup)": None}


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        # complete at cpu and at cpu_v1: cpu alone
        ({"cpu": EVERY_VARIANT, "cpu_v1": EVERY_VARIANT}, dict.fromkeys(EVERY_VARIANT, "cpu")),
        # cpu half trained: cpu_v1 alone, even for the variant cpu has complete
        (
            {"cpu": {"BN": None, "DN-B(16,1)": (0, 1)}, "cpu_v1": EVERY_VARIANT},
            dict.fromkeys(EVERY_VARIANT, "cpu_v1"),
        ),
        # a complete smaller profile beats a half-trained larger one
        (
            {"cpu": {"BN": None, "SE+BN": (0,)}, "ci": EVERY_VARIANT},
            dict.fromkeys(EVERY_VARIANT, "ci"),
        ),
        # complete nowhere: the largest profile that has any run, alone (never a mix)
        (
            {
                "cpu": {"BN": None, "DN-B(16,1)": (0, 1), "SE+BN": (2,)},
                "cpu_v1": {"DN-B(16,1)": None, "SE+BN": (0,)},
            },
            {"BN": "cpu", "DN-B(16,1)": "cpu", "SE+BN": "cpu"},
        ),
        ({"cpu": {"DN-B(16,oup)": (4,)}}, {"DN-B(16,oup)": "cpu"}),
        ({}, {}),
    ],
)
def test_a_chapter_never_mixes_a_half_trained_grid_with_a_complete_one(tmp_path, stored, shown):
    for profile, variants in stored.items():
        for variant, seeds in variants.items():
            _store_variant(tmp_path, profile, "table2", variant, 50.0, seeds)
    frame, results = engine_store.largest_stored(EXPERIMENTS["table2"], tmp_path)
    if not shown:
        assert frame.empty and results == []
        return
    found = frame.groupby("variant", observed=True)["profile"].agg(set).to_dict()
    assert found == {variant: {profile} for variant, profile in shown.items()}
    assert list(frame["variant"].cat.categories)[:4] == list(EVERY_VARIANT)
    for variant, profile in shown.items():
        seeds = stored[profile][variant]
        every = get_profile(profile).seeds_for(headline=True)
        expected = sorted(every if seeds is None else seeds)
        assert sorted(frame.loc[frame["variant"] == variant, "seed"]) == expected
    assert sorted(r["hash"] for r in results) == sorted(frame["hash"])


def test_ledger_has_one_row_per_claim(tmp_path):
    chosen = [c for c in CLAIMS if c.experiments][:3]
    table = claims.ledger(chosen, results_root=tmp_path)
    assert list(table["id"]) == [c.id for c in chosen]
    assert set(table["verdict"]) <= set(VERDICTS)


@pytest.mark.parametrize(
    ("old", "new", "plus", "minus"),
    [
        ("DN-B(16,1)", "DN-B x", ("DN-B x lr 0.5", "BN lr 0.2"), ("DN-B x lr 0.2", "BN lr 0.5")),
        ("BN", "BN y", ("DN-B(16,1) lr 0.5", "BN y lr 0.2"), ("DN-B(16,1) lr 0.2", "BN y lr 0.5")),
    ],
)
def test_relabeled_renames_one_variant_and_keeps_the_rule(old, new, plus, minus):
    rule = _drop_less("DN-B(16,1)", "BN", "lr 0.5", "lr 0.2")
    moved = rule.relabeled(old, new)
    assert (moved.plus, moved.minus) == (plus, minus)
    assert moved.threshold == rule.threshold and moved.metric == rule.metric


def test_relabeled_needs_a_variant_to_rename():
    # "DN-B(16" is not a whole word of any label
    for old in ("DN-C", "DN-B(16"):
        with pytest.raises(ValueError, match="expected a variant of"):
            _drop_less("DN-B(16,1)", "BN", "lr 0.5", "lr 0.2").relabeled(old, "x")


@pytest.mark.parametrize(("dnb_acc", "verdict"), [(50.0, FAILS), (64.0, HOLDS)])
def test_reread_applies_a_claims_rule_to_another_experiment(tmp_path, dnb_acc, verdict):
    """table8_normalized_input: BN drops 6 points from lr 0.2 to 0.5 in every seed, the
    renamed DN-B loses 0 (holds) or 10 (does not hold); the ledger's own claim reads table8,
    where nothing is stored."""
    new = "DN-B(16,1) normalized input"
    _store_variant(tmp_path, "cpu", "table8_normalized_input", "BN lr 0.2", 60.0)
    _store_variant(tmp_path, "cpu", "table8_normalized_input", "BN lr 0.5", 54.0)
    _store_variant(tmp_path, "cpu", "table8_normalized_input", f"{new} lr 0.2", 60.0)
    _store_variant(tmp_path, "cpu", "table8_normalized_input", f"{new} lr 0.5", dnb_acc)
    table = claims.reread(
        ["dnb_lr05_loses_less"], "table8_normalized_input", "DN-B(16,1)", new, tmp_path
    )
    assert list(table["id"]) == ["dnb_lr05_loses_less"]
    assert (table["verdict"].iloc[0], table["profile"].iloc[0]) == (verdict, "cpu")
    assert math.isclose(table["mean"].iloc[0], dnb_acc - 60.0 + 6.0)
    ledger = claims.ledger([c for c in CLAIMS if c.id == "dnb_lr05_loses_less"], tmp_path)
    assert ledger["verdict"].iloc[0] == NOT_TESTED


@pytest.mark.parametrize(
    ("ids", "experiment", "message"),
    [
        (["no_such_claim"], "table8_normalized_input", "unknown claim"),
        (["dnb_lr05_stable"], "no_such_experiment", "expected an experiment"),
        (["test_batch"], "table8_normalized_input", "expected a paired-gain rule"),
    ],
)
def test_reread_rejects_what_it_cannot_reread(tmp_path, ids, experiment, message):
    with pytest.raises(ValueError, match=message):
        claims.reread(ids, experiment, "DN-B(16,1)", "x", tmp_path)


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_json_has_every_claim(tmp_path, capsys):
    assert main(["claims", "--json", "--results-dir", str(tmp_path)]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in found] == [c.id for c in CLAIMS]
    keys = {"id", "verdict", "measurement", "interval", "seeds", "profile", "chapter"}
    for row in found:
        assert keys <= set(row) and row["verdict"] in VERDICTS and len(row["interval"]) == 2
    # nothing stored: every claim on trained models is not tested, exact counts are decided
    exact = {c.id for c in CLAIMS if not c.experiments}
    assert {r["id"] for r in found if r["verdict"] != NOT_TESTED} == exact


def test_cli_help(capsys):
    assert main(["claims", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--json" in out and "--results-dir" in out
    assert main(["--help"]) == 0
    assert "claims" in capsys.readouterr().out


def test_cli_markdown_counts_the_verdicts(tmp_path, capsys):
    assert main(["claims", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| id") and f"{len(CLAIMS)} claims: " in out
    assert "| dnb_g1_beats_bn" in out


# ---------------------------------------------------------------------------------------------
# The chapters print the ledger's verdicts, and compute none of their own


@pytest.fixture(scope="module")
def committed_ledger():
    return claims.ledger()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_verdict_a_chapter_prints_is_the_ledgers(chapter, committed_ledger):
    """The committed outputs of each chapter print a `claim <id>: <verdict>` line for every
    claim of the chapter (chapter 11: every claim), possibly for related claims of other
    chapters too, and every printed verdict is the ledger's on the committed results."""
    printed = claims.printed_verdicts(NOTEBOOKS / chapter)
    if chapter.startswith("11"):
        mine = set(committed_ledger["id"])
    else:
        mine = {c.id for c in CLAIMS if c.chapter == chapter}
    assert mine <= set(printed) <= set(committed_ledger["id"])
    verdicts = dict(zip(committed_ledger["id"], committed_ledger["verdict"], strict=True))
    assert printed == {claim_id: verdicts[claim_id] for claim_id in printed}


def test_printed_verdicts_reads_stream_outputs(tmp_path):
    cell = {
        "cell_type": "code",
        "source": [],
        "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["claim a: holds\n", "x\n"]},
            {"output_type": "stream", "name": "stdout", "text": "claim b: not tested\n"},
        ],
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [cell]}))
    assert claims.printed_verdicts(path) == {"a": HOLDS, "b": NOT_TESTED}


@pytest.mark.parametrize(
    "notebook",
    [NOTEBOOKS / c for c in CHAPTERS]
    + [NOTEBOOKS / "solutions" / c.replace(".ipynb", "_solutions.ipynb") for c in CHAPTERS],
    ids=lambda p: p.name,
)
def test_chapters_write_no_verdict_rule(notebook):
    """A verdict word assigned in a chapter's code would be a rule of its own."""
    code = "\n".join(
        "".join(cell["source"])
        for cell in json.loads(notebook.read_text())["cells"]
        if cell["cell_type"] == "code"
    )
    for verdict in (HOLDS, FAILS, INCONCLUSIVE):
        assert f'"{verdict}"' not in code and f"'{verdict}'" not in code
