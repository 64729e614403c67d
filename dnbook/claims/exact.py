"""Claims about exact counts at the paper's size (100 classes, one 224x224 image).

No training, hence no seeds, no interval and no ``learned`` guard (nothing is trained): these
rules say **holds** or **does not hold**, never "inconclusive" or "not tested".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from dnbook.claims.verdicts import FAILS, HOLDS, Evaluation
from dnbook.cost.flops import count_params, profile
from dnbook.cost.paper import PAPER_TABLE, agrees_with_paper
from dnbook.engine.store import ResultsStore
from dnbook.models import build_model

EXACT = {"profile": "exact count", "dataset": "ImageNet-100 shapes (100 classes, 224 px)"}


@cache
def count(model: str, norm: str, kind: str) -> int:
    """Parameters (``kind="params"``) or Mult-Adds (``"mult_adds"``) of ``model`` with ``norm``
    at the paper's size (100 classes, one 224x224 image), as :mod:`dnbook.cost.flops` counts
    them: parameters on PyTorch's ``meta`` device, Mult-Adds from one real forward pass on the
    CPU."""
    if kind == "params":
        return count_params(model, norm, num_classes=100)
    # Mult-Adds need a forward pass that runs: DN's fast path reads values (its centring
    # pixel), which the meta device does not have.
    return profile(build_model(model, num_classes=100, norm=norm)).mult_adds


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
        rows = {(r.model, r.norm) for r in PAPER_TABLE}
        return self.judge({row: count(*row, "params") for row in rows})

    def judge(self, params: Mapping[tuple[str, str], int]) -> Evaluation:
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
