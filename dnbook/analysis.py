"""Measurements of trained models, stored beside the runs they measure.

Some of the paper's tables are not trainings but measurements of a trained model: Table 4's
test-batch columns evaluate the batch-64 models at test batch 1, 2 and 32; Figure 5 and
Table 9 record DN-B's affine parameters per class. The weights live in the cache, not in git
(:func:`dnbook.engine.trained_model`), so a fresh clone could not redo such a measurement
without training again. :func:`measure` therefore stores what it measured, with the same
provenance as a run, at ``<root>/<profile>/analysis/<name>-<hash>.json``, and reads it back
on the next call. Measurements are read from and written to the same roots as runs
(:func:`dnbook.engine.store.results_roots`): the committed ones are read, a reader's new ones
go to the reader's own root unless ``DNBOOK_RESULTS`` names another. A stored measurement
that cannot be read is named in a :class:`dnbook.CorruptFileWarning` and measured again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from dnbook import _io
from dnbook.engine import TrainConfig, provenance, trained_model
from dnbook.engine.store import load_measurements as load_measurements
from dnbook.engine.store import read_measurement, results_roots, writable_results_dir


def analysis_path(
    name: str, config: TrainConfig, profile: str, results_root: str | Path | None = None
) -> Path:
    """Where measurement ``name`` of ``config``'s trained model is stored: the first readable
    one among the results roots, else where :func:`measure` will write it."""
    filename = f"{name}-{config.hash()}.json"
    for root in results_roots(results_root):
        path = root / profile / "analysis" / filename
        if path.is_file() and read_measurement(path, warn=False) is not None:
            return path
    return writable_results_dir(results_root) / profile / "analysis" / filename


def measure(
    name: str,
    config: TrainConfig,
    compute: Callable[[nn.Module], Any],
    *,
    profile: str,
    results_root: str | Path | None = None,
    progress: bool = False,
) -> Any:
    """``compute(model)`` for the trained model of ``config``, stored under ``name``.

    Args:
        name: what is measured (a file-name-safe word, e.g. ``"test_batch"``).
        config: the training run whose best-validation model is measured.
        compute: ``model -> value``; the value must be JSON-serializable (dicts, lists,
            numbers, strings). The model is in eval mode, on the CPU.
        profile: the results folder of the run (``ci``, ``cpu``, ...).
        results_root: the results root (default: the engine's).
        progress: show progress bars if the model has to be trained again.

    Returns:
        The stored value when there is one, else the freshly computed (and stored) value.

    Raises:
        ValueError: for a name that is not a simple word, or a run that diverged.
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"measurement name must be letters, digits and '_', got {name!r}")
    filename = f"{name}-{config.hash()}.json"
    for root in results_roots(results_root):
        stored = root / profile / "analysis" / filename
        if stored.is_file() and (record := read_measurement(stored)) is not None:
            return record["value"]
    path = writable_results_dir(results_root) / profile / "analysis" / filename
    if path.exists():  # unreadable (warned above): keep it aside, measure again
        _io.move_aside(path)
    model = trained_model(config, profile=profile, results_root=results_root, progress=progress)
    started = time.perf_counter()
    value = compute(model)
    record = {
        "name": name,
        "hash": config.hash(),
        "profile": profile,
        "config": config.to_dict(),
        "value": value,
        "wall_time_s": time.perf_counter() - started,
        **provenance.record(),
    }
    _io.write_json(path, record)
    return json.loads(json.dumps(value))  # what a later call will read back
