"""The ledger shown: in a chapter (a table and one machine-readable verdict line per claim), as
Markdown, and as JSON for ``python -m dnbook claims``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dnbook.claims.ledger import CLAIMS, ledger
from dnbook.claims.verdicts import VERDICTS

VERDICT_LINE = re.compile(rf"^claim (\S+): ({'|'.join(VERDICTS)})$", re.MULTILINE)
"""A verdict line as chapters print it, ``claim <id>: <verdict>``; the tests read these lines
from the committed notebook outputs and compare them with :func:`ledger`."""

COLUMNS = ["id", "profile", "seeds", "measurement", "verdict", "why"]


def verdict_line(claim_id: str, verdict: str) -> str:
    """``claim <id>: <verdict>``, the one form a chapter prints a verdict in."""
    return f"claim {claim_id}: {verdict}"


def chapter_claims(
    chapter: str | None = None,
    table: pd.DataFrame | None = None,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ledger's rows for ``chapter`` (a notebook file name, or its number such as
    ``"07"``), or for the claims ``ids`` (in that order), or for every claim if neither is
    given; ``table``: an already evaluated :func:`ledger` (default: evaluate them)."""
    if ids is not None:
        known = {c.id: c for c in CLAIMS}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"unknown claim id(s) {unknown}; known: {sorted(known)}")
        chosen = [known[i] for i in ids]
    elif chapter is not None:
        chosen = [c for c in CLAIMS if c.chapter == chapter or c.chapter.startswith(f"{chapter}_")]
        if not chosen:
            raise ValueError(f"no claim is shown in chapter {chapter!r}")
    else:
        chosen = list(CLAIMS)
    if table is None:
        return ledger(chosen)
    rows = table.set_index("id").loc[[c.id for c in chosen]].reset_index()
    return rows


def show(
    chapter: str | None = None,
    table: pd.DataFrame | None = None,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Print the verdict of every claim of ``chapter`` (or of ``ids``; see
    :func:`chapter_claims`) as a :func:`verdict_line`, and return those rows of the ledger
    (id, profile, seeds, measurement, verdict, why) for display."""
    rows = chapter_claims(chapter, table, ids)
    for claim_id, verdict in zip(rows["id"], rows["verdict"], strict=True):
        print(verdict_line(claim_id, verdict))
    return rows[COLUMNS].set_index("id")


def printed_verdicts(notebook: str | Path) -> dict[str, str]:
    """Every verdict line in the stored outputs of ``notebook`` (a ``.ipynb`` file)."""
    found: dict[str, str] = {}
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else text
            found |= dict(VERDICT_LINE.findall(text))
    return found


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def records(table: pd.DataFrame) -> list[dict]:
    """The ledger as JSON-ready records: every claim's id, verdict, reason, measurement, mean
    and 95% interval (``null`` where the rule has none), seeds, profile, dataset, hardware,
    paper reference and chapter."""
    return [
        {
            "id": row["id"],
            "verdict": row["verdict"],
            "why": row["why"],
            "measurement": row["measurement"],
            "mean": _number(row["mean"]),
            "interval": [_number(row["low"]), _number(row["high"])],
            "seeds": [int(s) for s in row["seeds"].split(", ")] if row["seeds"] != "–" else [],
            "profile": row["profile"],
            "dataset": row["dataset"],
            "hardware": row["hardware"],
            "claim": row["claim"],
            "paper_ref": row["paper ref"],
            "chapter": row["chapter"],
        }
        for _, row in table.iterrows()
    ]


def to_json(table: pd.DataFrame) -> str:
    return json.dumps(records(table), indent=2, ensure_ascii=False)


def to_markdown(table: pd.DataFrame) -> str:
    """The ledger as a Markdown table (``pandas.DataFrame.to_markdown``, through tabulate)
    and a count of each verdict."""
    shown = table[["id", "verdict", "profile", "seeds", "why", "chapter"]]
    counts = table["verdict"].value_counts().reindex(VERDICTS, fill_value=0)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    return shown.to_markdown(index=False) + f"\n\n{len(table)} claims: {summary}\n"
