"""The rule that picks DN-B's default from the design study (experiment ``dnb_design_v2``).

The rule was written, with its tests, before any run of that study was trained; chapter 5
prints :data:`RULE` beside the table it was applied to. In words:

1. The study decides only where its control learned: BN at lr* must pass
   :func:`~dnbook.claims.verdicts.learned`. Otherwise nothing is decided ("not tested").
2. Each candidate (a DN-B variant other than the incumbent default, and not one of the
   book's own variants, which change the parameter count) is compared with the incumbent by
   the **paired differences** of test accuracy at the best-validation epoch, one per
   (learning rate, seed) that both have: lr* and 2.5 lr* pooled, so that the quantity is the
   mean effect over the two learning rates the paper's questions use. A diverged run counts
   at chance. Each variant needs :data:`~dnbook.claims.verdicts.MIN_SEEDS` seeds at each
   learning rate, or the study is not complete and nothing is decided.
3. A candidate replaces the incumbent only if the 95% t interval of its paired differences
   lies entirely above zero, and it learned at lr*. The incumbent wins every tie: the data
   must show a change is better before the layer changes.
4. Among the candidates that qualify, the one with the largest mean difference wins.

Confidence, said with the choice: a change whose interval starts more than
:data:`CLEAR_MARGIN` points above zero is a *clear* one; any other change is *narrow*; an
incumbent that stays because no interval excludes zero is kept *by default*, and the report
gives the widest interval, i.e. how large a difference the study could have missed.

**The second network** (:func:`confirm_on_second_model`, written before the MobileNetV2 runs
of the old default were trained). The chosen layer is checked on MobileNetV2 against the
layer it replaced, at the same two learning rates and seeds:

5. The same rule runs on MobileNetV2 alone, with the chosen layer as the incumbent and the
   replaced layer as the only candidate. If the replaced layer does not qualify, the choice
   is *confirmed* on the second network.
6. If it does qualify, the choice did not transfer, and the default is decided again by the
   same rule over both networks' pairs pooled (ResNet-18's and MobileNetV2's), with the
   chosen layer as the incumbent. The chapter reports both networks either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from dnbook.claims.verdicts import (
    HOLDS,
    MIN_SEEDS,
    TEST,
    Interval,
    chance,
    learned,
    paired_interval,
    side_of,
)

CLEAR_MARGIN = 1.0
"""Points above zero at which a winning interval's lower end makes the change *clear*: about
twice the binomial standard error of a test accuracy on the 10,000-image test set (0.45
points near 75%)."""

BOOK_OWN = "book's own"
"""Variants whose label contains this are reported, never chosen (they change #p)."""

RULE = (
    "Decided only if BN learned at lr*. Each DN-B variant is compared with the incumbent "
    "default by paired differences of test accuracy (one per learning rate and seed, lr* and "
    "2.5 lr* pooled; a diverged run counts at chance; at least 3 seeds at each lr). A variant "
    "replaces the incumbent only if the 95% t interval of its differences lies above zero and "
    "it learned at lr*; the incumbent wins ties; among qualifying variants the largest mean "
    "difference wins. The book's own variants are reported, never chosen."
)


@dataclass(frozen=True)
class DesignChoice:
    """The rule's outcome: the chosen variant (``None`` when nothing could be decided), why,
    how confident, and the table the decision read (one row per variant)."""

    default: str | None
    reason: str
    confidence: str
    table: pd.DataFrame


def split_label(label: str) -> tuple[str, float]:
    """``"DN-B r=4 lr 0.5"`` -> ``("DN-B r=4", 0.5)``: the registry's ``_lr_sweep`` labels."""
    name, _, lr = str(label).rpartition(" lr ")
    return name, float(lr)


def _accuracy(runs: pd.DataFrame, dataset: str) -> pd.Series:
    """Test accuracy per run, a diverged run at chance."""
    return runs[TEST].astype(float).where(runs["status"] != "diverged", chance(dataset))


def design_table(
    runs: pd.DataFrame, incumbent: str, dataset: str = "cifar10"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per variant: mean test accuracy at each learning rate, seeds, whether it learned at
    the lowest learning rate, and the paired difference to ``incumbent`` (mean and 95%
    interval); and the runs with ``name``, ``lr`` and ``acc`` columns added."""
    runs = runs.copy()
    names, lrs = zip(*(split_label(v) for v in runs["variant"].astype(str)), strict=True)
    runs["name"], runs["lr"] = names, lrs
    runs["acc"] = _accuracy(runs, dataset)
    low_lr = min(runs["lr"])
    base = runs[runs["name"] == incumbent].set_index(["lr", "seed"])["acc"]
    rows = []
    for name, group in runs.groupby("name", sort=False):
        row: dict[str, object] = {"variant": name}
        for lr, at_lr in group.groupby("lr"):
            row[f"lr {lr:g}"] = at_lr["acc"].mean()
            row[f"seeds at {lr:g}"] = at_lr["seed"].nunique()
        row["learned at lr*"] = learned(group[group["lr"] == low_lr], dataset)[0]
        diff = (group.set_index(["lr", "seed"])["acc"] - base).dropna()
        interval = paired_interval(diff.to_numpy()) if len(diff) >= 2 else None
        row["paired diff"] = interval
        row["pairs"] = len(diff)
        rows.append(row)
    return pd.DataFrame(rows), runs


def choose_default(
    runs: pd.DataFrame,
    incumbent: str,
    control: str = "BN",
    dataset: str = "cifar10",
    min_seeds: int = MIN_SEEDS,
    expected: Sequence[str] = (),
) -> DesignChoice:
    """Apply the rule (module docstring) to the stored runs of the design study.

    Args:
        runs: one row per run with ``variant`` (``"<name> lr <lr>"``), ``seed``, ``status``,
            ``train_loss`` and the test accuracy at the best-validation epoch.
        incumbent: the name (label without its lr) of today's default.
        control: the name of the baseline that must learn.
        dataset: for chance and the learned threshold. Default: ``"cifar10"``
        min_seeds: seeds every variant needs at each learning rate. Default: 3
        expected: the study's labels (``"<name> lr <lr>"``, the registry's); a label with no
            run stored makes the study incomplete, as one with too few seeds does. Default:
            ``()`` (only the stored labels are checked)
    """
    if runs.empty:
        return DesignChoice(None, "no runs stored", "not tested", pd.DataFrame())
    table, runs = design_table(runs, incumbent, dataset)
    # every (name, lr) the study registers or has runs of: a variant not trained yet counts
    cells = dict.fromkeys(map(split_label, expected))
    cells.update(dict.fromkeys(zip(runs["name"], runs["lr"], strict=True)))
    short = [
        f"{name} at lr {lr:g}"
        for name, lr in cells
        if runs[(runs["name"] == name) & (runs["lr"] == lr)]["seed"].nunique() < min_seeds
    ]
    if short:
        return DesignChoice(
            None,
            f"incomplete: fewer than {min_seeds} seeds for {', '.join(short)}",
            "not tested",
            table,
        )
    lrs = sorted(runs["lr"].unique())
    control_runs = runs[(runs["name"] == control) & (runs["lr"] == lrs[0])]
    ok, words = learned(control_runs, dataset)
    if not ok:
        return DesignChoice(None, f"{control} did not learn at lr*: {words}", "not tested", table)
    qualified = []
    for row in table.itertuples(index=False):
        name, interval = row.variant, row[table.columns.get_loc("paired diff")]
        if name in (incumbent, control) or BOOK_OWN in name or interval is None:
            continue
        if side_of(interval, 0.0) == HOLDS and row[table.columns.get_loc("learned at lr*")]:
            qualified.append((interval.mean, name, interval))
    if not qualified:
        widest = max(
            (
                max(abs(i.low), abs(i.high))
                for name, i in zip(table["variant"], table["paired diff"], strict=True)
                if isinstance(i, Interval) and name not in (incumbent, control)
            ),
            default=math.nan,
        )
        return DesignChoice(
            incumbent,
            f"no variant's interval lies above zero: {incumbent} stays",
            f"kept by default: the study could miss a difference of up to {widest:.1f} points",
            table,
        )
    _, name, interval = max(qualified)
    confidence = "clear" if interval.low > CLEAR_MARGIN else "narrow"
    return DesignChoice(
        name,
        f"{name} beats {incumbent} by {interval} points (paired, {interval.n} pairs)",
        confidence,
        table,
    )


SECOND_MODEL_RULE = (
    "On MobileNetV2 the same rule runs with today's default as the incumbent and the layer it "
    "replaced as the only candidate (lr* and 2.5 lr*, paired by seed). If the replaced layer "
    "does not qualify, the choice is confirmed. If it qualifies, the default is decided again "
    "by the same rule over both networks' pairs pooled, today's default the incumbent."
)

_SEED_OFFSET = 1_000
"""Added to the second network's seeds when the two networks' runs are pooled, so that a pair
is (network, lr, seed)."""


@dataclass(frozen=True)
class TransferCheck:
    """:func:`confirm_on_second_model`'s outcome: the verdict on the second network
    (``"confirmed"``, ``"did not transfer"`` or ``"not tested"``), the rule's choice on it
    alone, and where it did not transfer, the choice over both networks pooled."""

    verdict: str
    second: DesignChoice
    pooled: DesignChoice | None

    @property
    def default(self) -> str | None:
        """The default the rule leaves: the pooled choice where there is one."""
        return (self.pooled or self.second).default


def confirm_on_second_model(
    second: pd.DataFrame,
    first: pd.DataFrame,
    incumbent: str,
    challenger: str,
    control: str = "BN",
    dataset: str = "cifar10",
    expected: Sequence[str] = (),
) -> TransferCheck:
    """Rules 5 and 6 of the module docstring.

    Args:
        second: the second network's runs (``variant``, ``seed``, ``status``, ``train_loss``,
            test accuracy), labelled as in the study; only ``control``, ``incumbent`` and
            ``challenger`` are read.
        first: the study's runs on the first network, with the same labels for the two layers.
        incumbent: the chosen layer (today's default); challenger: the layer it replaced.
        control, dataset: as in :func:`choose_default`.
        expected: the second network's registered labels (incomplete until all are stored).
    """
    names = (control, incumbent, challenger)

    def only(runs: pd.DataFrame) -> pd.DataFrame:
        return runs[[split_label(v)[0] in names for v in runs["variant"].astype(str)]]

    second = only(second)
    choice = choose_default(second, incumbent, control, dataset, expected=expected)
    if choice.default is None:
        return TransferCheck("not tested", choice, None)
    if choice.default == incumbent:
        return TransferCheck("confirmed", choice, None)
    shifted = second.assign(seed=second["seed"] + _SEED_OFFSET)
    pooled = choose_default(pd.concat([only(first), shifted]), incumbent, control, dataset)
    return TransferCheck("did not transfer", choice, pooled)
