"""The results store: one JSON file per run, named by its config's hash.

``results/<profile>/<hash>.json`` holds everything needed to trust a number later: the
config, per-epoch curves, final metrics, status (``"finished"`` or ``"diverged"``), seed,
command line, hardware, library versions, git commit, wall time and timestamp. ``run``
returns the stored result when the file exists and trains otherwise; checkpoints live in
the cache directory (outside git) while a run is under way and are deleted when it ends. The
best-validation weights stay in the cache (``weights/<hash>.pt``, not in git) for the chapters
that study a trained model: :func:`trained_model` loads them, or trains the run again where
they are missing (a fresh clone) and checks that the retrained run matches the stored result.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from dnbook.engine import distributed, environment
from dnbook.engine.config import TrainConfig
from dnbook.engine.trainer import save_atomically, train

RESULTS_ENV = "DNBOOK_RESULTS"


def results_dir(root: str | Path | None = None) -> Path:
    """``root``, else ``$DNBOOK_RESULTS``, else ``<repo>/results``."""
    if root is not None:
        return Path(root)
    value = os.environ.get(RESULTS_ENV, "").strip()
    return Path(value).expanduser() if value else environment.REPO_ROOT / "results"


def result_path(config: TrainConfig, profile: str, root: str | Path | None = None) -> Path:
    return results_dir(root) / profile / f"{config.hash()}.json"


def checkpoint_path(config: TrainConfig) -> Path:
    from dnbook.data import cache_dir

    return cache_dir() / "checkpoints" / f"{config.hash()}.pt"


def weights_path(config: TrainConfig) -> Path:
    """Where :func:`run` keeps the best-validation weights of ``config`` (cache, not git)."""
    from dnbook.data import cache_dir

    return cache_dir() / "weights" / f"{config.hash()}.pt"


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    # NaN and infinities (a diverged run's last loss) are written as NaN / Infinity, which
    # Python's json and pandas read back.
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)


def run(
    config: TrainConfig,
    *,
    profile: str = "cpu",
    results_root: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    resume: bool = True,
    **train_options: Any,
) -> dict[str, Any]:
    """The result of ``config``: read from the store if there, else trained and stored.

    Args:
        config: the run.
        profile: the results subfolder (``ci``, ``cpu``, ``gpu``, ``paper``).
        results_root: the store's root (default: ``$DNBOOK_RESULTS``, else ``<repo>/results``).
        progress: show progress bars.
        device: ``None`` picks CUDA when available (``cuda:LOCAL_RANK`` under torchrun).
        resume: continue from the checkpoint of an interrupted run of this config, if any;
            ``False`` starts over.
        **train_options: passed to :func:`dnbook.engine.trainer.train` (``splits``,
            ``model_fn``, ``on_epoch_end``); the store still files the result under the config.

    Returns:
        The stored result dict. A diverged run returns normally with ``status == "diverged"``.
        Under ``torchrun`` every process returns the same dict; only rank 0 writes files.
    """
    path = result_path(config, profile, results_root)
    if path.exists():
        return json.loads(path.read_text())
    checkpoint = checkpoint_path(config)
    outcome = train(
        config,
        device=device,
        progress=progress,
        checkpoint_path=checkpoint,
        resume=resume,
        **train_options,
    )
    ctx = distributed.context_from_env()
    result = {
        "hash": config.hash(),
        "profile": profile,
        "config": config.to_dict(),
        "seed": config.seed,
        **outcome.to_dict(),
        "command": list(sys.argv),
        "hardware": environment.hardware(),
        "versions": environment.versions(),
        "git_commit": environment.git_commit(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if ctx.is_main:
        if outcome.best_state is not None:
            _save_weights(outcome.best_state, weights_path(config))
        write_json_atomically(result, path)
        checkpoint.unlink(missing_ok=True)
    return distributed.broadcast_object(result, ctx)


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    save_atomically({key: value.detach().cpu() for key, value in state.items()}, path)


def trained_model(
    config: TrainConfig,
    *,
    profile: str = "cpu",
    results_root: str | Path | None = None,
    progress: bool = True,
    atol: float = 0.5,
) -> torch.nn.Module:
    """The model of ``config`` with its best-validation weights, in eval mode, on the CPU.

    The weights come from the cache where :func:`run` left them. Where they are missing (a
    fresh clone has the JSON results but no weights) the run is trained again; if a stored
    result exists, the retrained run's best-validation accuracy must match it within ``atol``
    points, else ``RuntimeError`` (training is deterministic for a seed on one machine, but
    other hardware or library versions may drift).

    Raises:
        ValueError: for a stored run that diverged (it has no weights).
    """
    from dnbook.models import build_model

    path = weights_path(config)
    stored = result_path(config, profile, results_root)
    if not path.exists():
        previous = json.loads(stored.read_text()) if stored.exists() else None
        if previous is not None and previous["status"] != "finished":
            raise ValueError(
                f"run {config.hash()} has status {previous['status']!r}; expected 'finished'"
            )
        outcome = train(config, device="cpu", progress=progress)
        if outcome.best_state is None:
            raise ValueError(f"run {config.hash()} has status {outcome.status!r}, no weights")
        retrained = outcome.final["best_val_acc"]
        if previous is not None and abs(retrained - previous["final"]["best_val_acc"]) > atol:
            raise RuntimeError(
                f"run {config.hash()} trained again reached {retrained:.2f}% best validation "
                f"accuracy; the stored result says {previous['final']['best_val_acc']:.2f}%"
            )
        _save_weights(outcome.best_state, path)
        # the retrained model is at hand: no second load of the dataset to rebuild it
        outcome.model.load_state_dict(outcome.best_state)
        return outcome.model.cpu().eval()
    from dnbook.engine.trainer import load_splits

    num_classes = len(load_splits(config).classes)
    model = build_model(
        config.model,
        num_classes=num_classes,
        norm=config.norm,
        width_mult=config.width_mult,
        stem=config.stem,
    )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_results(
    profile: str, results_root: str | Path | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """Every stored result of ``profile`` whose config (or top-level field, such as
    ``status``) matches all ``filters``, e.g. ``load_results("cpu", norm="bn", epochs=10)``.

    Sorted by file name (the config hash), so the order is stable.
    """
    folder = results_dir(results_root) / profile
    results = []
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        if all(_field(result, key) == value for key, value in filters.items()):
            results.append(result)
    return results


def _field(result: dict[str, Any], key: str) -> Any:
    return result["config"][key] if key in result["config"] else result.get(key)


def results_frame(results: list[dict[str, Any]]):
    """A pandas DataFrame with one row per run: the config fields as columns, then status,
    final metrics, hash, wall time, and the divergence step and layer where there is one."""
    import pandas as pd

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
                "diverged_step": divergence.get("step"),
                "diverged_module": first.get("module"),
                "hash": result["hash"],
                "wall_time_s": result["wall_time_s"],
            }
        )
    return pd.DataFrame(rows)
