"""The paper's claims, each with the experiment that tests it and a verdict rule fixed in advance.

Every :class:`Claim` names what the paper says (a short quote or paraphrase, with its table or
section), the registry experiment whose stored runs test it, the chapter that shows those runs,
and a :class:`Rule` that turns the stored results into one of three verdicts: ``"holds"``,
``"does not hold"`` or ``"inconclusive"``. The rules below were written, with their thresholds,
before any ``cpu`` result of the experiments they judge existed; they are deliberately simple,
so that a reader can apply them by hand to the tables of chapters 6 to 10.

Rules common to every claim on trained models:

* **Largest profile.** A claim reads the runs of the largest profile (``paper``, ``gpu``,
  ``cpu``, ``ci``, in that order) that has every variant the claim compares; variants are never
  mixed across profiles.
* **Seeds.** Variants are compared seed by seed (the same seed gives both the same data subset,
  data order and augmentation draws). Fewer than :data:`MIN_SEEDS` seeds is always
  inconclusive, and so is the ``ci`` profile (one epoch of 512 images, one seed: a smoke test
  of the code path).
* **Diverged runs.** A run that stopped on a non-finite loss has no usable model: for accuracy
  comparisons it counts at chance accuracy, 100 / classes percent.
* **Nothing stored.** A claim whose runs are stored at no profile is inconclusive ("not run").

The rule of each kind of claim is in the docstring of its class: :class:`PairedGain` (one
variant is more accurate than another, by a margin), :class:`TrainingOutcome` (a variant fails
to train, or trains), :class:`CountOrder` and :class:`MultAddsIncrease` (exact counts of
parameters and Mult-Adds at the paper's size), :class:`MatchesPaperColumn` (the paper's #p
column), :class:`TestBatchInvariance` (Table 4's test batches) and :class:`ClassMeansAlike`
(Figure 5). :func:`ledger` evaluates every claim of :data:`CLAIMS` into one table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch

from dnbook.engine import results_dir
from dnbook.experiments import EXPERIMENTS
from dnbook.report import PROFILE_ORDER, experiment_runs

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
MIN_SEEDS = 3
# The paper's "Test" column: test accuracy of the weights with the best validation accuracy.
TEST = "test_acc_at_best_val"
# A run "failed to train" if its best validation accuracy is at most this many points above chance.
CHANCE_MARGIN = 2.0
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet100_32": 100, "imagenet100_64": 100}


@dataclass(frozen=True)
class Evaluation:
    """What a rule found: the verdict, the branch of the rule that produced it (with its
    numbers), the measurement, and where it comes from (profile, dataset, seeds, hardware)."""

    verdict: str
    reason: str
    measurement: str = ""
    profile: str = ""
    dataset: str = ""
    seeds: tuple[int, ...] = ()
    hardware: str = ""


class ResultsStore:
    """The results store as the rules read it: each experiment's runs at each profile, and the
    measurements of trained models (``dnbook.analysis.measure``), each read from disk once."""

    def __init__(self, results_root: str | Path | None = None):
        self.root = results_dir(results_root)
        self._runs: dict[tuple[str, str], pd.DataFrame] = {}

    def runs(self, experiment: str, profile: str) -> pd.DataFrame:
        """:func:`dnbook.report.experiment_runs` plus ``val_change``: the mean absolute change
        of the validation accuracy from one epoch to the next (points; chapter 7's measure of
        steadiness, NaN for a run of one epoch)."""
        key = (experiment, profile)
        if key not in self._runs:
            frame, results = experiment_runs(experiment, profile, self.root)
            if not frame.empty:
                change = {r["hash"]: _mean_change(r.get("curves") or []) for r in results}
                frame["val_change"] = frame["hash"].map(change)
            self._runs[key] = frame
        return self._runs[key]

    def largest(self, experiment: str, variants: Sequence[str]) -> pd.DataFrame:
        """The runs of ``variants`` at the largest profile that has every one of them (empty
        if none has)."""
        for profile in PROFILE_ORDER:
            frame = self.runs(experiment, profile)
            if not frame.empty and set(variants) <= set(frame["variant"].astype(str)):
                return frame[frame["variant"].astype(str).isin(variants)].reset_index(drop=True)
        return pd.DataFrame()

    def analyses(self, name: str, experiment: str, variant: str) -> list[dict]:
        """The stored measurements ``name`` of ``variant``'s trained models, at the largest
        profile that has any, one record (with ``config``, ``profile``, ``value``) per seed."""
        for profile in PROFILE_ORDER:
            labels = EXPERIMENTS[experiment].labels(profile)
            hashes = {h for h, label in labels.items() if label == variant}
            folder = self.root / profile / "analysis"
            records = [
                json.loads(path.read_text())
                for path in sorted(folder.glob(f"{name}-*.json"))
                if path.stem.removeprefix(f"{name}-") in hashes
            ]
            if records:
                return records
        return []


def _mean_change(curves: list[dict]) -> float:
    values = [row["val_acc"] for row in curves if row.get("val_acc") is not None]
    return float(np.mean(np.abs(np.diff(values)))) if len(values) > 1 else math.nan


class Rule(Protocol):
    """A verdict rule: ``text`` says it in words; ``evaluate`` reads its evidence and judges."""

    @property
    def text(self) -> str: ...

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation: ...


def _not_run(what: str) -> Evaluation:
    return Evaluation(INCONCLUSIVE, f"not run: nothing stored for {what} at any profile")


def _provenance(runs: pd.DataFrame, seeds: Sequence[int]) -> dict[str, Any]:
    """Profile, dataset (with its scale), seeds and hardware of ``runs``, for an Evaluation."""
    first = runs.iloc[0]
    width = ", ".join(f"{w:g}" for w in sorted(runs["width_mult"].unique()))
    epochs = sorted(runs["epochs"].unique())
    return {
        "profile": str(first["profile"]),
        "dataset": f"{first['dataset']} ({_train_size(first)} train, "
        f"{_listed(epochs, 'epoch')}, width {width})",
        "seeds": tuple(int(s) for s in seeds),
        "hardware": ", ".join(sorted(runs["hardware"].astype(str).unique())),
    }


def _mean_std(values: pd.Series | np.ndarray, unit: str = "") -> str:
    """``mean ± std`` of ``values`` (the value alone for one; the count is said elsewhere)."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}{unit}"
    return f"{values.mean():.2f}{unit} ± {values.std():.2f}"


def _plural(n: int, what: str = "seed") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _listed(values: Sequence[int], what: str) -> str:
    """``values`` listed with the noun: ``"1 epoch"``, ``"3 epochs"``, ``"1, 3 epochs"``."""
    return f"{', '.join(map(str, values))} {what}{'s' if list(values) != [1] else ''}"


def _small_sample(runs: pd.DataFrame, n: int) -> str | None:
    """The reason a sample is too small to judge, or ``None``."""
    if set(runs["profile"]) == {"ci"}:
        return "ci profile: a smoke test (one epoch of 512 images), not a measurement"
    if n < MIN_SEEDS:
        return f"{_plural(n)}, fewer than {MIN_SEEDS}"
    return None


@dataclass(frozen=True)
class PairedGain:
    """``plus`` is more accurate than ``minus``, by more than ``threshold`` points.

    Per seed, the difference ``d`` = sum of ``metric`` over the ``plus`` variants minus the sum
    over ``minus`` (or minus the best of ``minus`` when ``best_of_minus``); a difference of
    differences says "loses less than" (e.g. (DN-B at lr 0.5 - DN-B at 0.2) - (BN at 0.5 - BN
    at 0.2)); a negative ``threshold`` says "no worse than, within that margin". Then:

    * **holds** if every seed's ``d`` exceeds ``threshold``;
    * **does not hold** if no seed's ``d`` exceeds it;
    * **inconclusive** otherwise (the seeds disagree), and always with fewer than
      :data:`MIN_SEEDS` seeds compared, at the ``ci`` profile, with runs shorter than
      ``min_epochs`` (a claim about training curves needs curves), or when a variant named in
      ``learned`` has a mean ``metric`` at most :data:`CHANCE_MARGIN` points above chance
      (a claim such as "stable at a higher lr" says nothing if the baseline never learned).

    This is chapter 7's rule. With 3 seeds it is a weak test: two equally good variants put all
    three ``d`` on the same side of 0 one time in four. Only the seeds that every variant has
    are compared. A diverged run counts at chance accuracy when ``metric`` is an accuracy, and
    leaves its seed out otherwise.
    """

    plus: tuple[str, ...]
    minus: tuple[str, ...]
    threshold: float = 0.0
    metric: str = TEST
    best_of_minus: bool = False
    unit: str = "test accuracy, %"
    min_epochs: int = 1
    learned: tuple[str, ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        return self.plus + self.minus

    @property
    def text(self) -> str:
        minus = f"max({', '.join(self.minus)})" if self.best_of_minus else " - ".join(self.minus)
        d = f"d = {' + '.join(self.plus)} - {minus}"
        short = f", runs of < {self.min_epochs} epochs" if self.min_epochs > 1 else ""
        return (
            f"{d} per seed ({self.unit}). Holds if every d > {self.threshold:g}; does not hold "
            f"if no d > {self.threshold:g}; inconclusive otherwise, with < {MIN_SEEDS} seeds"
            f"{short}, or at ci."
        )

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        runs = store.largest(experiment, self.variants)
        if runs.empty:
            return _not_run(f"{experiment}: {', '.join(self.variants)}")
        return self.judge(runs)

    def values(self, runs: pd.DataFrame) -> pd.DataFrame:
        """``metric`` per seed (rows) and variant (columns), diverged runs at chance for an
        accuracy, and only the seeds that every variant has."""
        # a diverged run: chance accuracy (100 / classes), or no value for another metric
        instead = 100.0 / runs["dataset"].map(NUM_CLASSES) if "acc" in self.metric else np.nan
        values = runs[self.metric].astype(float).where(runs["status"] != "diverged", instead)
        table = (
            runs.assign(value=values, variant=runs["variant"].astype(str))
            .pivot_table(index="seed", columns="variant", values="value", aggfunc="first")
            .reindex(columns=list(dict.fromkeys(self.variants)))
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
        means = "; ".join(f"{v} {_mean_std(table[v])}" for v in dict.fromkeys(self.variants))
        diverged = int((runs["status"] == "diverged").sum())
        measurement = f"{_plural(len(table))}: {means} ({self.unit})" + (
            f"; {diverged} diverged run(s) at chance" if diverged else ""
        )
        if len(d):
            measurement += f"; d = {d.mean():+.2f}" + (
                f" ± {d.std():.2f} (min {d.min():+.2f}, max {d.max():+.2f})" if len(d) > 1 else ""
            )
        where = _provenance(runs, table.index)
        small = _small_sample(runs, len(d))
        if not small and runs["epochs"].min() < self.min_epochs:
            small = f"{_listed([runs['epochs'].min()], 'epoch')}, fewer than {self.min_epochs}"
        if not small and self.learned:
            chance = 100.0 / NUM_CLASSES[runs["dataset"].iloc[0]]
            idle = [v for v in self.learned if table[v].mean() <= chance + CHANCE_MARGIN]
            if idle:
                small = (
                    f"{', '.join(idle)} did not leave chance level (mean <= chance + "
                    f"{CHANCE_MARGIN:g} points)"
                )
        if small:
            return Evaluation(INCONCLUSIVE, small, measurement, **where)
        t = self.threshold
        if (d > t).all():
            return Evaluation(HOLDS, f"every seed's d > {t:g}", measurement, **where)
        if (d <= t).all():
            return Evaluation(FAILS, f"no seed's d > {t:g}", measurement, **where)
        reason = f"the seeds disagree: d from {d.min():+.2f} to {d.max():+.2f}"
        return Evaluation(INCONCLUSIVE, reason, measurement, **where)


@dataclass(frozen=True)
class TrainingOutcome:
    """``variant`` fails to train (``expect="fails"``) or trains normally (``"trains"``).

    A seed **failed** if its run diverged (a non-finite loss), or its last training loss is not
    below ln(classes) (no better than a uniform guess on its own training data), or its best
    validation accuracy is at most :data:`CHANCE_MARGIN` points above chance (100 / classes).
    With ``n`` seeds, ``k`` of which failed:

    * ``"fails"``: **holds** if ``k > n / 2``; **does not hold** if ``k = 0``;
    * ``"trains"``: **holds** if ``k = 0``; **does not hold** if ``k > n / 2``;
    * **inconclusive** otherwise, and always with ``n`` < :data:`MIN_SEEDS` or at ``ci``.
    """

    variant: str
    expect: str = "fails"

    def __post_init__(self):
        if self.expect not in ("fails", "trains"):
            raise ValueError(f"expect must be 'fails' or 'trains', got {self.expect!r}")

    @property
    def text(self) -> str:
        failed = (
            f"a seed fails if it diverged, its last train loss >= ln(classes), or its best val "
            f"accuracy <= chance + {CHANCE_MARGIN:g}"
        )
        if self.expect == "fails":
            verdicts = "Holds if most seeds fail; does not hold if none fails"
        else:
            verdicts = "Holds if no seed fails; does not hold if most seeds fail"
        return f"{failed}. {verdicts}; inconclusive otherwise, with < {MIN_SEEDS} seeds, or at ci."

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        runs = store.largest(experiment, (self.variant,))
        if runs.empty:
            return _not_run(f"{experiment}: {self.variant}")
        return self.judge(runs)

    @staticmethod
    def failed(runs: pd.DataFrame) -> pd.Series:
        """Per run: whether it failed to train (see the class docstring)."""
        classes = runs["dataset"].map(NUM_CLASSES).astype(float)
        return (
            (runs["status"] == "diverged")
            | ~(runs["train_loss"].astype(float) < np.log(classes))
            | ~(runs["best_val_acc"].astype(float) > 100.0 / classes + CHANCE_MARGIN)
        )

    def judge(self, runs: pd.DataFrame) -> Evaluation:
        failed = self.failed(runs)
        n, k = len(runs), int(failed.sum())
        finished = runs[runs["status"] == "finished"]
        diverged = int((runs["status"] == "diverged").sum())
        measurement = f"{k} of {_plural(n)} failed ({diverged} diverged)"
        if len(finished):
            measurement += (
                f"; the {_plural(len(finished), 'finished run')}: last train loss "
                f"{_mean_std(finished['train_loss'])}, best val "
                f"{_mean_std(finished['best_val_acc'], '%')}, test "
                f"{_mean_std(finished[TEST], '%')}"
            )
        where = _provenance(runs, sorted(runs["seed"]))
        small = _small_sample(runs, n)
        if small:
            return Evaluation(INCONCLUSIVE, small, measurement, **where)
        most, none = k > n / 2, k == 0
        if (most and self.expect == "fails") or (none and self.expect == "trains"):
            return Evaluation(HOLDS, f"{k} of {n} seeds failed", measurement, **where)
        if (none and self.expect == "fails") or (most and self.expect == "trains"):
            return Evaluation(FAILS, f"{k} of {n} seeds failed", measurement, **where)
        reason = f"{k} of {n} seeds failed: neither none nor most"
        return Evaluation(INCONCLUSIVE, reason, measurement, **where)


# ----------------------------------------------------------------------------------------------
# Exact counts at the paper's size (100 classes, one 224x224 image): no training, no seeds.

EXACT = {"profile": "exact count", "dataset": "ImageNet-100 shapes (100 classes, 224 px)"}


@cache
def count(model: str, norm: str, kind: str) -> int:
    """Parameters (``kind="params"``) or Mult-Adds (``"mult_adds"``) of ``model`` with ``norm``
    at the paper's size (100 classes, one 224x224 image), as :mod:`dnbook.complexity` counts
    them. The model is built on PyTorch's ``meta`` device: shapes without values, so neither
    the weights' initialization nor the forward pass computes anything, and the count takes a
    fraction of a second."""
    from dnbook.complexity import profile
    from dnbook.models import build_model

    with torch.device("meta"):
        network = build_model(model, num_classes=100, norm=norm)
    if kind == "params":
        return sum(p.numel() for p in network.parameters())
    return profile(network).mult_adds


@dataclass(frozen=True)
class CountOrder:
    """Exact parameter counts fall strictly along ``norms``: **holds** if
    #p(norms[0]) > #p(norms[1]) > ...; **does not hold** otherwise (never inconclusive)."""

    norms: tuple[str, ...]
    model: str = "mobilenet_v2"

    @property
    def text(self) -> str:
        return f"Holds if #p({') > #p('.join(self.norms)}) exactly; does not hold otherwise."

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        return self.judge({n: count(self.model, n, "params") for n in self.norms})

    def judge(self, params: Mapping[str, int]) -> Evaluation:
        counts = [params[n] for n in self.norms]
        measurement = ", ".join(f"{n} {params[n] / 1e6:.3f}M" for n in self.norms) + " (#p)"
        ordered = all(a > b for a, b in zip(counts, counts[1:], strict=False))
        verdict = HOLDS if ordered else FAILS
        reason = "strictly decreasing" if ordered else "not strictly decreasing"
        return Evaluation(verdict, reason, measurement, **EXACT)


@dataclass(frozen=True)
class MultAddsIncrease:
    """``norm`` adds little computation: **holds** if its Mult-Adds exceed ``base``'s by less
    than ``limit_pct`` percent; **does not hold** otherwise (never inconclusive)."""

    norm: str
    limit_pct: float
    base: str = "bn"
    model: str = "mobilenet_v2"

    @property
    def text(self) -> str:
        return (
            f"Holds if Mult-Adds({self.norm}) / Mult-Adds({self.base}) - 1 < "
            f"{self.limit_pct:g}%; does not hold otherwise."
        )

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        return self.judge({n: count(self.model, n, "mult_adds") for n in (self.norm, self.base)})

    def judge(self, mult_adds: Mapping[str, int]) -> Evaluation:
        extra = 100 * (mult_adds[self.norm] / mult_adds[self.base] - 1)
        measurement = (
            f"{self.norm} {mult_adds[self.norm] / 1e6:.2f}M, {self.base} "
            f"{mult_adds[self.base] / 1e6:.2f}M Mult-Adds: +{extra:.3f}%"
        )
        verdict = HOLDS if extra < self.limit_pct else FAILS
        reason = f"+{extra:.3f}% {'<' if verdict == HOLDS else '>='} {self.limit_pct:g}%"
        return Evaluation(verdict, reason, measurement, **EXACT)


@dataclass(frozen=True)
class MatchesPaperColumn:
    """The paper's #p column: **holds** if every row of
    :data:`dnbook.complexity.PAPER_TABLE` is our exact parameter count rounded or truncated to
    0.01M (:func:`dnbook.complexity.agrees_with_paper`); **does not hold** if any row is not."""

    @property
    def text(self) -> str:
        return "Holds if every paper #p is ours rounded or truncated to 0.01M; else does not hold."

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        from dnbook.complexity import PAPER_TABLE

        rows = {(r.model, r.norm) for r in PAPER_TABLE}
        return self.judge({row: count(*row, "params") for row in rows})

    def judge(self, params: Mapping[tuple[str, str], int]) -> Evaluation:
        from dnbook.complexity import PAPER_TABLE, agrees_with_paper

        rows = [r for r in PAPER_TABLE if (r.model, r.norm) in params]
        wrong = [r for r in rows if not agrees_with_paper(params[r.model, r.norm], r.params_m)]
        measurement = f"{len(rows) - len(wrong)} of {len(rows)} rows agree" + "".join(
            f"; {r.model} {r.norm}: ours {params[r.model, r.norm] / 1e6:.3f}M, paper "
            f"{r.params_m:.2f}M ({r.source})"
            for r in wrong
        )
        verdict = FAILS if wrong else HOLDS
        reason = f"{len(wrong)} row(s) disagree" if wrong else "every row agrees"
        return Evaluation(verdict, reason, measurement, **EXACT)


# ----------------------------------------------------------------------------------------------
# Measurements of trained models, stored by chapters 8 and 10 through dnbook.analysis.measure.


ACCURACY_KEYS = ("accuracy", "test_acc", "acc")


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _accuracy_by_batch(value: Any) -> dict[int, float]:
    """Test accuracy per test batch size from a stored ``test_batch`` value, read tolerantly.

    Chapter 8 stores ``{"eval": {"1": {"accuracy": 83.9, ...}, "2": ...}, "train": ...}``
    (evaluation mode is the paper's setting; training mode is its contrast). Also understood:
    ``{"1": 83.9, ...}``; the same under ``"accuracy"`` or ``"test_acc"``;
    ``{"batch_sizes": [...], "accuracy": [...]}``; a list of ``{"batch_size", "accuracy"}``
    records (``"test_acc"`` or ``"acc"`` accepted for the accuracy). Anything else: ``{}``.
    """
    if isinstance(value, list):
        return {
            int(row["batch_size"]): acc
            for row in value
            if isinstance(row, dict) and "batch_size" in row and (acc := _accuracy(row)) is not None
        }
    if not isinstance(value, dict):
        return {}
    if "batch_sizes" in value:
        accuracies = next((value[k] for k in ACCURACY_KEYS if k in value), [])
        return {int(b): float(a) for b, a in zip(value["batch_sizes"], accuracies, strict=False)}
    for key in ("eval", *ACCURACY_KEYS):
        if isinstance(value.get(key), dict):
            return _accuracy_by_batch(value[key])
    table = {}
    for key, entry in value.items():
        accuracy = _accuracy(entry) if isinstance(entry, dict) else _number(entry)
        if str(key).isdigit() and accuracy is not None:
            table[int(key)] = accuracy
    return table


def _accuracy(row: dict) -> float | None:
    """The first of :data:`ACCURACY_KEYS` that ``row`` has, as a float."""
    return next((_number(row[k]) for k in ACCURACY_KEYS if k in row), None)


def _train_size(config) -> str:
    """The training images of a run, for the ledger's dataset column (``None``: the whole
    split)."""
    n_train = config["n_train"]
    return "all" if n_train is None or n_train != n_train else f"{int(n_train):,}"


def _hardware(record: dict) -> str:
    """The GPU of a stored record, else its CPU."""
    hardware = record.get("hardware") or {}
    return str(hardware.get("gpu") or hardware.get("cpu") or "?")


def _analysis_provenance(records: list[dict]) -> dict[str, Any]:
    configs = [r["config"] for r in records]
    first = configs[0]
    return {
        "profile": str(records[0]["profile"]),
        "dataset": f"{first['dataset']} ({_train_size(first)} train, "
        f"{_listed([first['epochs']], 'epoch')}, width {first['width_mult']:g})",
        "seeds": tuple(sorted(int(c["seed"]) for c in configs)),
        "hardware": ", ".join(sorted({_hardware(r) for r in records})),
    }


def _small_analysis(records: list[dict]) -> str | None:
    if {r["profile"] for r in records} == {"ci"}:
        return "ci profile: a smoke test (one epoch of 512 images), not a measurement"
    if len(records) < MIN_SEEDS:
        return f"{_plural(len(records), 'model')} measured, fewer than {MIN_SEEDS}"
    return None


@dataclass(frozen=True)
class _Measured:
    """A rule on the stored measurement :attr:`name` of ``variant``'s trained models."""

    variant: str
    name: ClassVar[str]

    def evaluate(self, experiment: str, store: ResultsStore) -> Evaluation:
        records = store.analyses(self.name, experiment, self.variant)
        if not records:
            return Evaluation(INCONCLUSIVE, f"not measured yet ({self.name} of {self.variant})")
        return self.judge(records)

    def judge(self, records: list[dict]) -> Evaluation:
        raise NotImplementedError


@dataclass(frozen=True)
class TestBatchInvariance(_Measured):
    """The test batch size does not change the accuracy of ``variant``'s trained models
    (measurement ``"test_batch"``: test accuracy at several test batch sizes, per seed).

    With ``spread`` = the largest minus the smallest accuracy over the test batch sizes of one
    model: **holds** if every model's spread is at most ``tolerance`` points; **does not hold**
    if any model's spread exceeds it; **inconclusive** if nothing is measured, fewer than
    :data:`MIN_SEEDS` models, fewer than two batch sizes, or only at ``ci``.
    """

    __test__ = False  # not a pytest class, despite its name
    name = "test_batch"

    tolerance: float = 0.5

    @property
    def text(self) -> str:
        return (
            f"spread = max - min test accuracy over the test batch sizes, per model. Holds if "
            f"every spread <= {self.tolerance:g} points; does not hold if any exceeds it; "
            f"inconclusive if not measured, < {MIN_SEEDS} models, or at ci."
        )

    def judge(self, records: list[dict]) -> Evaluation:
        tables = [_accuracy_by_batch(r["value"]) for r in records]
        if any(len(t) < 2 for t in tables):
            return Evaluation(INCONCLUSIVE, "stored value not understood (fewer than 2 batches)")
        spreads = [max(t.values()) - min(t.values()) for t in tables]
        batches = sorted({b for t in tables for b in t})
        per_batch = "; ".join(
            f"batch {b}: {_mean_std(np.array([t[b] for t in tables if b in t]))}" for b in batches
        )
        measurement = (
            f"{_plural(len(tables), 'model')}, test accuracy % at {per_batch}; largest spread "
            f"{max(spreads):.3f} points"
        )
        where = _analysis_provenance(records)
        small = _small_analysis(records)
        if small:
            return Evaluation(INCONCLUSIVE, small, measurement, **where)
        if max(spreads) <= self.tolerance:
            reason = f"every spread <= {self.tolerance:g} (largest {max(spreads):.3f})"
            return Evaluation(HOLDS, reason, measurement, **where)
        reason = f"a spread of {max(spreads):.3f} > {self.tolerance:g}"
        return Evaluation(FAILS, reason, measurement, **where)


def _median_cohen_f(value: dict, layer: str, param: str) -> float:
    """The median over channels of Cohen's f of one layer's ``param`` (``"alpha"`` or
    ``"lambda"``) in a stored ``affine_by_class`` value: how far apart the class means of a
    channel are, in units of the spread within a class. From the one-way ANOVA ratio
    F = between-class mean square / within-class mean square, f = sqrt(max(F - 1, 0) (k - 1) /
    (k n0)), with n0 = (n - sum n_k^2 / n) / (k - 1) the (unbalanced) class size."""
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
    cohen = np.sqrt(np.clip(f_ratio - 1, 0, None) * (k - 1) / (k * n0))
    return float(np.nanmedian(cohen)) if np.isfinite(cohen).any() else math.nan


@dataclass(frozen=True)
class ClassMeansAlike(_Measured):
    """The class means of DN-B's scale and shift are almost the same (measurement
    ``"affine_by_class"`` of chapter 10: per class, the mean and standard deviation over the
    class's test images of every channel's alpha and lambda, at the first and last DN layers).

    For each model (seed) and each of the four panels (DN-start and DN-end, alpha and lambda),
    ``f`` = the median over channels of Cohen's f (class-mean spread over within-class spread;
    Cohen's thresholds: 0.10 a small effect, 0.25 a medium one). Then:

    * **holds** if every panel of every model has ``f < 0.10``;
    * **does not hold** if some panel has ``f >= 0.25`` in every model;
    * **inconclusive** otherwise, and with fewer than :data:`MIN_SEEDS` models, only at ``ci``,
      or a stored value this rule cannot read.
    """

    name = "affine_by_class"

    alike: float = 0.10
    different: float = 0.25

    @property
    def text(self) -> str:
        return (
            f"f = median over channels of Cohen's f, per model and panel (DN-start/end x "
            f"alpha/lambda). Holds if every f < {self.alike:g}; does not hold if some panel has "
            f"f >= {self.different:g} in every model; inconclusive otherwise, with < {MIN_SEEDS} "
            "models, or at ci."
        )

    def judge(self, records: list[dict]) -> Evaluation:
        try:
            table = pd.DataFrame(
                [
                    {"panel": f"{layer} {param}", "f": _median_cohen_f(r["value"], layer, param)}
                    for r in records
                    for layer in r["value"]["layers"]
                    for param in ("alpha", "lambda")
                ]
            )
        except (KeyError, TypeError, ValueError) as err:
            return Evaluation(INCONCLUSIVE, f"stored value not understood ({err!r})")
        by_panel = table.groupby("panel", sort=False)["f"]
        measurement = f"{_plural(len(records), 'model')}, median Cohen's f: " + "; ".join(
            f"{panel} {_mean_std(values.to_numpy())}" for panel, values in by_panel
        )
        where = _analysis_provenance(records)
        small = _small_analysis(records)
        if small:
            return Evaluation(INCONCLUSIVE, small, measurement, **where)
        if (table["f"] < self.alike).all():
            reason = f"every f < {self.alike:g} (largest {table['f'].max():.3f})"
            return Evaluation(HOLDS, reason, measurement, **where)
        different = [panel for panel, values in by_panel if (values >= self.different).all()]
        if different:
            reason = f"f >= {self.different:g} in every model at {', '.join(different)}"
            return Evaluation(FAILS, reason, measurement, **where)
        reason = f"f from {table['f'].min():.3f} to {table['f'].max():.3f}: neither"
        return Evaluation(INCONCLUSIVE, reason, measurement, **where)


# ----------------------------------------------------------------------------------------------
# The ledger.


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Args:
        id: a short name.
        paper: the paper's words, quoted or paraphrased, with the paper's own numbers.
        ref: where the paper says it.
        experiments: the registry experiments that train what the claim compares; the first is
            the one whose runs are read (the others share the same configurations). Empty for
            a claim about exact counts.
        chapter: the notebook that shows the runs (file name in ``notebooks/``).
        rule: the verdict rule, fixed before any result was read.
    """

    id: str
    paper: str
    ref: str
    experiments: tuple[str, ...]
    chapter: str
    rule: Rule

    def evaluate(self, store: ResultsStore | None = None) -> Evaluation:
        """The rule applied to the stored results (``store``: default, the engine's results)."""
        store = ResultsStore() if store is None else store
        return self.rule.evaluate(self.experiments[0] if self.experiments else "", store)


CH6, CH7, CH8 = "06_dnc_failure.ipynb", "07_mobilenetv2.ipynb", "08_robustness.ipynb"
CH9, CH10 = "09_ablation_r_g.ipynb", "10_affine_parameters.ipynb"
CH5 = "05_dynamic_normalization.ipynb"
BN16 = "dnb:r=16,g=1"


def _drop_less(better: str, worse: str, high: str, low: str) -> PairedGain:
    """``better`` loses less accuracy than ``worse`` from setting ``low`` to ``high`` (variant
    label suffixes): d = (better@high - better@low) - (worse@high - worse@low)."""
    return PairedGain(
        plus=(f"{better} {high}", f"{worse} {low}"), minus=(f"{better} {low}", f"{worse} {high}")
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "dnc_fc1_nan",
        "DN-C can't train normally: NaN (E[X] and Std[X] branches merged after FC1, lr 0.1)",
        "Abstract; Table 1, footnote 1",
        ("table1", "dnc_failure"),
        CH6,
        TrainingOutcome("DN-C fc1 lr 0.1", "fails"),
    ),
    Claim(
        "dnc_fc2_nan",
        "DN-C can't train normally: NaN (branches merged after FC2, lr 0.1)",
        "Abstract; Table 1, footnote 2",
        ("table1", "dnc_failure"),
        CH6,
        TrainingOutcome("DN-C fc2 lr 0.1", "fails"),
    ),
    Claim(
        "dnb_g1_beats_bn",
        "DN-B(16,1) improves MobileNetV2's accuracy over BN (paper: test 84.08 vs 82.50)",
        "Tables 1, 2; Sec. 4.4 (g)",
        ("table2", "table1"),
        CH7,
        PairedGain(("DN-B(16,1)",), ("BN",)),
    ),
    Claim(
        "dnb_oup_beats_bn",
        "DN-B(16,oup) has higher test accuracy than BN (paper: 84.74 vs 82.50)",
        "Tables 1, 2; Figure 1",
        ("table2", "table1", "fig1"),
        CH7,
        PairedGain(("DN-B(16,oup)",), ("BN",)),
    ),
    Claim(
        "dnb_more_than_2",
        "DN-B improves the accuracy of MobileNetV2 by more than 2% (paper: DN-B(16,oup) "
        "84.74 vs BN 82.50; read as percentage points)",
        "Abstract",
        ("table2",),
        CH7,
        PairedGain(("DN-B(16,oup)",), ("BN",), threshold=2.0),
    ),
    Claim(
        "dnb_extra_madds",
        "... with only 0.6% additional Mult-Adds (paper: 301.66M vs 299.62M)",
        "Abstract; Table 1",
        (),
        CH7,
        MultAddsIncrease("dnb:r=16,g=oup", limit_pct=0.7),
    ),
    Claim(
        "fig1_stable_val",
        "Compared with BN, DN-B(16,oup) has more stable validation accuracy during training "
        "(mean |change| of val accuracy from one epoch to the next: BN's minus DN-B's)",
        "Figure 1",
        ("fig1",),
        CH7,
        PairedGain(
            ("BN",),
            ("DN-B(16,oup)",),
            metric="val_change",
            unit="mean |val accuracy change| per epoch, points",
            min_epochs=5,
        ),
    ),
    Claim(
        "se_hurts",
        "Using an SE block directly in front of BN reduces the accuracy (paper: 82.00 vs 82.50)",
        "Table 2; Sec. 4.1",
        ("table2",),
        CH7,
        PairedGain(("BN",), ("SE+BN",)),
    ),
    Claim(
        "dnb_fewer_params_than_se",
        "Compared with SE and BN together, DN reduces the number of parameters (paper: 3.03M "
        "vs 3.73M) ...",
        "Sec. 1; Table 2",
        (),
        CH7,
        CountOrder(("se:r=16", BN16)),
    ),
    Claim(
        "dnb_keeps_se_accuracy",
        "... and maintains the accuracy (DN-B(16,1) within 1 point of SE+BN, or better; paper: "
        "84.08 vs 82.00)",
        "Sec. 1; Table 2",
        ("table2",),
        CH7,
        PairedGain(("DN-B(16,1)",), ("SE+BN",), threshold=-1.0),
    ),
    Claim(
        "paper_params_column",
        "The #p column of Tables 1-4 and 6-7 (our exact counts, rounded or truncated)",
        "Tables 1-4, 6-7",
        (),
        CH5,
        MatchesPaperColumn(),
    ),
    Claim(
        "bn_lr05_drops",
        "At lr 0.5 instead of 0.2, BN's test accuracy decreases (paper: by 8+%, 74.12 vs 82.50)",
        "Table 8; Sec. 4.4 (lr)",
        ("table8",),
        CH8,
        PairedGain(("BN lr 0.2",), ("BN lr 0.5",)),
    ),
    Claim(
        "dnb_lr05_stable",
        "DN-B is stable at lr 0.5: its test accuracy decreases only a little (paper: by 0.84; "
        "rule: by less than 1 point)",
        "Table 8; Abstract",
        ("table8",),
        CH8,
        PairedGain(
            ("DN-B(16,1) lr 0.5",),
            ("DN-B(16,1) lr 0.2",),
            threshold=-1.0,
            learned=("DN-B(16,1) lr 0.2",),
        ),
    ),
    Claim(
        "dnb_lr05_loses_less",
        "From lr 0.2 to 0.5, DN-B loses less test accuracy than BN (paper: 0.84 vs 8.38)",
        "Table 8; Abstract",
        ("table8",),
        CH8,
        _drop_less("DN-B(16,1)", "BN", "lr 0.5", "lr 0.2"),
    ),
    Claim(
        "dnb_lr05_beats_bn_lr02",
        "The DN-B model with the higher lr (0.5) is more accurate than the BN model with the "
        "lower lr (0.2) (paper: 83.24 vs 82.50)",
        "Table 8; Sec. 4.4 (lr)",
        ("table8",),
        CH8,
        PairedGain(("DN-B(16,1) lr 0.5",), ("BN lr 0.2",)),
    ),
    Claim(
        "res18_lr08",
        "With the higher lr 0.8, ResNet-18 with DN-B keeps better accuracy than with BN "
        "(paper: 84.78 vs 82.88)",
        "Table 3; Sec. 4.2",
        ("table3_resnet18",),
        CH8,
        PairedGain(("DN-B(16,oup) lr 0.8",), ("BN lr 0.8",)),
    ),
    Claim(
        "res18_lr_loses_less",
        "From lr 0.2 to 0.8, ResNet-18 with DN-B loses less accuracy than with BN (paper: "
        "+0.42 vs -2.12, with r = 4 at 0.2 and r = 16 at 0.8; ours r = 16 at both)",
        "Table 3; Sec. 4.2",
        ("table3_resnet18",),
        CH8,
        _drop_less("DN-B(16,oup)", "BN", "lr 0.8", "lr 0.2"),
    ),
    Claim(
        "res34_b4",
        "At batch 4, ResNet-34 with DN-B is more accurate than with BN (paper: 77.10 vs 53.20)",
        "Table 3; Sec. 4.2",
        ("table3_resnet34",),
        CH8,
        PairedGain(("DN-B(16,oup) b4",), ("BN b4",)),
    ),
    Claim(
        "res34_b8",
        "At batch 8, ResNet-34 with DN-B is more accurate than with BN (paper: 83.50 vs 82.32)",
        "Table 3; Sec. 4.2",
        ("table3_resnet34",),
        CH8,
        PairedGain(("DN-B(16,oup) b8",), ("BN b8",)),
    ),
    Claim(
        "bn_b8_fails",
        "With training batch 8 (lr 0.2), the BN model cannot train normally (paper: best val "
        "2.50%)",
        "Table 4; Sec. 4.4 (batch size)",
        ("table4",),
        CH8,
        TrainingOutcome("BN b8", "fails"),
    ),
    Claim(
        "dnb_b8_trains",
        "With training batch 8, the DN-B model maintains the accuracy for normal training "
        "(paper: best val 79.60%)",
        "Table 4; Sec. 4.4 (batch size)",
        ("table4",),
        CH8,
        TrainingOutcome("DN-B(16,1) b8", "trains"),
    ),
    Claim(
        "test_batch",
        "With a small test batch (1, 2 instead of 32), DN-B's accuracy decreases very little "
        "(paper: 83.92, 84.02, 84.08; rule: spread <= 0.5 points)",
        "Table 4; Sec. 4.4 (batch size)",
        ("table4",),
        CH8,
        TestBatchInvariance("DN-B(16,1) b64"),
    ),
    Claim(
        "small_batch_dnb",
        "Compared with BN, DN-B has stable performance with a smaller batch size: from batch "
        "64 to 4 it loses less accuracy than BN",
        "Abstract; Sec. 5",
        ("small_batch",),
        CH8,
        _drop_less("DN-B(16,1)", "BN", "b4", "b64"),
    ),
    Claim(
        "small_batch_gn",
        "GN keeps the network's performance when the batch size is small: from batch 64 to 4 "
        "it loses less accuracy than BN (the paper citing Wu & He, 2018)",
        "Sec. 1",
        ("small_batch",),
        CH8,
        _drop_less("GN", "BN", "b4", "b64"),
    ),
    Claim(
        "small_batch_dnb_vs_gn_mabn",
        "Not claimed by the paper (issue 5's comparison): at batch 4, DN-B is within 1 point "
        "of the better of GN and MABN, or better",
        "Sec. 1 (context)",
        ("small_batch",),
        CH8,
        PairedGain(("DN-B(16,1) b4",), ("GN b4", "MABN b4"), threshold=-1.0, best_of_minus=True),
    ),
    Claim(
        "r_params",
        "When r is smaller, the parameters of the model increase (paper: 3.72M, 3.03M, 2.69M "
        "at r = 8, 16, 32)",
        "Table 6; Sec. 4.4 (r)",
        (),
        CH9,
        CountOrder(("dnb:r=8,g=1", BN16, "dnb:r=32,g=1")),
    ),
    Claim(
        "r_accuracy",
        "... and the accuracy of the model improves (r = 8 against r = 32; paper: 84.26 vs 83.36)",
        "Table 6; Sec. 4.4 (r)",
        ("table6",),
        CH9,
        PairedGain(("DN-B(8,1)",), ("DN-B(32,1)",)),
    ),
    Claim(
        "r16_tradeoff",
        "r balances accuracy and cost: r = 16 (the default) is within 1 point of r = 8, or "
        "better, with fewer parameters (paper: 84.08 vs 84.26)",
        "Table 6; Sec. 4.4 (r)",
        ("table6",),
        CH9,
        PairedGain(("DN-B(16,1)",), ("DN-B(8,1)",), threshold=-1.0),
    ),
    Claim(
        "g_oup_best",
        "When g is the number of output channels, the model has the highest accuracy (against "
        "the best of g = 1, 2, 4; paper: 84.74 vs 84.08)",
        "Table 7; Sec. 4.4 (g)",
        ("table7",),
        CH9,
        PairedGain(
            ("DN-B(16,oup)",), ("DN-B(16,1)", "DN-B(16,2)", "DN-B(16,4)"), best_of_minus=True
        ),
    ),
    Claim(
        "affine_means_g1",
        "The mean value of the affine parameters between classes is almost the same "
        "(DN-B(16,1), as the text says)",
        "Figure 5; Sec. 4.4",
        ("fig5",),
        CH10,
        ClassMeansAlike("DN-B(16,1)"),
    ),
    Claim(
        "affine_means_oup",
        "The same for DN-B(16,oup), the model of Table 9",
        "Figure 5; Table 9",
        ("fig5",),
        CH10,
        ClassMeansAlike("DN-B(16,oup)"),
    ),
)


def ledger(
    claims: Sequence[Claim] = CLAIMS, results_root: str | Path | None = None
) -> pd.DataFrame:
    """Every claim evaluated: one row per claim with its id, the paper's words and reference,
    the measurement and where it comes from (profile, dataset, seeds, hardware), the verdict,
    the branch of the rule that produced it, the rule itself and the chapter."""
    store = ResultsStore(results_root)
    rows = []
    for claim in claims:
        found = claim.evaluate(store)
        rows.append(
            {
                "id": claim.id,
                "claim": claim.paper,
                "paper ref": claim.ref,
                "experiment": ", ".join(claim.experiments) or "(exact count)",
                "profile": found.profile or "–",
                "dataset": found.dataset or "–",
                "seeds": ", ".join(map(str, found.seeds)) or "–",
                "hardware": found.hardware or "–",
                "measurement": found.measurement or "–",
                "verdict": found.verdict,
                "why": found.reason,
                "rule": claim.rule.text,
                "chapter": claim.chapter,
            }
        )
    return pd.DataFrame(rows)
