"""The ledger's data: every claim of the paper, with the experiment that tests it, the
chapter that shows it and its verdict rule (fixed in code before the runs it judges), and
:func:`ledger`, which evaluates them all into one table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from dnbook.claims.exact import CountOrder, MatchesPaperColumn, MultAddsIncrease
from dnbook.claims.measured import ClassMeansAlike, TestBatchInvariance
from dnbook.claims.rules import NaNOutcome, PairedGain, TrainingOutcome
from dnbook.claims.verdicts import Evaluation
from dnbook.engine.store import ResultsStore
from dnbook.experiments import EXPERIMENTS

Rule = (
    PairedGain
    | TrainingOutcome
    | NaNOutcome
    | CountOrder
    | MultAddsIncrease
    | MatchesPaperColumn
    | TestBatchInvariance
    | ClassMeansAlike
)
"""A verdict rule: ``text`` says it in words; ``evaluate(experiment, store)`` reads its
evidence and returns an :class:`~dnbook.claims.verdicts.Evaluation`."""


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
    label suffixes): d = (better@high - better@low) - (worse@high - worse@low). Both must have
    learned at ``low``; at ``high`` either may fail, since that loss is what is measured."""
    return PairedGain(
        plus=(f"{better} {high}", f"{worse} {low}"),
        minus=(f"{better} {low}", f"{worse} {high}"),
        baseline=(f"{worse} {low}", f"{better} {low}"),
        may_fail=(f"{better} {high}", f"{worse} {high}"),
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "dnc_fc1_nan",
        "DN-C can't train normally: NaN (E[X] and Std[X] branches merged after FC1, lr 0.1)",
        "Abstract; Table 1, footnote 1",
        ("table1", "dnc_failure"),
        CH6,
        NaNOutcome("DN-C fc1 lr 0.1"),
    ),
    Claim(
        "dnc_fc2_nan",
        "DN-C can't train normally: NaN (branches merged after FC2, lr 0.1)",
        "Abstract; Table 1, footnote 2",
        ("table1", "dnc_failure"),
        CH6,
        NaNOutcome("DN-C fc2 lr 0.1"),
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
        PairedGain(("DN-B(16,1)",), ("SE+BN",), threshold=-1.0, baseline=("BN",)),
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
        PairedGain(("BN lr 0.2",), ("BN lr 0.5",), may_fail=("BN lr 0.5",)),
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
            baseline=("DN-B(16,1) lr 0.2",),
            may_fail=("DN-B(16,1) lr 0.5",),
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
        PairedGain(("DN-B(16,1) lr 0.5",), ("BN lr 0.2",), may_fail=("DN-B(16,1) lr 0.5",)),
    ),
    Claim(
        "res18_lr08",
        "With the higher lr 0.8, ResNet-18 with DN-B keeps better accuracy than with BN "
        "(paper: 84.78 vs 82.88)",
        "Table 3; Sec. 4.2",
        ("table3_resnet18",),
        CH8,
        PairedGain(
            ("DN-B(16,oup) lr 0.8",),
            ("BN lr 0.8",),
            baseline=("BN lr 0.2",),
            may_fail=("DN-B(16,oup) lr 0.8", "BN lr 0.8"),
        ),
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
        PairedGain(
            ("DN-B(16,oup) b4",),
            ("BN b4",),
            baseline=("BN b64",),
            may_fail=("DN-B(16,oup) b4", "BN b4"),
        ),
    ),
    Claim(
        "res34_b8",
        "At batch 8, ResNet-34 with DN-B is more accurate than with BN (paper: 83.50 vs 82.32)",
        "Table 3; Sec. 4.2",
        ("table3_resnet34",),
        CH8,
        PairedGain(
            ("DN-B(16,oup) b8",),
            ("BN b8",),
            baseline=("BN b64",),
            may_fail=("DN-B(16,oup) b8", "BN b8"),
        ),
    ),
    Claim(
        "bn_b8_fails",
        "With training batch 8 (lr 0.2), the BN model cannot train normally (paper: best val "
        "2.50%)",
        "Table 4; Sec. 4.4 (batch size)",
        ("table4",),
        CH8,
        TrainingOutcome("BN b8", "BN b64", "fails"),
    ),
    Claim(
        "dnb_b8_trains",
        "With training batch 8, the DN-B model maintains the accuracy for normal training "
        "(paper: best val 79.60%)",
        "Table 4; Sec. 4.4 (batch size)",
        ("table4",),
        CH8,
        TrainingOutcome("DN-B(16,1) b8", "DN-B(16,1) b64", "trains"),
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
        PairedGain(
            ("DN-B(16,1) b4",),
            ("GN b4", "MABN b4"),
            threshold=-1.0,
            best_of_minus=True,
            baseline=("BN b64",),
        ),
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
        PairedGain(("DN-B(8,1)",), ("DN-B(32,1)",), baseline=("DN-B(16,1)",)),
    ),
    Claim(
        "r16_tradeoff",
        "r balances accuracy and cost: r = 16 (the default) is within 1 point of r = 8, or "
        "better, with fewer parameters (paper: 84.08 vs 84.26)",
        "Table 6; Sec. 4.4 (r)",
        ("table6",),
        CH9,
        PairedGain(("DN-B(16,1)",), ("DN-B(8,1)",), threshold=-1.0, baseline=("DN-B(16,1)",)),
    ),
    Claim(
        "g_oup_best",
        "When g is the number of output channels, the model has the highest accuracy (against "
        "the best of g = 1, 2, 4; paper: 84.74 vs 84.08)",
        "Table 7; Sec. 4.4 (g)",
        ("table7",),
        CH9,
        PairedGain(
            ("DN-B(16,oup)",),
            ("DN-B(16,1)", "DN-B(16,2)", "DN-B(16,4)"),
            best_of_minus=True,
            baseline=("DN-B(16,1)",),
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
    the measurement, its mean and 95% interval (NaN where a rule has none), where it comes from
    (profile, dataset, seeds, hardware), the verdict, the branch of the rule that produced it,
    the rule itself and the chapter."""
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
                "mean": found.mean,
                "low": found.interval[0],
                "high": found.interval[1],
                "verdict": found.verdict,
                "why": found.reason,
                "rule": claim.rule.text,
                "chapter": claim.chapter,
            }
        )
    return pd.DataFrame(rows)


def reread(
    ids: Sequence[str],
    experiment: str,
    old: str,
    new: str,
    results_root: str | Path | None = None,
) -> pd.DataFrame:
    """The rules of the claims ``ids`` applied, unchanged, to another experiment's runs, in
    which the variant the claims call ``old`` is called ``new`` (see
    :meth:`PairedGain.relabeled`): a sensitivity check of one reading of the paper, such as
    ``table8_normalized_input`` (Table 8 with DN-B's SC-module pooling the normalized
    feature). The rows are :func:`ledger`'s, evaluated on ``experiment``; they are not the
    ledger's verdicts, which read each claim's own experiment."""
    known = {c.id: c for c in CLAIMS}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"unknown claim id(s) {unknown}; known: {sorted(known)}")
    if experiment not in EXPERIMENTS:
        raise ValueError(f"expected an experiment of the registry, got {experiment!r}")
    chosen = []
    for i in ids:
        claim = known[i]
        if not isinstance(claim.rule, PairedGain):
            raise ValueError(
                f"claim {i!r}: expected a paired-gain rule, got {type(claim.rule).__name__}"
            )
        rule = claim.rule.relabeled(old, new)
        chosen.append(replace(claim, experiments=(experiment,), rule=rule))
    return ledger(chosen, results_root)
