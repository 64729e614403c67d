"""Atomic writes and broken-file handling: every file dnbook writes (a result, a checkpoint,
kept weights, a measurement, a packed dataset) goes through :func:`atomic_open`.

A write goes to a temporary file beside its target (``.<name>.<pid>.<n>.partial``), is
flushed to disk, and is then renamed over the target. A process killed at any instant leaves
either the old file or the new one under the target's name, never half of one; the temporary
file it may leave is removed by the next write of the same target.

A file that cannot be read (cut short by a full disk, garbled by a bad merge) is reported with
a :class:`CorruptFileWarning` naming it, and :func:`move_aside` renames it to
``<name>.corrupt`` so that the next write starts clean and the evidence is kept.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PARTIAL_SUFFIX = ".partial"
CORRUPT_SUFFIX = ".corrupt"
_counter = itertools.count()


class ConfigError(ValueError):
    """A bad configuration or argument (an unknown device, an out-of-range seed, a batch larger
    than the dataset): the command line prints its message as one line and exits with 2."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (``signum`` SIGINT) or SIGTERM, at ``epoch`` (being trained)
    after ``step`` optimizer steps; ``checkpoint`` holds the run at the end of
    ``checkpoint_epoch`` (both ``None`` before the first epoch ended)."""

    def __init__(
        self,
        signum: int = signal.SIGINT,
        *,
        epoch: int | None = None,
        step: int | None = None,
        checkpoint: Path | None = None,
        checkpoint_epoch: int | None = None,
    ):
        super().__init__(signum)
        self.signum = int(signum)
        self.epoch, self.step = epoch, step
        self.checkpoint, self.checkpoint_epoch = checkpoint, checkpoint_epoch

    def describe(self) -> str:
        """The one line the command line prints."""
        if self.epoch is None:
            return "interrupted; rerun the same command to resume"
        where = f"interrupted at epoch {self.epoch}, step {self.step}"
        if self.checkpoint is None:
            return f"{where}; no checkpoint yet (epoch 1 had not ended); rerun to start again"
        return (
            f"{where}; checkpoint at {self.checkpoint} (end of epoch {self.checkpoint_epoch}); "
            "rerun the same command to resume"
        )


class CorruptFileWarning(UserWarning):
    """A stored file could not be read; the message names it and says what happens instead."""


def warn_corrupt(path: str | Path, reason: str, action: str) -> None:
    """One warning line: ``<path> is unreadable (<reason>); <action>``."""
    # stacklevel 1: one place, so that Python's "default" action shows each message once
    warnings.warn(f"{path} is unreadable ({reason}); {action}", CorruptFileWarning, stacklevel=1)


def error_reason(error: BaseException) -> str:
    """The first line of an error's message, with its type: a warning's ``reason``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<path>.corrupt`` (replacing an older one) and return the new path."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, target)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(path: str | Path) -> None:
    """Delete temporary files of ``path`` left by processes that no longer run."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for partial in path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"):
        pid = partial.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _replace(source: Path, target: Path) -> None:
    os.replace(source, target)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it is flushed, synced and renamed to
    ``path``; on an exception it is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_open(target, "w") as f:
        ...     _ = f.write("done")
        >>> target.read_text()
        'done'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}{PARTIAL_SUFFIX}")
    try:
        with open(partial, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        _replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as file:
        file.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as file:
        file.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically. NaN and infinities (a diverged
    run's last loss) are written as ``NaN`` / ``Infinity``, which Python's json and pandas read
    back."""
    write_text(path, json.dumps(data, indent=1) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as file:
        torch.save(obj, file)


def read_json(path: str | Path) -> tuple[Any, str | None]:
    """``(data, None)`` for a readable JSON file, ``(None, reason)`` for one that is cut short,
    garbled or not text (a missing file raises ``FileNotFoundError``)."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8")), None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{type(error).__name__}: {error}"
