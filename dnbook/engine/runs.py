"""One run, stored: read from the results store if it is there, else trained and stored; and
its trained model.

:func:`run` returns the stored result of a config, training it first where the store has none;
checkpoints live in the cache directory (outside git) while a run is under way and are deleted
when it ends. The best-validation weights stay in the cache for the chapters that study a
trained model: :func:`trained_model` loads them, or trains the run again where they are missing
(a fresh clone) and checks that the retrained run matches the stored result. Where results are
read and written is :mod:`dnbook.engine.store`'s; every file is written atomically
(:mod:`dnbook._io`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dnbook import _io
from dnbook.data import cache_dir
from dnbook.data.registry import DATASETS
from dnbook.engine import distributed, provenance
from dnbook.engine.config import TrainConfig
from dnbook.engine.store import (
    checkpoint_path,
    read_result,
    read_weights,
    stored_result,
    weights_path,
    writable_results_dir,
)
from dnbook.engine.trainer import train
from dnbook.models import build_model

try:  # advisory file locks: POSIX only; elsewhere two processes may train the same run
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@dataclass(frozen=True)
class StoredRun:
    """What :func:`run_stored` did: the ``result``, the ``path`` it is stored at, and whether
    this call ``trained`` it (``False``: it was read from the store)."""

    result: dict[str, Any]
    path: Path
    trained: bool


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
        results_root: the store's root: results are read from and written to it alone.
            Default: ``$DNBOOK_RESULTS`` if set, else results are read from the committed
            ``<repo>/results`` and then :func:`user_results_dir`, and written to the latter.
        progress: show progress bars.
        device: ``None`` picks CUDA when available (``cuda:LOCAL_RANK`` under torchrun).
        resume: continue from the checkpoint of an interrupted run of this config, if any;
            ``False`` discards that checkpoint and starts over.
        **train_options: passed to :func:`dnbook.engine.trainer.train` (``splits``,
            ``model_fn``, ``on_epoch_end``); the store still files the result under the config.

    Returns:
        The stored result dict. A diverged run returns normally with ``status == "diverged"``.
        Under ``torchrun`` every process returns the same dict; only rank 0 writes files.

    A stored file that cannot be read is skipped with a :class:`dnbook.CorruptFileWarning`;
    where it lies in the root results are written to, it is renamed ``<name>.corrupt`` and
    the run is trained again. Two processes asking for the same run at once do not both
    train it: the second waits for the first (a lock file in the cache) and reads its result.
    """
    return run_stored(
        config,
        profile=profile,
        results_root=results_root,
        progress=progress,
        device=device,
        resume=resume,
        **train_options,
    ).result


def run_stored(
    config: TrainConfig,
    *,
    profile: str = "cpu",
    results_root: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    resume: bool = True,
    **train_options: Any,
) -> StoredRun:
    """:func:`run`, also saying where the result is stored and whether it was trained now."""
    ctx = distributed.context_from_env()
    checkpoint = checkpoint_path(config)
    # A broken file where the result will be written is reported when it is moved aside.
    quiet_in = writable_results_dir(results_root)
    found = stored_result(config, profile, results_root, quiet_in=quiet_in)
    if found is None:
        with _run_lock(config, ctx):
            # Another process may have finished the run while we waited for the lock.
            found = stored_result(config, profile, results_root, warn=False)
            if found is None:
                return _train_and_store(
                    config, profile, results_root, checkpoint, progress, device, resume,
                    train_options,
                )  # fmt: skip
    if ctx.is_main and checkpoint.exists():
        checkpoint.unlink(missing_ok=True)  # left by a process killed after storing its result
    return StoredRun(found[1], found[0], trained=False)


def _train_and_store(
    config: TrainConfig,
    profile: str,
    results_root: str | Path | None,
    checkpoint: Path,
    progress: bool,
    device: str | torch.device | None,
    resume: bool,
    train_options: dict[str, Any],
) -> StoredRun:
    ctx = distributed.context_from_env()
    path = writable_results_dir(results_root) / profile / f"{config.hash()}.json"
    if ctx.is_main and path.exists():  # unreadable, else stored_result would have found it
        _, reason = read_result(path)
        aside = _io.move_aside(path)
        _io.warn_corrupt(path, reason, f"moved to {aside.name}; training the run again")
    if ctx.is_main and not resume:
        checkpoint.unlink(missing_ok=True)
    outcome = train(
        config,
        device=device,
        progress=progress,
        checkpoint_path=checkpoint,
        resume=resume,
        **train_options,
    )
    result = {
        "hash": config.hash(),
        "profile": profile,
        "config": config.to_dict(),
        "seed": config.seed,
        **outcome.to_dict(),
        **provenance.record(),
    }
    if ctx.is_main:
        if outcome.best_state is not None:
            _save_weights(outcome.best_state, weights_path(config))
        _io.write_json(path, result)
        checkpoint.unlink(missing_ok=True)
    return StoredRun(distributed.broadcast_object(result, ctx), path, trained=True)


@contextlib.contextmanager
def _run_lock(config: TrainConfig, ctx: distributed.DistContext) -> Iterator[None]:
    """Hold ``<cache>/locks/<hash>.lock`` while training ``config`` (one process only: under
    torchrun the ranks train the run together)."""
    if fcntl is None or ctx.enabled:
        yield
        return
    path = cache_dir() / "locks" / f"{config.hash()}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"run {config.hash()}: another process is training it; waiting for it ({path})",
                file=sys.stderr,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        # Reached only when the run was stored (an exception skips it): whoever takes a lock
        # on this path, or on the file unlinked here, finds the result and trains nothing.
        path.unlink(missing_ok=True)


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    _io.torch_save({key: value.detach().cpu() for key, value in state.items()}, path)


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
    path = weights_path(config)
    state = read_weights(path)
    if state is None:
        found = stored_result(config, profile, results_root)
        previous = found[1] if found is not None else None
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
    model = build_model(
        config.model,
        num_classes=DATASETS[config.dataset].num_classes,
        norm=config.norm,
        width_mult=config.width_mult,
        stem=config.stem,
    )
    model.load_state_dict(state)
    return model.eval()
