"""Measurements of trained models, stored beside the runs they measure.

Some of the paper's tables are not trainings but measurements of a trained model: Table 4's
test-batch columns evaluate the batch-64 models at test batch 1, 2 and 32; Figure 5 and
Table 9 record DN-B's affine parameters per class. The weights live in the cache, not in git
(:func:`dnbook.engine.trained_model`), so a fresh clone could not redo such a measurement
without training again. :func:`measure` therefore stores what it measured, with the same
provenance as a run, at ``results/<profile>/analysis/<name>-<hash>.json``, and reads it back
on the next call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from dnbook.engine import TrainConfig, environment, results_dir, trained_model
from dnbook.engine.store import write_json_atomically


def analysis_path(
    name: str, config: TrainConfig, profile: str, results_root: str | Path | None = None
) -> Path:
    """Where :func:`measure` stores measurement ``name`` of ``config``'s trained model."""
    return results_dir(results_root) / profile / "analysis" / f"{name}-{config.hash()}.json"


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
    path = analysis_path(name, config, profile, results_root)
    if path.exists():
        return json.loads(path.read_text())["value"]
    model = trained_model(config, profile=profile, results_root=results_root, progress=progress)
    started = time.perf_counter()
    value = compute(model)
    record = {
        "name": name,
        "hash": config.hash(),
        "profile": profile,
        "config": config.to_dict(),
        "value": value,
        "command": list(sys.argv),
        "hardware": environment.hardware(),
        "versions": environment.versions(),
        "git_commit": environment.git_commit(),
        "wall_time_s": time.perf_counter() - started,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomically(record, path)
    return json.loads(json.dumps(value))  # what a later call will read back
