"""Verdict rules on trained runs: paired gains, training outcomes and NaN claims.

Each rule reads the runs of the largest profile at which every variant it needs (the compared
ones and the baseline) is complete, all its runs trained (:meth:`ResultsStore.largest`), and
first asks whether those runs can test the claim at all
(:func:`not_tested`); only then does it compute the verdict from a 95% interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from dnbook.claims.provenance import listed, plural, provenance
from dnbook.claims.verdicts import (
    CHANCE_MARGIN,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_TESTED,
    TEST,
    Evaluation,
    at_chance,
    chance,
    learned,
    paired_interval,
    side_of,
)
from dnbook.engine.store import ResultsStore
from dnbook.experiments import EXPERIMENTS
from dnbook.tables import mean_std

CI_SMOKE = "ci profile: a smoke test (one epoch of 512 images), not a measurement"


def _not_run(what: str) -> Evaluation:
    # true whether nothing is stored or a profile holds only some of the seeds (a grid that is
    # still training): either way no profile can answer yet
    return Evaluation(NOT_TESTED, f"not run: no profile has every seed of {what}")


def not_tested(
    runs: pd.DataFrame,
    n_seeds: int,
    baseline: Sequence[str],
    compared: Sequence[str] = (),
) -> str | None:
    """Why ``runs`` cannot test a claim, or ``None`` if they can: the ``ci`` smoke profile,
    fewer than :data:`MIN_SEEDS` seeds, a ``baseline`` variant that did not learn
    (:func:`~dnbook.claims.verdicts.learned`), or a ``compared`` variant that sits at chance
    without diverging (:func:`~dnbook.claims.verdicts.at_chance`)."""
    if set(runs["profile"]) == {"ci"}:
        return CI_SMOKE
    if n_seeds < MIN_SEEDS:
        return f"{plural(n_seeds)}, fewer than the {MIN_SEEDS} an interval needs"
    dataset = runs["dataset"].iloc[0]
    variant = runs["variant"].astype(str)
    for name in baseline:
        ok, words = learned(runs[variant == name], dataset)
        if not ok:
            return f"the baseline {name} did not learn: {words}"
    idle = [v for v in compared if at_chance(runs[variant == v], dataset)]
    if idle:
        return (
            f"{', '.join(idle)} sat at chance without diverging (mean test <= "
            f"{chance(dataset) + CHANCE_MARGIN:g}%)"
        )
    return None


@dataclass(frozen=True)
class PairedGain:
    """``plus`` is more accurate than ``minus``, by more than ``threshold`` points.

    Per seed, ``d`` = the sum of ``metric`` over the ``plus`` variants minus the sum over
    ``minus`` (or minus the best of ``minus`` when ``best_of_minus``: "the best of"); a
    difference of differences says "loses less than" (e.g. (DN-B at lr 0.5 - DN-B at 0.2) -
    (BN at 0.5 - BN at 0.2)); a negative ``threshold`` says "no worse than, within that
    margin". With the 95% t interval of the mean ``d`` over the paired seeds:

    * **holds** if the interval lies above ``threshold``;
    * **does not hold** if it lies at or below ``threshold``;
    * **inconclusive** otherwise;
    * **not tested** at ``ci``, with fewer than :data:`MIN_SEEDS` paired seeds, with runs
      shorter than ``min_epochs`` (a claim about curves needs curves; 0, no limit, for the
      others: a small-batch run's fractional epoch is its schedule), when a ``baseline``
      variant did not learn, or when a compared variant other than ``may_fail`` (the ones the
      paper says break, whose failure is the effect measured) sits at chance without diverging.

    ``baseline`` defaults to the compared variants whose label starts with "BN", else the
    first of ``minus``. Only seeds that every variant has are paired. A diverged run counts at
    chance accuracy when ``metric`` is an accuracy and leaves its seed out otherwise.
    """

    plus: tuple[str, ...]
    minus: tuple[str, ...]
    threshold: float = 0.0
    metric: str = TEST
    best_of_minus: bool = False
    unit: str = "test accuracy, %"
    min_epochs: float = 0
    baseline: tuple[str, ...] = ()
    may_fail: tuple[str, ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.plus + self.minus))

    @property
    def baselines(self) -> tuple[str, ...]:
        if self.baseline:
            return self.baseline
        bn = tuple(v for v in self.variants if v.split()[0] == "BN" and v not in self.may_fail)
        return bn or self.minus[:1]

    def relabeled(self, old: str, new: str) -> PairedGain:
        """The same rule on variants named ``new`` where this one names ``old`` (a label, or
        the part of a label before a space: ``old="DN-B(16,1)"`` turns ``"DN-B(16,1) lr 0.5"``
        into ``new + " lr 0.5"``); every other label, and every threshold, unchanged."""

        def swap(labels: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(
                new + label[len(old) :] if label == old or label.startswith(f"{old} ") else label
                for label in labels
            )

        if swap(self.variants) == self.variants:
            raise ValueError(f"expected a variant of {self.variants} to start with {old!r}")
        return replace(
            self,
            plus=swap(self.plus),
            minus=swap(self.minus),
            baseline=swap(self.baseline),
            may_fail=swap(self.may_fail),
        )

    @property
    def text(self) -> str:
        minus = f"max({', '.join(self.minus)})" if self.best_of_minus else " - ".join(self.minus)
        short = f", runs of < {self.min_epochs} epochs" if self.min_epochs > 1 else ""
        return (
            f"d = {' + '.join(self.plus)} - {minus} per seed ({self.unit}), 95% t interval of "
            f"its mean. Holds if the interval > {self.threshold:g}; does not hold if <= "
            f"{self.threshold:g}; inconclusive otherwise. Not tested if "
            f"{', '.join(self.baselines)} did not learn, a compared variant sits at chance, "
            f"< {MIN_SEEDS} seeds{short}, or at ci."
        )

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        needed = tuple(dict.fromkeys(self.variants + self.baselines))
        runs = store.largest(EXPERIMENTS[experiment], needed)
        if runs.empty:
            return _not_run(f"{experiment}: {', '.join(needed)}")
        return self.judge(runs)

    def seed_differences(self, experiment: str, store: ResultsStore) -> pd.DataFrame:
        """The evidence :meth:`evaluate` reads, per paired seed: each variant's ``metric``,
        ``d`` and the ``profile`` (empty if nothing is stored)."""
        needed = tuple(dict.fromkeys(self.variants + self.baselines))
        runs = store.largest(EXPERIMENTS[experiment], needed)
        if runs.empty:
            return pd.DataFrame(columns=[*self.variants, "d", "profile"])
        table = self.values(runs)
        return table.assign(d=self.differences(table), profile=runs["profile"].iloc[0])

    def values(self, runs: pd.DataFrame) -> pd.DataFrame:
        """``metric`` per seed (rows) and variant (columns), diverged runs at chance for an
        accuracy, and only the seeds that every variant has."""
        instead = runs["dataset"].map(chance) if "acc" in self.metric else np.nan
        values = runs[self.metric].astype(float).where(runs["status"] != "diverged", instead)
        table = (
            runs.assign(value=values, variant=runs["variant"].astype(str))
            .pivot_table(index="seed", columns="variant", values="value", aggfunc="first")
            .reindex(columns=list(self.variants))
        )
        return table.dropna()

    def differences(self, table: pd.DataFrame) -> pd.Series:
        """``d`` per seed from the :meth:`values` table."""
        minus = table[list(self.minus)]
        rival = minus.max(axis=1) if self.best_of_minus else minus.sum(axis=1)
        return table[list(self.plus)].sum(axis=1) - rival

    def judge(self, runs: pd.DataFrame) -> Evaluation:
        table = self.values(runs)
        d = self.differences(table)
        means = "; ".join(f"{v} {mean_std(table[v])}" for v in self.variants)
        diverged = int(
            runs[runs["variant"].astype(str).isin(self.variants)]["status"].eq("diverged").sum()
        )
        measurement = f"{plural(len(table))}: {means} ({self.unit})" + (
            f"; {diverged} diverged run(s) at chance" if diverged else ""
        )
        where = provenance(runs, table.index)
        interval = paired_interval(d) if len(d) > 1 else None
        if interval is not None:
            measurement += f"; d = {interval} (mean [95% interval])"
            where |= {"mean": interval.mean, "interval": (interval.low, interval.high)}
        elif len(d):
            measurement += f"; d = {d.iloc[0]:+.2f}"
        compared = [v for v in self.variants if v not in self.may_fail]
        reason = not_tested(runs, len(d), self.baselines, compared)
        if not reason and runs["epochs"].min() < self.min_epochs:
            reason = f"{listed([runs['epochs'].min()], 'epoch')}, fewer than {self.min_epochs}"
        if reason:
            return Evaluation(NOT_TESTED, reason, measurement, **where)
        verdict = side_of(interval, self.threshold)
        words = {HOLDS: ">", FAILS: "<=", INCONCLUSIVE: "straddles"}[verdict]
        why = f"interval [{interval.low:+.2f}, {interval.high:+.2f}] {words} {self.threshold:g}"
        return Evaluation(verdict, why, measurement, **where)


class _VariantAndBaseline:
    """The shared evaluate of the rules that judge one ``variant`` next to its ``baseline``:
    read both at the largest profile at which both are complete, then ``judge`` the runs."""

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        runs = store.largest(EXPERIMENTS[experiment], (self.variant, self.baseline))
        if runs.empty:
            return _not_run(f"{experiment}: {self.variant}, {self.baseline}")
        return self.judge(runs)


@dataclass(frozen=True)
class TrainingOutcome(_VariantAndBaseline):
    """``variant`` cannot train normally (``expect="fails"``) or trains (``"trains"``).

    Per seed, the best validation accuracy (the paper's Table 4 column; a diverged run at
    chance). With its 95% t interval over seeds and the line ``c`` = chance +
    :data:`CHANCE_MARGIN` points:

    * ``"fails"``: **holds** if the interval lies below ``c``; **does not hold** if above it;
    * ``"trains"``: **holds** if the interval lies above ``c``; **does not hold** if below it;
    * **inconclusive** if it straddles ``c``;
    * **not tested** at ``ci``, with fewer than :data:`MIN_SEEDS` seeds, or when ``baseline``
      (the same model at the setting the paper trains normally) did not learn: a scale at
      which nothing learns cannot say whether one setting breaks training. ``variant`` itself
      may sit at chance: that is what is measured.
    """

    variant: str
    baseline: str
    expect: str = "fails"

    def __post_init__(self):
        if self.expect not in ("fails", "trains"):
            raise ValueError(f"expect must be 'fails' or 'trains', got {self.expect!r}")

    @property
    def text(self) -> str:
        side = "below" if self.expect == "fails" else "above"
        return (
            f"95% t interval of {self.variant}'s best val accuracy over seeds (diverged at "
            f"chance). Holds if it lies {side} chance + {CHANCE_MARGIN:g}; does not hold if on "
            f"the other side; inconclusive otherwise. Not tested if {self.baseline} did not "
            f"learn, < {MIN_SEEDS} seeds, or at ci."
        )

    def judge(self, runs: pd.DataFrame) -> Evaluation:
        mine = runs[runs["variant"].astype(str) == self.variant]
        line = chance(mine["dataset"].iloc[0]) + CHANCE_MARGIN
        values = (
            mine["best_val_acc"]
            .astype(float)
            .where(mine["status"] != "diverged", line - CHANCE_MARGIN)
        )
        diverged = int((mine["status"] == "diverged").sum())
        measurement = (
            f"{self.variant}, {plural(len(mine))} ({diverged} diverged): best val "
            f"{mean_std(values, '%')}, last train loss {mean_std(mine['train_loss'])}, "
            f"test {mean_std(mine[TEST], '%')}"
        )
        where = provenance(runs, sorted(mine["seed"]))
        interval = paired_interval(values) if len(values) > 1 else None
        if interval is not None:
            measurement += f"; best val 95% interval [{interval.low:.2f}, {interval.high:.2f}]%"
            where |= {"mean": interval.mean, "interval": (interval.low, interval.high)}
        reason = not_tested(runs, len(mine), (self.baseline,))
        if reason:
            return Evaluation(NOT_TESTED, reason, measurement, **where)
        verdict = side_of(interval, line, higher=self.expect == "trains")
        why = (
            f"interval [{interval.low:.2f}, {interval.high:.2f}]% against chance + margin {line:g}%"
        )
        return Evaluation(verdict, why, measurement, **where)


@dataclass(frozen=True)
class NaNOutcome(_VariantAndBaseline):
    """``variant`` ends in NaN (a claim about the paper's 240-epoch runs). With ``k`` of ``n``
    seeds diverged (a non-finite loss):

    * **holds** if ``k > n / 2``;
    * **does not hold** if ``k = 0`` in runs of the paper's own length (profile ``paper``);
    * **not tested** if ``k = 0`` in shorter runs: "not reproduced within N steps" says what
      a finite run can say, and not that the paper's runs could not have diverged later; also
      at ``ci``, with fewer than :data:`MIN_SEEDS` seeds, or when ``baseline`` did not learn;
    * **inconclusive** otherwise (some seeds, not most).

    The measurement gives the 95% Clopper-Pearson interval of the NaN rate
    (``scipy.stats.binomtest``).
    """

    variant: str
    baseline: str = "BN"

    @property
    def text(self) -> str:
        return (
            f"k of n seeds of {self.variant} diverged. Holds if k > n / 2; does not hold if k = 0 "
            f"at the paper's length; k = 0 in a shorter run: not tested (not reproduced within N "
            f"steps); inconclusive otherwise. Not tested if {self.baseline} did not learn, "
            f"< {MIN_SEEDS} seeds, or at ci."
        )

    def judge(self, runs: pd.DataFrame) -> Evaluation:
        mine = runs[runs["variant"].astype(str) == self.variant]
        n, k = len(mine), int((mine["status"] == "diverged").sum())
        ci = stats.binomtest(k, n).proportion_ci(0.95)
        steps = mine["steps"].max() if "steps" in mine else np.nan
        measurement = (
            f"NaN in {k} of {plural(n)} (rate 95% interval [{ci.low:.2f}, {ci.high:.2f}]); "
            f"runs of {steps:,.0f} steps"
        )
        where = provenance(runs, sorted(mine["seed"]))
        where |= {"mean": k / n, "interval": (float(ci.low), float(ci.high))}
        reason = not_tested(runs, n, (self.baseline,))
        if reason:
            return Evaluation(NOT_TESTED, reason, measurement, **where)
        if k > n / 2:
            return Evaluation(HOLDS, f"NaN in {k} of {n} seeds", measurement, **where)
        if k == 0 and set(runs["profile"]) == {"paper"}:
            return Evaluation(
                FAILS, f"no NaN in {n} runs of the paper's length", measurement, **where
            )
        if k == 0:
            why = f"not reproduced within {steps:,.0f} steps (the paper: 240 epochs)"
            return Evaluation(NOT_TESTED, why, measurement, **where)
        return Evaluation(
            INCONCLUSIVE, f"NaN in {k} of {n} seeds: some, not most", measurement, **where
        )
