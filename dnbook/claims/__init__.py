"""The paper's claims and the one place where a verdict is computed.

* :mod:`dnbook.claims.verdicts`: the four verdicts ("holds", "does not hold", "inconclusive",
  "not tested"), the thresholds they rest on (with their reasons) and the paired 95% interval;
* :mod:`dnbook.claims.provenance`: where a verdict's evidence comes from, in words (the rules
  read stored results only through :class:`dnbook.engine.store.ResultsStore`, re-exported
  here);
* :mod:`dnbook.claims.rules`: rules on trained runs (:class:`PairedGain`,
  :class:`TrainingOutcome`, :class:`NaNOutcome`);
* :mod:`dnbook.claims.measured`: rules on measurements of trained models
  (:class:`TestBatchInvariance`, :class:`ClassMeansAlike` and the effect size it judges,
  :func:`median_cohen_f`);
* :mod:`dnbook.claims.exact`: rules on exact counts (:class:`CountOrder`,
  :class:`MultAddsIncrease`, :class:`MatchesPaperColumn`);
* :mod:`dnbook.claims.ledger`: the data, :data:`CLAIMS`, and :func:`ledger`;
* :mod:`dnbook.claims.show`: a chapter's verdicts (:func:`show`), Markdown and JSON.

Chapters never compute a verdict themselves: they call :func:`show` with their own name.
"""

from dnbook.claims.exact import CountOrder, MatchesPaperColumn, MultAddsIncrease, count
from dnbook.claims.ledger import CLAIMS, Claim, Rule, ledger, reread
from dnbook.claims.measured import (
    ClassMeansAlike,
    TestBatchInvariance,
    cohen_f,
    median_cohen_f,
)
from dnbook.claims.rules import NaNOutcome, PairedGain, TrainingOutcome
from dnbook.claims.show import (
    VERDICT_LINE,
    chapter_claims,
    printed_verdicts,
    records,
    show,
    to_json,
    to_markdown,
    verdict_line,
)
from dnbook.claims.verdicts import (
    CHANCE_MARGIN,
    CONFIDENCE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    LEARNED_FRACTION,
    LEARNED_LOSS_FRACTION,
    MIN_SEEDS,
    NOT_TESTED,
    TEST,
    VERDICTS,
    Evaluation,
    Interval,
    at_chance,
    chance,
    learned,
    learned_threshold,
    paired_interval,
    side_of,
    thresholds,
)
from dnbook.engine.store import ResultsStore

__all__ = [
    "CHANCE_MARGIN",
    "CLAIMS",
    "CONFIDENCE",
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "LEARNED_FRACTION",
    "LEARNED_LOSS_FRACTION",
    "MIN_SEEDS",
    "NOT_TESTED",
    "TEST",
    "VERDICTS",
    "VERDICT_LINE",
    "Claim",
    "ClassMeansAlike",
    "CountOrder",
    "Evaluation",
    "Interval",
    "MatchesPaperColumn",
    "MultAddsIncrease",
    "NaNOutcome",
    "PairedGain",
    "ResultsStore",
    "Rule",
    "TestBatchInvariance",
    "TrainingOutcome",
    "at_chance",
    "chance",
    "chapter_claims",
    "cohen_f",
    "count",
    "learned",
    "learned_threshold",
    "ledger",
    "median_cohen_f",
    "paired_interval",
    "printed_verdicts",
    "records",
    "reread",
    "show",
    "side_of",
    "thresholds",
    "to_json",
    "to_markdown",
    "verdict_line",
]
