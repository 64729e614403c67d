"""The four verdicts, the thresholds behind them, and the statistics every rule shares.

A verdict is one of :data:`VERDICTS`:

* ``"holds"``: the 95% confidence interval of the measured effect lies on the paper's side of
  the claimed effect;
* ``"does not hold"``: the interval excludes the claimed effect;
* ``"inconclusive"``: neither (the interval straddles the claimed effect);
* ``"not tested"``: the runs cannot ask the question. The baseline did not learn
  (:func:`learned`), a compared variant sits at chance without diverging (:func:`at_chance`),
  there are fewer than :data:`MIN_SEEDS` seeds, the runs are the ``ci`` smoke scale, or the
  claim is about something a run this short cannot show (a NaN after 240 epochs, curves
  over more epochs than were run), or nothing is stored at all.

The effect of a claim on trained models is a **paired difference across seeds**: the same seed
gives two variants the same data order and augmentation draws, so ``d_s = a_s - b_s`` removes
that share of the seed-to-seed noise. Its mean and 95% interval come from Student's t
(:func:`paired_interval`, ``scipy.stats.ttest_1samp(...).confidence_interval``).
"""

from __future__ import annotations

import ast
import inspect
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from dnbook.data.registry import DATASETS

HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED = "holds", "does not hold", "inconclusive", "not tested"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED)

CONFIDENCE = 0.95
"""Coverage of every interval a verdict rests on: the usual 95%, two-sided."""

MIN_SEEDS = 3
"""Fewest paired seeds a verdict on trained models needs. A t interval exists from 2 seeds, but
with 1 degree of freedom its half-width is 12.7 standard errors (t(0.975, 1)): no effect of the
paper's size could exclude anything. From 3 seeds (t(0.975, 2) = 4.3) an interval can decide a
large effect; the headline comparisons ask for 5."""

LEARNED_FRACTION = 1 / 3
"""A baseline *learned* when its mean test accuracy covers at least this fraction of the way
from chance to 100% (40% on CIFAR-10, 34% with 100 classes). Below it a network is still in its
first, warm-up transient, where every variant's accuracy mostly measures how fast it starts,
not where it trains to; the paper's effects (one to eight points between models that reach
over 80%) are not defined there."""

LEARNED_LOSS_FRACTION = 0.8
"""... and when its mean last training loss is below this fraction of ln(classes), the
cross-entropy of a uniform guess: "clearly below" means at least 20% below it, so that a loss
that merely wobbles around a uniform guess never counts as learning."""

CHANCE_MARGIN = 2.0
"""Points of accuracy above chance (100 / classes) within which a variant *sits at chance*.
The binomial standard error of a chance-level accuracy on 1,000 test images of 10 classes is
sqrt(0.1 x 0.9 / 1000) = 0.95 points, so this margin is about two standard errors at the
smallest test set a stored profile uses."""

# The paper's "Test" column: test accuracy of the weights with the best validation accuracy.
TEST = "test_acc_at_best_val"


@dataclass(frozen=True)
class Evaluation:
    """What a rule found: the verdict, the branch of the rule that produced it (with its
    numbers), the measurement, its mean and 95% interval where there is one, and where it
    comes from (profile, dataset, seeds, hardware)."""

    verdict: str
    reason: str
    measurement: str = ""
    profile: str = ""
    dataset: str = ""
    seeds: tuple[int, ...] = ()
    hardware: str = ""
    mean: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class Interval:
    """The mean of a per-seed (or per-model) effect and its two-sided :data:`CONFIDENCE`
    interval; ``n`` values. A constant sample's interval is the point itself."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_interval(values: Sequence[float] | pd.Series | np.ndarray) -> Interval:
    """Mean and 95% t interval of ``values`` (per-seed paired differences, or any sample), by
    ``scipy.stats.ttest_1samp(values, 0).confidence_interval(CONFIDENCE)``. Needs 2 values; a
    sample without spread (every value equal) gets the point interval [mean, mean]."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}")
    mean = float(values.mean())
    if np.ptp(values) == 0:
        return Interval(mean, mean, mean, len(values))
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return Interval(mean, float(ci.low), float(ci.high), len(values))


def side_of(interval: Interval, threshold: float, higher: bool = True) -> str:
    """The verdict of a claimed effect "greater than ``threshold``" (``higher``) or "smaller
    than ``threshold``": **holds** if the whole interval is on the claimed side of it,
    **does not hold** if the whole interval is on the other side (or touches it), else
    **inconclusive**."""
    low, high = (interval.low, interval.high) if higher else (-interval.high, -interval.low)
    t = threshold if higher else -threshold
    if low > t:
        return HOLDS
    if high <= t:
        return FAILS
    return INCONCLUSIVE


def chance(dataset: str) -> float:
    """Chance accuracy (percent) of ``dataset``: 100 / classes."""
    return 100.0 / DATASETS[dataset].num_classes


def learned_threshold(dataset: str) -> float:
    """The test accuracy (percent) a baseline must reach on ``dataset`` to have learned
    (:data:`LEARNED_FRACTION` of the way from chance to 100%)."""
    c = chance(dataset)
    return c + LEARNED_FRACTION * (100.0 - c)


def learned(runs: pd.DataFrame, dataset: str) -> tuple[bool, str]:
    """Whether the runs of one variant learned: mean test accuracy (a diverged run at chance)
    at least :func:`learned_threshold` and mean last train loss below
    :data:`LEARNED_LOSS_FRACTION` x ln(classes) (a diverged run never counts as below). Also
    a sentence with the numbers, for the verdict's reason."""
    acc = runs[TEST].astype(float).where(runs["status"] != "diverged", chance(dataset)).mean()
    loss = runs["train_loss"].astype(float).where(runs["status"] != "diverged", math.inf).mean()
    need_acc = learned_threshold(dataset)
    need_loss = LEARNED_LOSS_FRACTION * math.log(DATASETS[dataset].num_classes)
    ok = bool(acc >= need_acc and loss < need_loss)
    words = (
        f"mean test {acc:.1f}% ({'>=' if acc >= need_acc else '<'} {need_acc:.1f}%), "
        f"train loss {loss:.2f} ({'<' if loss < need_loss else '>='} {need_loss:.2f} = "
        f"{LEARNED_LOSS_FRACTION:g} ln {DATASETS[dataset].num_classes})"
    )
    return ok, words


def at_chance(runs: pd.DataFrame, dataset: str) -> bool:
    """Whether one variant sits at chance without diverging: none of its runs diverged and its
    mean test accuracy is at most :data:`CHANCE_MARGIN` points above chance."""
    if (runs["status"] == "diverged").any():
        return False
    return bool(runs[TEST].astype(float).mean() <= chance(dataset) + CHANCE_MARGIN)


def thresholds() -> pd.DataFrame:
    """The named thresholds of this module with their values and the reasons their docstrings
    give (read from this module's source, so that the reason shown is the one in the code)."""
    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    rows = []
    for node, after in zip(tree.body, tree.body[1:], strict=False):
        if not (isinstance(node, ast.Assign) and isinstance(after, ast.Expr)):
            continue
        if not isinstance(after.value, ast.Constant) or not isinstance(after.value.value, str):
            continue
        name = node.targets[0].id
        reason = " ".join(after.value.value.split())
        rows.append({"name": name, "value": globals()[name], "reason": reason})
    return pd.DataFrame(rows)
