"""Verdict rules on measurements of trained models (``dnbook.analysis.measure``, stored by
chapters 8 and 10): Table 4's test batches and Figure 5's class means.

A measurement is one value per trained model (seed); the rules take its 95% t interval over
the models. The ``learned`` guard applies to the measured models themselves: the stored run of
every measured model must have learned (:func:`~dnbook.claims.verdicts.learned`), since a
network at chance has no class-wise behaviour and no accuracy to keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dnbook.claims.provenance import analysis_provenance, plural
from dnbook.claims.rules import CI_SMOKE
from dnbook.claims.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_TESTED,
    Evaluation,
    learned,
    paired_interval,
    side_of,
)
from dnbook.engine.store import ResultsStore
from dnbook.experiments import EXPERIMENTS
from dnbook.tables import mean_std


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _accuracy_by_batch(value: Any) -> dict[int, float]:
    """Test accuracy per test batch size from a stored ``test_batch`` value, as chapter 8
    stores it: ``{"eval": {"1": {"accuracy": 83.9, ...}, "2": ...}, "train": ...}`` (evaluation
    mode is the paper's setting; training mode is its contrast). Anything else: ``{}``."""
    table = value.get("eval") if isinstance(value, dict) else None
    if not isinstance(table, dict):
        return {}
    return {
        int(batch): accuracy
        for batch, entry in table.items()
        if str(batch).isdigit()
        and isinstance(entry, dict)
        and (accuracy := _number(entry.get("accuracy"))) is not None
    }


def _small_analysis(records: list[dict]) -> str | None:
    """Why the measured models cannot test a claim, or ``None``."""
    if {r["profile"] for r in records} == {"ci"}:
        return CI_SMOKE
    if len(records) < MIN_SEEDS:
        n = plural(len(records), "model")
        return f"{n} measured, fewer than the {MIN_SEEDS} an interval needs"
    if any(r.get("run") is None for r in records):
        return "the run of a measured model is not stored, so whether it learned is unknown"
    runs = pd.DataFrame([r["run"] for r in records])
    ok, words = learned(runs, records[0]["config"]["dataset"])
    return None if ok else f"the measured models did not learn: {words}"


@dataclass(frozen=True)
class _Measured:
    """A rule on the stored measurement :attr:`name` of ``variant``'s trained models."""

    variant: str
    name: ClassVar[str]

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        records = store.analyses(self.name, EXPERIMENTS[experiment], self.variant)
        if not records:
            return Evaluation(NOT_TESTED, f"not measured yet ({self.name} of {self.variant})")
        return self.judge(records)

    def judge(self, records: list[dict]) -> Evaluation:
        raise NotImplementedError


def _with_interval(where: dict, values) -> tuple[dict, Any]:
    interval = paired_interval(values) if len(values) > 1 else None
    if interval is not None:
        where = where | {"mean": interval.mean, "interval": (interval.low, interval.high)}
    return where, interval


@dataclass(frozen=True)
class TestBatchInvariance(_Measured):
    """The test batch size does not change the accuracy of ``variant``'s trained models
    (measurement ``"test_batch"``: test accuracy at several test batch sizes, per model).

    ``spread`` = the largest minus the smallest accuracy over the test batch sizes of one
    model. With the 95% t interval of the mean spread over the models:

    * **holds** if the interval lies below ``tolerance`` points;
    * **does not hold** if it lies at or above ``tolerance``;
    * **inconclusive** otherwise;
    * **not tested** if nothing is measured, fewer than :data:`MIN_SEEDS` models, only at
      ``ci``, or the measured models did not learn.
    """

    __test__ = False  # not a pytest class, despite its name
    name = "test_batch"

    tolerance: float = 0.5

    @property
    def text(self) -> str:
        return (
            "spread = max - min test accuracy over the test batch sizes, per model; 95% t "
            f"interval of its mean. Holds if the interval < {self.tolerance:g} points; does not "
            f"hold if >= {self.tolerance:g}; inconclusive otherwise. Not tested if the models did "
            f"not learn, < {MIN_SEEDS} models, or at ci."
        )

    def judge(self, records: list[dict]) -> Evaluation:
        tables = [_accuracy_by_batch(r["value"]) for r in records]
        if any(len(t) < 2 for t in tables):
            return Evaluation(INCONCLUSIVE, "stored value not understood (fewer than 2 batches)")
        spreads = np.array([max(t.values()) - min(t.values()) for t in tables])
        batches = sorted({b for t in tables for b in t})
        per_batch = "; ".join(
            f"batch {b}: {mean_std(np.array([t[b] for t in tables if b in t]))}" for b in batches
        )
        measurement = (
            f"{plural(len(tables), 'model')}, test accuracy % at {per_batch}; largest spread "
            f"{spreads.max():.3f} points"
        )
        where, interval = _with_interval(analysis_provenance(records), spreads)
        if interval is not None:
            measurement += f"; mean spread {interval} (95% interval)"
        small = _small_analysis(records)
        if small:
            return Evaluation(NOT_TESTED, small, measurement, **where)
        verdict = side_of(interval, self.tolerance, higher=False)
        why = (
            f"spread interval [{interval.low:.3f}, {interval.high:.3f}] against {self.tolerance:g}"
        )
        return Evaluation(verdict, why, measurement, **where)


def cohen_f(value: dict, layer: str, param: str) -> np.ndarray:
    """Cohen's f of every channel of one layer's ``param`` (``"alpha"`` or ``"lambda"``) in a
    stored ``affine_by_class`` value: how far apart a channel's class means are, in units of
    the spread within a class. From the one-way ANOVA ratio F = between-class mean square /
    within-class mean square, f = sqrt(max(F - 1, 0) (k - 1) / (k n0)), with
    n0 = (n - sum n_k^2 / n) / (k - 1) the (unbalanced) class size; NaN for a channel that is
    constant over the images (F = 0 / 0)."""
    entry = value["layers"][layer][param]
    counts = np.asarray(value["images_per_class"], dtype=float)  # (K,)
    means = np.asarray(entry["class_mean"], dtype=float)  # (K, C)
    stds = np.asarray(entry["class_std"], dtype=float)  # (K, C)
    n, k = counts.sum(), len(counts)
    grand = counts @ means / n  # (C,)
    between = counts @ (means - grand) ** 2 / (k - 1)  # (C,)
    within = (counts - 1) @ stds**2 / (n - k)  # (C,)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_ratio = between / within  # NaN for a constant channel (0 / 0)
    n0 = (n - (counts**2).sum() / n) / (k - 1)
    return np.sqrt(np.clip(f_ratio - 1, 0, None) * (k - 1) / (k * n0))


def median_cohen_f(value: dict, layer: str, param: str) -> float:
    """The median over channels of :func:`cohen_f` (NumPy's median: the mean of the two middle
    values for an even count), ignoring constant channels; NaN if every channel is constant.
    This is the number :class:`ClassMeansAlike` judges."""
    cohen = cohen_f(value, layer, param)
    return float(np.nanmedian(cohen)) if np.isfinite(cohen).any() else math.nan


@dataclass(frozen=True)
class ClassMeansAlike(_Measured):
    """The class means of DN-B's scale and shift are almost the same (measurement
    ``"affine_by_class"`` of chapter 10: per class, the mean and standard deviation over the
    class's test images of every channel's alpha and lambda, at the first and last DN layers).

    For each model (seed) and each of the four panels (DN-start and DN-end, alpha and lambda),
    ``f`` = the median over channels of Cohen's f (class-mean spread over within-class spread;
    Cohen's thresholds: 0.10 a small effect, 0.25 a medium one). With the 95% t interval of each
    panel's mean ``f`` over the models:

    * **holds** if every panel's interval lies below ``alike`` (0.10);
    * **does not hold** if some panel's interval lies at or above ``different`` (0.25);
    * **inconclusive** otherwise;
    * **not tested** with fewer than :data:`MIN_SEEDS` models, only at ``ci``, or when the
      measured models did not learn.
    """

    name = "affine_by_class"

    alike: float = 0.10
    different: float = 0.25

    @property
    def text(self) -> str:
        return (
            "f = median over channels of Cohen's f, per model and panel (DN-start/end x "
            "alpha/lambda); 95% t interval of each panel's mean f. Holds if every interval < "
            f"{self.alike:g}; does not hold if some interval >= {self.different:g}; inconclusive "
            f"otherwise. Not tested if the models did not learn, < {MIN_SEEDS} models, or at ci."
        )

    def judge(self, records: list[dict]) -> Evaluation:
        try:
            table = pd.DataFrame(
                [
                    {"panel": f"{layer} {param}", "f": median_cohen_f(r["value"], layer, param)}
                    for r in records
                    for layer in r["value"]["layers"]
                    for param in ("alpha", "lambda")
                ]
            )
        except (KeyError, TypeError, ValueError) as err:
            return Evaluation(INCONCLUSIVE, f"stored value not understood ({err!r})")
        by_panel = {p: v.dropna().to_numpy() for p, v in table.groupby("panel", sort=False)["f"]}
        measurement = f"{plural(len(records), 'model')}, median Cohen's f: " + "; ".join(
            f"{panel} {mean_std(values)}" for panel, values in by_panel.items()
        )
        where = analysis_provenance(records)
        small = _small_analysis(records)
        if small:
            return Evaluation(NOT_TESTED, small, measurement, **where)
        intervals = {p: paired_interval(v) for p, v in by_panel.items()}
        measurement += "; 95% intervals: " + "; ".join(
            f"{p} [{i.low:.3f}, {i.high:.3f}]" for p, i in intervals.items()
        )
        worst = max(intervals.values(), key=lambda i: i.high)
        where |= {"mean": worst.mean, "interval": (worst.low, worst.high)}
        if all(side_of(i, self.alike, higher=False) == HOLDS for i in intervals.values()):
            reason = f"every panel's interval < {self.alike:g} (highest end {worst.high:.3f})"
            return Evaluation(HOLDS, reason, measurement, **where)
        different = [p for p, i in intervals.items() if i.low >= self.different]
        if different:
            reason = f"interval >= {self.different:g} at {', '.join(different)}"
            return Evaluation(FAILS, reason, measurement, **where)
        lowest = min(i.low for i in intervals.values())
        reason = f"intervals from {lowest:.3f} to {worst.high:.3f}: neither"
        return Evaluation(INCONCLUSIVE, reason, measurement, **where)
