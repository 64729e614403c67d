"""Numbers and tables as the book prints them: ``mean ± std`` over seeds, and Markdown tables.

Every table dnbook writes (the report, the benchmarks, the claims ledger) goes through
:func:`markdown_table`, which is ``pandas.DataFrame.to_markdown`` (tabulate) with the cells
kept as the caller wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def mean_std(values, unit: str = "") -> str:
    """``mean ± std`` of ``values`` (the value alone for one, "–" for none; the count is said
    elsewhere), for tables and the claims ledger.

    Example:
        >>> mean_std([70.0, 72.0], "%")
        '71.00% ± 1.41'
    """
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}{unit}"
    return f"{values.mean():.2f}{unit} ± {values.std():.2f}"


def markdown_table(
    table: pd.DataFrame | Sequence[Sequence[object]],
    header: Sequence[str] | None = None,
    *,
    right: int | None = None,
) -> str:
    """A pipe table of ``table``'s cells, each written as ``str`` writes it (no number
    formatting, no index).

    Args:
        table: a DataFrame, or rows of cells with ``header``.
        header: the column names of a list of rows. Default: the DataFrame's columns
        right: right-align the columns from this one on (numbers). Default: tabulate's choice

    Example:
        >>> print(markdown_table([["BN", 0.2]], ["norm", "lr"]))
        | norm   | lr   |
        |:-------|:-----|
        | BN     | 0.2  |
    """
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=header)
    colalign = None
    if right is not None:
        colalign = ["left"] * right + ["right"] * (len(frame.columns) - right)
    return frame.astype(str).to_markdown(index=False, disable_numparse=True, colalign=colalign)
