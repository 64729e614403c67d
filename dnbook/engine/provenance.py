"""The provenance record: where a stored result came from.

Every file dnbook stores beside a number (a run, a measurement, a benchmark, a chapter timing)
carries the same fields, built here and nowhere else::

    {"command": ..., "hardware": {...}, "versions": {...}, "git_commit": ..., "timestamp": ...}

The facts themselves (the CPU, the GPU, library versions, the git commit) are read by
:mod:`dnbook.engine.environment`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dnbook.engine import environment


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def record(command: str | Sequence[str] | None = None) -> dict[str, Any]:
    """The provenance fields of a result made now.

    Args:
        command: the command line that made the result, as one string or as its words.
            Default: ``sys.argv`` (a list of words)

    Example:
        >>> sorted(record("python -m dnbook bench"))
        ['command', 'git_commit', 'hardware', 'timestamp', 'versions']
    """
    return {
        "command": list(sys.argv) if command is None else command,
        "hardware": environment.hardware(),
        "versions": environment.versions(),
        "git_commit": environment.git_commit(),
        "timestamp": timestamp(),
    }
