"""The results store: one JSON file per run, named by its config's hash.

``<root>/<profile>/<hash>.json`` holds everything needed to trust a number later: the
config, per-epoch curves, final metrics, status (``"finished"`` or ``"diverged"``), seed,
command line, hardware, library versions, git commit, wall time and timestamp. ``run``
returns the stored result when there is one and trains otherwise; checkpoints live in
the cache directory (outside git) while a run is under way and are deleted when it ends. The
best-validation weights stay in the cache (``weights/<hash>.pt``, not in git) for the chapters
that study a trained model: :func:`trained_model` loads them, or trains the run again where
they are missing (a fresh clone) and checks that the retrained run matches the stored result.

Where runs go. With ``DNBOOK_RESULTS`` set (or ``results_root`` given), results are read from
and written to that root alone. Without it, results are read from the committed
``<repo>/results`` first and then from the reader's own root, ``<cache>/results``
(:func:`user_results_dir`), and new runs are written to the reader's root: a reader's runs
never change the committed results the chapters show, and never show up in ``git status``.

Every file is written atomically (:mod:`dnbook._io`); a file that cannot be read is named in
a :class:`dnbook.CorruptFileWarning` and skipped, never used and never fatal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dnbook import _io
from dnbook.data.registry import DATASETS
from dnbook.engine import distributed, environment, provenance
from dnbook.engine.config import TrainConfig
from dnbook.engine.trainer import train
from dnbook.models import build_model

try:  # advisory file locks: POSIX only; elsewhere two processes may train the same run
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

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
    from dnbook.data import cache_dir

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
    from dnbook.data import cache_dir

    return cache_dir() / "checkpoints" / f"{config.hash()}.pt"


def weights_path(config: TrainConfig) -> Path:
    """Where :func:`run` keeps the best-validation weights of ``config`` (cache, not git)."""
    from dnbook.data import cache_dir

    return cache_dir() / "weights" / f"{config.hash()}.pt"


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    """``dnbook._io.write_json(path, data)``: kept for callers of the old name."""
    _io.write_json(path, data)


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
    from dnbook.data import cache_dir

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
    state = _read_weights(path)
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


def _read_weights(path: Path) -> dict[str, torch.Tensor] | None:
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
        _io.warn_corrupt(path, _reason(error), f"moved to {aside.name}; training the run again")
        return None
    return state


def _reason(error: BaseException) -> str:
    """The first line of an error's message, with its type."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


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
