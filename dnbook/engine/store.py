"""The results store: where stored results are, and every query of them.

``<root>/<profile>/<hash>.json`` holds everything needed to trust a number later: the
config, per-epoch curves, final metrics, status (``"finished"`` or ``"diverged"``), seed,
command line, hardware, library versions, git commit, wall time and timestamp (the run is
trained and written by :mod:`dnbook.engine.runs`). Measurements of trained models lie beside
them, at ``<root>/<profile>/analysis/<name>-<hash>.json`` (written by :mod:`dnbook.analysis`);
the best-validation weights of a run stay in the cache (``weights/<hash>.pt``, not in git).

Where runs go. With ``DNBOOK_RESULTS`` set (or ``results_root`` given), results are read from
and written to that root alone. Without it, results are read from the committed
``<repo>/results`` first and then from the reader's own root, ``<cache>/results``
(:func:`user_results_dir`), and new runs are written to the reader's root: a reader's runs
never change the committed results the chapters show, and never show up in ``git status``.

Queries: one result (:func:`stored_result`), a profile's (:func:`load_results`), an
experiment's (:func:`experiment_runs`, :func:`largest_stored`), as DataFrames
(:func:`results_frame`, :func:`runs_frame`, :func:`curves_frame`), whether an experiment's
runs are all trained (:func:`complete_variants`, :func:`is_complete`), and measurements
(:func:`load_measurements`); :class:`ResultsStore` asks them once each for the claims. A
file that cannot be read is named in a :class:`dnbook.CorruptFileWarning` and skipped, never
used and never fatal.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dnbook import _io
from dnbook.data import cache_dir
from dnbook.data.registry import DATASETS
from dnbook.engine import environment
from dnbook.engine.config import TrainConfig
from dnbook.engine.profiles import Profile, get_profile

RESULTS_ENV = "DNBOOK_RESULTS"
# The result fields a readable result file must have (and "hash" must match its file name).
RESULT_FIELDS = {"hash": str, "config": dict, "status": str, "curves": list}


def results_dir(root: str | Path | None = None) -> Path:
    """``root``, else ``$DNBOOK_RESULTS``, else ``<repo>/results`` (the committed results)."""
    if root is not None:
        return Path(root)
    value = os.environ.get(RESULTS_ENV, "").strip()
    return Path(value).expanduser() if value else environment.REPO_ROOT / "results"


def user_results_dir() -> Path:
    """Where a reader's own runs go when neither ``results_root`` nor ``$DNBOOK_RESULTS`` is
    given: ``<cache>/results`` (``$DNBOOK_CACHE``, default ``~/.cache/dnbook``), outside git."""
    return cache_dir() / "results"


def _explicit(root: str | Path | None) -> bool:
    return root is not None or bool(os.environ.get(RESULTS_ENV, "").strip())


def results_roots(root: str | Path | None = None) -> list[Path]:
    """The roots results are read from, in order: ``[root]`` or ``[$DNBOOK_RESULTS]`` when
    one is given; otherwise the committed ``<repo>/results`` first, then
    :func:`user_results_dir` (so a reader's run never hides a committed one)."""
    if _explicit(root):
        return [results_dir(root)]
    return [results_dir(), user_results_dir()]


def writable_results_dir(root: str | Path | None = None) -> Path:
    """The root new results are written to: ``root``, else ``$DNBOOK_RESULTS``, else
    :func:`user_results_dir` (never the committed ``<repo>/results`` unless named)."""
    return results_dir(root) if _explicit(root) else user_results_dir()


def result_path(config: TrainConfig, profile: str, root: str | Path | None = None) -> Path:
    """The stored result of ``config``: the first readable one among :func:`results_roots`,
    else where :func:`run` will write it."""
    found = stored_result(config, profile, root, warn=False)
    if found is not None:
        return found[0]
    return writable_results_dir(root) / profile / f"{config.hash()}.json"


def checkpoint_path(config: TrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.hash()}.pt"


def weights_path(config: TrainConfig) -> Path:
    """Where :func:`run` keeps the best-validation weights of ``config`` (cache, not git)."""
    return cache_dir() / "weights" / f"{config.hash()}.pt"


def read_result(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(result, None)`` for a readable result file, ``(None, reason)`` for one that is cut
    short, garbled, or not a result (missing fields, a hash that is not its file name)."""
    path = Path(path)
    data, reason = _io.read_json(path)
    if reason is not None:
        return None, reason
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    for key, kind in RESULT_FIELDS.items():
        if not isinstance(data.get(key), kind):
            return None, f"field {key!r} missing or not a {kind.__name__}"
    if data["hash"] != path.stem:
        return None, f"its hash {data['hash']!r} is not its file name"
    return data, None


def stored_result(
    config: TrainConfig,
    profile: str,
    root: str | Path | None = None,
    *,
    warn: bool = True,
    quiet_in: Path | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """``(path, result)`` of the first readable stored result of ``config`` among
    :func:`results_roots`, or ``None``. An unreadable file is skipped (with a
    :class:`dnbook.CorruptFileWarning` naming it when ``warn``, unless it lies in
    ``quiet_in``, whose broken files the caller reports itself)."""
    for folder in results_roots(root):
        path = folder / profile / f"{config.hash()}.json"
        if not path.is_file():
            continue
        result, reason = read_result(path)
        if result is not None:
            return path, result
        if warn and folder != quiet_in:
            _io.warn_corrupt(path, reason, "skipped")
    return None


def read_weights(path: Path) -> dict[str, torch.Tensor] | None:
    """The kept weights at ``path``; ``None`` when there are none, or when the file cannot be
    read (then it is moved aside as ``<name>.corrupt`` with a warning naming it)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError("not a dict of tensors")
    except Exception as error:  # a torch.load of a damaged file raises many kinds
        aside = _io.move_aside(path)
        _io.warn_corrupt(
            path, _io.error_reason(error), f"moved to {aside.name}; training the run again"
        )
        return None
    return state


def load_results(
    profile: str, results_root: str | Path | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """Every stored result of ``profile`` whose config (or top-level field, such as
    ``status``) matches all ``filters``, e.g. ``load_results("cpu", norm="bn", epochs=10)``.

    Read from every root of :func:`results_roots` (a run stored in two roots counts once, as
    the first has it); a file that cannot be read is skipped with a
    :class:`dnbook.CorruptFileWarning` naming it. Sorted by config hash, so the order is stable.
    """
    found: dict[str, dict[str, Any]] = {}
    for folder in results_roots(results_root):
        for path in sorted((folder / profile).glob("*.json")):
            if path.stem in found:
                continue
            result, reason = read_result(path)
            if result is None:
                _io.warn_corrupt(path, reason, "skipped")
                continue
            found[path.stem] = result
    return [
        result
        for _, result in sorted(found.items())
        if all(_field(result, key) == value for key, value in filters.items())
    ]


def _field(result: dict[str, Any], key: str) -> Any:
    return result["config"][key] if key in result["config"] else result.get(key)


def results_frame(results: list[dict[str, Any]]):
    """A pandas DataFrame with one row per run: the config fields as columns, then status,
    final metrics, the epochs and optimizer steps it took (``epochs_done``, ``steps_done``),
    hash, wall time, and the divergence step and layer where there is one."""
    rows = []
    for result in results:
        divergence = result.get("divergence") or {}
        first = divergence.get("first_nonfinite") or {}
        rows.append(
            {
                **result["config"],
                "status": result["status"],
                **(result.get("final") or {}),
                "epochs_done": len(result["curves"]),
                "steps_done": result.get("steps"),
                "diverged_step": divergence.get("step"),
                "diverged_module": first.get("module"),
                "hash": result["hash"],
                "wall_time_s": result["wall_time_s"],
            }
        )
    return pd.DataFrame(rows)


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """The engine's :func:`~dnbook.engine.results_frame` plus the columns the report needs:
    ``family`` (the hash of the config with seed 0: runs that differ only by seed share it) and
    ``hardware`` (the GPU, else the CPU)."""
    frame = results_frame(results)
    frame["family"] = [TrainConfig.from_dict(r["config"]).replace(seed=0).hash() for r in results]
    frame["hardware"] = [hardware_name(r) for r in results]
    return frame


def hardware_name(record: dict[str, Any]) -> str:
    """The GPU a stored result or measurement was computed on, else its CPU (``"?"``)."""
    hardware = record.get("hardware") or {}
    return str(hardware.get("gpu") or hardware.get("cpu") or "?")


def curves_frame(results: list[dict]) -> pd.DataFrame:
    """One row per run, epoch and split: ``hash, seed, epoch, split, accuracy``."""
    rows = [
        {
            "hash": result["hash"],
            "seed": result["config"]["seed"],
            "epoch": row["epoch"],
            "split": split,
            "accuracy": row[f"{split}_acc"],
        }
        for result in results
        for row in result.get("curves") or []
        for split in ("val", "test")
        if row.get(f"{split}_acc") is not None
    ]
    return pd.DataFrame(rows, columns=["hash", "seed", "epoch", "split", "accuracy"])


def split_size(config, split: str) -> int:
    """Images in ``split`` (``"train"``, ``"val"`` or ``"test"``) of a run's config (a dict or a
    row of :func:`runs_frame`): its own subset size, else the whole split of its dataset."""
    value = config[f"n_{split}"]
    if value is None or value != value:  # None, or NaN in a DataFrame column
        return DATASETS[config["dataset"]].splits[split]
    return int(value)


# Profiles from the largest to the smallest: the order in which the chapters and the claims look
# for stored runs. `cpu` (full CIFAR-10, 3 epochs) is trained a batch of runs at a time, so at
# any moment some of its experiments are done and others half done or not started; it is read
# only where the runs asked for are complete there (see complete_variants), and the older,
# too-small `cpu_v1` (and then `ci`) stands in for the rest.
PROFILE_ORDER = ("paper", "gpu", "cpu", "cpu_v1", "ci")


def variant_hashes(experiment: Any, profile: str | Profile) -> dict[str, set[str]]:
    """Variant label -> the config hashes ``experiment`` (a
    :class:`~dnbook.engine.runner.Experiment`) registers for that variant at ``profile``: one
    per seed, plus any extra run the experiment adds to that variant there."""
    hashes: dict[str, set[str]] = {}
    for digest, label in experiment.labels(profile).items():
        hashes.setdefault(label, set()).add(digest)
    return hashes


def complete_variants(experiment: Any, profile: str | Profile, stored: Iterable[str]) -> list[str]:
    """The variants of ``experiment`` that are complete at ``profile``, in the experiment's
    order, given the config hashes ``stored`` there.

    A variant is complete at a profile when every config hash the experiment registers for it
    at that profile (:func:`variant_hashes`) is stored; a run that diverged is a stored result
    as much as one that finished. An experiment is complete at a profile when all its
    variants are (:func:`is_complete`)."""
    stored = set(stored)
    return [
        label for label, hashes in variant_hashes(experiment, profile).items() if hashes <= stored
    ]


def is_complete(experiment: Any, profile: str | Profile, stored: Iterable[str]) -> bool:
    """Whether every variant ``experiment`` registers at ``profile`` is complete there (see
    :func:`complete_variants`); ``False`` for an experiment with no run at that profile."""
    variants = variant_hashes(experiment, profile)
    return bool(variants) and len(complete_variants(experiment, profile, stored)) == len(variants)


def experiment_runs(
    experiment: Any, profile: str | Profile, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The stored runs of ``experiment`` (a :class:`~dnbook.engine.runner.Experiment`) at
    ``profile``: a :func:`runs_frame` with a
    ``variant`` column (the registry's label) and a ``profile`` column, in the experiment's
    variant order and then by seed, and the result dicts themselves. Both are empty when
    nothing is stored."""
    profile = get_profile(profile)
    labels = experiment.labels(profile)
    results = [r for r in load_results(profile.name, results_root) if r["hash"] in labels]
    if not results:
        return pd.DataFrame(), []
    frame = runs_frame(results)
    order = list(dict.fromkeys(labels.values()))
    frame["variant"] = pd.Categorical(frame["hash"].map(labels), order)
    frame["profile"] = profile.name
    frame = frame.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True)
    return frame, results


def largest_stored(
    experiment: Any, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The stored runs a chapter shows for ``experiment`` (a
    :class:`~dnbook.engine.runner.Experiment`), with a ``profile`` column that says where each
    run comes from.

    The rule: the runs of the largest profile (in :data:`PROFILE_ORDER`) at which the
    experiment is complete (:func:`is_complete`); where no profile is complete (say a reader's
    own first runs, read before the chapter trains the rest), the runs of the largest profile
    that has any. One profile a table, never a mix: a half-trained grid at a large profile
    neither hides a complete one at a smaller profile nor borrows rows from it."""
    stored = {}
    for profile_name in PROFILE_ORDER:
        frame, results = experiment_runs(experiment, profile_name, results_root)
        if not frame.empty:
            stored[profile_name] = frame, results
    for profile_name, (frame, results) in stored.items():
        if is_complete(experiment, profile_name, frame["hash"]):
            return frame, results
    return next(iter(stored.values()), (pd.DataFrame(), []))


def read_measurement(path: str | Path, *, warn: bool = True) -> dict[str, Any] | None:
    """The stored measurement record at ``path`` (with ``name``, ``hash``, ``config``,
    ``value`` and provenance), or ``None`` for a file that cannot be read (with a
    :class:`dnbook.CorruptFileWarning` naming it when ``warn``)."""
    record, reason = _io.read_json(path)
    if reason is None and not (
        isinstance(record, dict) and "value" in record and isinstance(record.get("hash"), str)
    ):
        reason = "not a measurement record (no 'value' or 'hash')"
    if reason is not None:
        if warn:
            _io.warn_corrupt(path, reason, "skipped")
        return None
    return record


def load_measurements(
    name: str, profile: str, results_root: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """Every readable stored measurement ``name`` at ``profile``, by config hash (the first
    root that has one wins); unreadable files are skipped with a warning naming them."""
    found: dict[str, dict[str, Any]] = {}
    for root in results_roots(results_root):
        for path in sorted((root / profile / "analysis").glob(f"{name}-*.json")):
            digest = path.stem.removeprefix(f"{name}-")
            if digest not in found and (record := read_measurement(path)) is not None:
                found[digest] = record
    return found


class ResultsStore:
    """The queries above, each answered from disk once: an experiment's runs at each profile
    and the measurements of its trained models, as the claims' verdict rules read them.

    A rule reads the runs of the largest profile (:data:`PROFILE_ORDER`) at which every
    variant it compares is complete (:func:`complete_variants`); variants are never mixed
    across profiles, and a half-trained profile is passed over. ``experiment`` arguments are
    :class:`~dnbook.engine.runner.Experiment` objects."""

    def __init__(self, results_root: str | Path | None = None):
        # passed through unchanged: with no root given, the committed results are read and
        # then the reader's own (see results_roots)
        self.root = results_root
        self._runs: dict[tuple[str, str], pd.DataFrame] = {}

    def runs(self, experiment: Any, profile: str) -> pd.DataFrame:
        """:func:`experiment_runs` plus ``steps`` (optimizer steps the run took) and
        ``val_change``: the mean absolute change of the validation accuracy from one epoch
        to the next (points; Figure 1's steadiness, NaN for a run of one epoch)."""
        key = (experiment.name, profile)
        if key not in self._runs:
            frame, results = experiment_runs(experiment, profile, self.root)
            if not frame.empty:
                by_hash = {r["hash"]: r for r in results}
                frame["val_change"] = frame["hash"].map(
                    lambda h: _mean_change(by_hash[h].get("curves") or [])
                )
                frame["steps"] = frame["hash"].map(lambda h: by_hash[h].get("steps"))
            self._runs[key] = frame
        return self._runs[key]

    def complete(self, experiment: Any, profile: str) -> set[str]:
        """The variants of ``experiment`` complete at ``profile`` (:func:`complete_variants`)."""
        frame = self.runs(experiment, profile)
        if frame.empty:
            return set()
        return set(complete_variants(experiment, profile, frame["hash"]))

    def largest(self, experiment: Any, variants: Sequence[str]) -> pd.DataFrame:
        """The runs of ``variants`` at the largest profile at which every one of them is
        complete (empty if there is none): a profile that has only some of a variant's seeds
        is passed over, even when a smaller profile has none of them."""
        for profile in PROFILE_ORDER:
            frame = self.runs(experiment, profile)
            if not frame.empty and set(variants) <= self.complete(experiment, profile):
                return frame[frame["variant"].astype(str).isin(variants)].reset_index(drop=True)
        return pd.DataFrame()

    def analyses(self, name: str, experiment: Any, variant: str) -> list[dict]:
        """The stored measurements ``name`` of ``variant``'s trained models, one record per
        seed, at the largest profile that has any and at which ``variant`` is complete (see
        :meth:`complete`: measurements of a half-trained variant are passed over). Each record
        gets ``profile`` = the folder it was read from (a record keeps the profile name it was
        measured under, which a renamed profile no longer has) and ``run``: the measured
        model's row of :meth:`runs`."""
        for profile in PROFILE_ORDER:
            labels = experiment.labels(profile)
            hashes = {h for h, label in labels.items() if label == variant}
            stored = load_measurements(name, profile, self.root)
            records = [
                {**record, "hash": digest}
                for digest, record in sorted(stored.items())
                if digest in hashes
            ]
            if records and variant in self.complete(experiment, profile):
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
