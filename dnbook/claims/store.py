"""The results store as the verdict rules read it, and the provenance every verdict carries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnbook.engine.store import PROFILE_ORDER, experiment_runs, load_measurements
from dnbook.experiments import EXPERIMENTS


class ResultsStore:
    """Each experiment's runs at each profile, and the measurements of trained models
    (``dnbook.analysis.measure``), each read from disk once.

    A claim reads the runs of the largest profile (:data:`dnbook.engine.store.PROFILE_ORDER`)
    that has every variant it compares; variants are never mixed across profiles."""

    def __init__(self, results_root: str | Path | None = None):
        # passed through unchanged: with no root given, the engine reads the committed
        # results and then the reader's own (see dnbook.engine.store.results_roots)
        self.root = results_root
        self._runs: dict[tuple[str, str], pd.DataFrame] = {}

    def runs(self, experiment: str, profile: str) -> pd.DataFrame:
        """:func:`dnbook.engine.store.experiment_runs` plus ``steps`` (optimizer steps the run took)
        and ``val_change``: the mean absolute change of the validation accuracy from one epoch
        to the next (points; Figure 1's steadiness, NaN for a run of one epoch)."""
        key = (experiment, profile)
        if key not in self._runs:
            frame, results = experiment_runs(EXPERIMENTS[experiment], profile, self.root)
            if not frame.empty:
                by_hash = {r["hash"]: r for r in results}
                frame["val_change"] = frame["hash"].map(
                    lambda h: _mean_change(by_hash[h].get("curves") or [])
                )
                frame["steps"] = frame["hash"].map(lambda h: by_hash[h].get("steps"))
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
        profile that has any, one record per seed. Each record gets ``profile`` = the folder it
        was read from (a record keeps the profile name it was measured under, which a renamed
        profile no longer has) and ``run``: the measured model's row of :meth:`runs` (or
        ``None`` if that run is not stored)."""
        for profile in PROFILE_ORDER:
            labels = EXPERIMENTS[experiment].labels(profile)
            hashes = {h for h, label in labels.items() if label == variant}
            stored = load_measurements(name, profile, self.root)
            records = [
                {**record, "hash": digest}
                for digest, record in sorted(stored.items())
                if digest in hashes
            ]
            if records:
                runs = self.runs(experiment, profile)
                rows = {} if runs.empty else dict(list(runs.set_index("hash").iterrows()))
                for record in records:
                    record["profile"] = profile
                    record["run"] = rows.get(record["hash"])
                return records
        return []


def _mean_change(curves: list[dict]) -> float:
    values = [row["val_acc"] for row in curves if row.get("val_acc") is not None]
    return float(np.mean(np.abs(np.diff(values)))) if len(values) > 1 else math.nan


def plural(n: int, what: str = "seed") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def listed(values: Sequence[int], what: str) -> str:
    """``values`` listed with the noun: ``"1 epoch"``, ``"3 epochs"``, ``"1, 3 epochs"``."""
    return f"{', '.join(map(str, values))} {what}{'s' if list(values) != [1] else ''}"


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


def _hardware(record: dict) -> str:
    """The GPU of a stored record, else its CPU."""
    hardware = record.get("hardware") or {}
    return str(hardware.get("gpu") or hardware.get("cpu") or "?")


def analysis_provenance(records: list[dict]) -> dict[str, Any]:
    configs = [r["config"] for r in records]
    first = configs[0]
    return {
        "profile": str(records[0]["profile"]),
        "dataset": f"{first['dataset']} ({train_size(first)} train, "
        f"{listed([first['epochs']], 'epoch')}, width {first['width_mult']:g})",
        "seeds": tuple(sorted(int(c["seed"]) for c in configs)),
        "hardware": ", ".join(sorted({_hardware(r) for r in records})),
    }
