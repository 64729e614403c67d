"""Where dnbook looks for data, and the error it raises when the data is not there.

Two directories, both outside git:

* ``data_root()``: offline copies of datasets, from the environment variable ``DNBOOK_DATA``
  (``.ci/run`` sets it to ``../shared/data``, which holds ``cifar10_jpegbytes.npz``).
  ``None`` when the variable is unset: then only downloaded data can be used.
* ``cache_dir()``: downloads and the decoded, packed ``.npz`` files the loader reads, from
  ``DNBOOK_CACHE``, else ``~/.cache/dnbook``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DNBOOK_DATA"
CACHE_ENV = "DNBOOK_CACHE"


class DataNotFoundError(FileNotFoundError, ValueError):
    """A dataset is neither in the cache nor under ``DNBOOK_DATA``; the message says how to
    get it (which command to run, which variable to set)."""


def data_root() -> Path | None:
    """The offline data folder named by ``DNBOOK_DATA``, or ``None`` when it is unset."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The cache folder (``DNBOOK_CACHE``, default ``~/.cache/dnbook``); created on demand."""
    value = os.environ.get(CACHE_ENV, "").strip()
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "dnbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def candidate_paths(filename: str, *subdirs: str) -> list[Path]:
    """Where a packed file called ``filename`` may live: the cache first, then ``DNBOOK_DATA``,
    each directly and inside every one of ``subdirs``."""
    roots = [cache_dir()] + ([data_root()] if data_root() is not None else [])
    return [root / sub / filename for root in roots for sub in ("", *subdirs)]


def describe_locations() -> str:
    """One line that says where dnbook looked, for error messages."""
    root = data_root()
    data = f"{DATA_ENV}={root}" if root is not None else f"{DATA_ENV} is not set"
    return f"looked in {CACHE_ENV}={cache_dir()} and {data}"
