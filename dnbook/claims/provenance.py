"""The provenance every verdict carries (profile, dataset and scale, seeds, hardware) and the
words it is written in. The rules read stored results through
:class:`dnbook.engine.store.ResultsStore`; this module only describes what they read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from dnbook.engine.store import hardware_name


def plural(n: int, what: str = "seed") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def listed(values: Sequence[int], what: str) -> str:
    """``values`` listed with the noun: ``"1 epoch"``, ``"3 epochs"``, ``"1, 3 epochs"``,
    ``"1.5, 3 epochs"`` (a whole number prints without ``.0``, also from a float column)."""
    text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return f"{text} {what}{'s' if list(values) != [1] else ''}"


def train_size(config) -> str:
    """The training images of a run (``None``: the whole split)."""
    n_train = config["n_train"]
    return "all" if n_train is None or n_train != n_train else f"{int(n_train):,}"


def provenance(runs: pd.DataFrame, seeds: Sequence[int]) -> dict[str, Any]:
    """Profile, dataset (with its scale), seeds and hardware of ``runs``, for an Evaluation."""
    first = runs.iloc[0]
    width = ", ".join(f"{w:g}" for w in sorted(runs["width_mult"].unique()))
    epochs = sorted(runs["epochs"].unique())
    return {
        "profile": str(first["profile"]),
        "dataset": f"{first['dataset']} ({train_size(first)} train, "
        f"{listed(epochs, 'epoch')}, width {width})",
        "seeds": tuple(int(s) for s in seeds),
        "hardware": ", ".join(sorted(runs["hardware"].astype(str).unique())),
    }


def analysis_provenance(records: list[dict]) -> dict[str, Any]:
    configs = [r["config"] for r in records]
    first = configs[0]
    return {
        "profile": str(records[0]["profile"]),
        "dataset": f"{first['dataset']} ({train_size(first)} train, "
        f"{listed([first['epochs']], 'epoch')}, width {first['width_mult']:g})",
        "seeds": tuple(sorted(int(c["seed"]) for c in configs)),
        "hardware": ", ".join(sorted({hardware_name(r) for r in records})),
    }
