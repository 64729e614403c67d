"""The paper's #p and Mult-Adds columns beside ours (:mod:`dnbook.cost.flops`).

Run ``python -m dnbook complexity`` (or call :func:`print_comparison`) for the whole table. The
paper does not say whether the SC-module's FC1 has a bias; the table gives the parameter counts
under both readings (``fc1_bias`` of :class:`~dnbook.norms.DynamicNorm2d`), says which fits the
paper, and explains in a line every value that does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from dnbook.cost.flops import IMAGENET_INPUT, InputSize, profile_model
from dnbook.norms import make_norm, parse_spec
from dnbook.norms.factory import canonical_spec


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's tables: ``model`` (a :data:`dnbook.models.MODEL_NAMES` entry) with
    every BatchNorm replaced by ``norm`` (a ``make_norm`` spec); #p and Mult-Adds in millions, as
    printed in ``source``. All are for 100 classes (ImageNet-100) and 224x224 input."""

    model: str
    norm: str
    params_m: float
    mult_adds_m: float
    source: str


# Transcribed from the paper (Liu, Gao and Lv, "Dynamic Normalization"); not measured. Where a
# configuration appears in several tables, the first table is named.
PAPER_TABLE: tuple[PaperRow, ...] = (
    PaperRow("mobilenet_v2", "bn", 2.35, 299.62, "Table 1"),
    PaperRow("mobilenet_v2", "se:r=16", 3.73, 300.98, "Table 2"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=1", 3.03, 300.34, "Table 1"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=2", 3.07, 300.37, "Table 7"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=4", 3.14, 300.44, "Table 7"),
    PaperRow("mobilenet_v2", "dnb:r=16,g=oup", 4.36, 301.66, "Table 1"),
    PaperRow("mobilenet_v2", "dnb:r=8,g=1", 3.72, 301.02, "Table 6"),
    PaperRow("mobilenet_v2", "dnb:r=32,g=1", 2.69, 300.00, "Table 6"),
    PaperRow("mobilenet_v2", "dnc:r=16,merge=fc1", 3.03, 301.02, "Table 1"),
    PaperRow("mobilenet_v2", "dnc:r=16,merge=fc2", 3.03, 301.05, "Table 1"),
    PaperRow("resnet18", "bn", 11.22, 1730.12, "Table 3"),
    PaperRow("resnet18", "dnb:r=4,g=oup", 12.52, 1731.43, "Table 3"),
    PaperRow("resnet18", "dnb:r=16,g=oup", 11.54, 1730.45, "Table 3"),
    PaperRow("resnet34", "bn", 21.33, 3579.81, "Table 3"),
    PaperRow("resnet34", "dnb:r=16,g=oup", 21.85, 3580.35, "Table 3"),
    PaperRow("resnet34", "dnb:r=32,g=oup", 21.58, 3580.08, "Table 3"),
)


def agrees_with_paper(count: int, paper_m: float) -> bool:
    """Whether the paper's ``paper_m`` (millions, two decimals) is ``count`` rounded or truncated.

    The paper does not say how it shortens its numbers, and its tables use both: ResNet-18's
    11,227,812 parameters print as 11.22M (truncated), MobileNetV2 DN-B g=oup's 4,359,780 as
    4.36M (rounded, with our SC-module). So either reading counts as agreement.
    """
    hundredths = round(paper_m * 100)
    return hundredths in (math.floor(count / 1e4), round(count / 1e4))


def with_fc1_bias(spec: str) -> str:
    """``spec`` with the SC-module's FC1 bias on, for a DN spec; any other spec unchanged.

    Example:
        >>> with_fc1_bias("dnb:r=8,g=1"), with_fc1_bias("bn")
        ('dnb:r=8,g=1,fc1_bias=true', 'bn')
    """
    if "fc1_bias" not in make_norm(spec).options:
        return spec
    name, options = parse_spec(spec)
    return canonical_spec(name, {**options, "fc1_bias": True})


def compare_with_paper(
    rows: Iterable[PaperRow] | None = None,
    input_size: InputSize = IMAGENET_INPUT,
    fc1_bias: bool = False,
) -> pd.DataFrame:
    """Our #p and Mult-Adds beside the paper's, one row per :class:`PaperRow`.

    Args:
        rows: the rows to measure. Default: all of :data:`PAPER_TABLE`.
        input_size: the input for Mult-Adds. Default: ``(1, 3, 224, 224)``, the paper's setting
            (one 224x224 image).
        fc1_bias: count DN layers whose FC1 has a bias (see :func:`with_fc1_bias`). Default:
            ``False``, the layer of every stored result.

    Returns:
        A DataFrame, one row per configuration, with columns ``model``, ``norm``, ``source``,
        then for ``params`` and for ``mult_adds``: our exact count (``params``), ours in millions
        (``params_m``), the paper's (``paper_params_m``), ours minus the paper's
        (``params_diff_m``) and whether the paper's value is ours rounded or truncated to 0.01M
        (``params_agree``, see :func:`agrees_with_paper`).
    """
    records = []
    for row in PAPER_TABLE if rows is None else rows:
        norm = with_fc1_bias(row.norm) if fc1_bias else row.norm
        ours = profile_model(row.model, norm, input_size=input_size)
        record = {"model": row.model, "norm": row.norm, "source": row.source}
        for key, count, paper_m in (
            ("params", ours.params, row.params_m),
            ("mult_adds", ours.mult_adds, row.mult_adds_m),
        ):
            record[key] = count
            record[f"{key}_m"] = count / 1e6
            record[f"paper_{key}_m"] = paper_m
            record[f"{key}_diff_m"] = count / 1e6 - paper_m
            record[f"{key}_agree"] = agrees_with_paper(count, paper_m)
        records.append(record)
    return pd.DataFrame.from_records(records)


# The two readings of the SC-module's FC1, by column-name suffix.
READINGS = {"": "no FC1 bias", "_fc1_bias": "FC1 bias"}


def compare_readings(
    rows: Iterable[PaperRow] | None = None, input_size: InputSize = IMAGENET_INPUT
) -> pd.DataFrame:
    """:func:`compare_with_paper`'s table (no FC1 bias) with the FC1-bias reading's #p beside it:
    columns ``params_fc1_bias``, ``params_fc1_bias_m``, ``params_fc1_bias_diff_m`` and
    ``params_fc1_bias_agree``. (A bias adds no Mult-Adds: ``mult_adds_fc1_bias`` equals
    ``mult_adds``, kept to show it.)"""
    rows = list(PAPER_TABLE if rows is None else rows)
    table = compare_with_paper(rows, input_size)
    biased = compare_with_paper(rows, input_size, fc1_bias=True)
    for column in ("params", "params_m", "params_diff_m", "params_agree", "mult_adds"):
        name = column.replace("params", "params_fc1_bias", 1)
        table[name if column != "mult_adds" else "mult_adds_fc1_bias"] = biased[column]
    return table


def _number(value: float) -> float:
    """``value`` rounded to 0.001, with round()'s -0.0 turned into 0.0."""
    return round(value, 3) + 0.0


def _cells(row: tuple, key: str, width: int, paper: bool = True) -> str:
    """Ours (0.001M), [the paper's as printed,] the difference and the agreement mark for ``key``
    ("params", "params_fc1_bias" or "mult_adds") of one table row, right-aligned."""
    ours, diff = getattr(row, f"{key}_m"), _number(getattr(row, f"{key}_diff_m"))
    mark = "ok" if getattr(row, f"{key}_agree") else "NO"
    paper_cell = f"{getattr(row, f'paper_{key}_m'):>9.2f}" if paper else ""
    return f"{ours:>{width}.3f}{paper_cell}{diff:>+9.3f}  {mark:<3}"


def _family(model: str) -> str:
    return "ResNet" if model.startswith("resnet") else model


def explain(table: pd.DataFrame) -> list[str]:
    """One line for every value of :func:`compare_readings`'s table that does not fit the paper
    (neither ours rounded nor truncated to 0.01M), with what the numbers say about it."""
    lines = []
    offsets = {}  # Mult-Adds differences of the rows that do not fit, by model family
    for row in table.itertuples():
        if not row.mult_adds_agree:
            offsets.setdefault(_family(row.model), []).append(round(row.mult_adds_diff_m, 2))
    family_rows = table["model"].map(_family).value_counts()
    for row in table.itertuples():
        name = f"{row.model} {row.norm}"
        for suffix, reading in READINGS.items():
            key = f"params{suffix}"
            if getattr(row, f"{key}_agree"):
                continue
            ours = getattr(row, key)
            other = "_fc1_bias" if suffix == "" else ""
            truncated = math.floor(ours / 1e4) / 100
            line = (
                f"{name}, #p, {reading}: ours {ours:,} is {ours / 1e6:.2f}M rounded and "
                f"{truncated:.2f}M truncated, not the paper's {row.paper_params_m:.2f}M"
            )
            if getattr(row, f"params{other}_agree"):
                delta = getattr(row, f"params{other}") - ours
                line += f"; {READINGS[other]} ({delta:+,} parameters) fits"
            lines.append(line)
        if not row.mult_adds_agree:
            family, diff = _family(row.model), round(row.mult_adds_diff_m, 2)
            line = (
                f"{name}, Mult-Adds: the paper's {row.paper_mult_adds_m:.2f}M is {diff:.2f}M "
                f"{'below' if diff > 0 else 'above'} ours ({row.mult_adds_m:.2f}M)"
            )
            same = offsets[family]
            if len(same) == family_rows[family] > 1 and len(set(same)) == 1:
                line += (
                    f", the same offset in all {len(same)} {family} rows, whatever the depth and "
                    "the norm: it lies in what they share (stem, downsampling, head), not in "
                    "the norm layers"
                )
            lines.append(line)
    return lines


def format_comparison(table: pd.DataFrame) -> str:
    """The table of :func:`compare_readings` as aligned text: the paper's #p, ours under each
    FC1 reading, then the Mult-Adds; ``ok`` where the paper's value is ours rounded or truncated
    to 0.01M; then which reading fits and a line for every value that does not."""
    header = (
        f"{'model':<13}{'norm':<19}{'paper #p':>9} |{'no FC1 bias':>10}{'diff':>9}  {'ok?':<3}"
        f"|{'FC1 bias':>10}{'diff':>9}  {'ok?':<3}|{'Mult-Adds':>10}{'paper':>9}{'diff':>9}  "
        f"{'ok?':<3}  source"
    )
    lines = [
        "#p and Mult-Adds (millions; 100 classes, one 224x224 image), ours beside the paper's; "
        "#p under two readings of the SC-module's FC1:",
        "",
        header,
        "-" * len(header),
    ]
    for row in table.itertuples():
        lines.append(
            f"{row.model:<13}{row.norm:<19}{row.paper_params_m:>9.2f} |"
            f"{_cells(row, 'params', 10, paper=False)}|"
            f"{_cells(row, 'params_fc1_bias', 10, paper=False)}|"
            f"{_cells(row, 'mult_adds', 10)}  {row.source}"
        )
    n = len(table)
    fits = {
        reading: int(table[f"params{suffix}_agree"].sum()) for suffix, reading in READINGS.items()
    }
    best = [reading for reading, count in fits.items() if count == n]
    verdict = (
        f"the paper's #p fit {' and '.join(best)}" if best else "neither reading fits every #p row"
    )
    lines += [
        "",
        "#p rows that fit: "
        + ", ".join(f"{reading} {count} of {n}" for reading, count in fits.items())
        + f"; {verdict}. Mult-Adds rows that fit: {int(table['mult_adds_agree'].sum())} of {n} "
        "(a bias adds no Mult-Adds).",
    ]
    explanations = explain(table)
    if explanations:
        lines += ["", "Values that do not fit:"] + [f"- {line}" for line in explanations]
    return "\n".join(lines)


def print_comparison(
    rows: Iterable[PaperRow] | None = None, input_size: InputSize = IMAGENET_INPUT
) -> None:
    """Print our #p (under both FC1 readings) and Mult-Adds beside the paper's for every row of
    :data:`PAPER_TABLE`, which reading fits, and a line for every value that does not.

    The models have 100 classes (ImageNet-100) and Mult-Adds are per 224x224 image, as in the
    paper's tables, in millions. "diff" is ours minus the paper's; "ok" marks a paper value that
    is ours rounded or truncated to 0.01M. This is what ``python -m dnbook complexity`` prints.

    Args:
        rows: the rows to measure. Default: all of :data:`PAPER_TABLE`.
        input_size: the input for Mult-Adds. Default: ``(1, 3, 224, 224)``.
    """
    print(format_comparison(compare_readings(rows, input_size)))
