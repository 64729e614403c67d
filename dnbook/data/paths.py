"""Where dnbook looks for data, and the error it raises when the data is not there.

Two directories, both outside git:

* ``data_root()``: offline copies of datasets, from the environment variable ``DNBOOK_DATA``
  (``.ci/run`` sets it to ``../shared/data``, which holds ``cifar10_jpegbytes.npz``).
  ``None`` when the variable is unset: then only downloaded data can be used. A relative value
  is read from the repository root, not from the working directory, so one setting serves a
  shell in the root and a notebook kernel in ``notebooks/`` alike.
* ``cache_dir()``: downloads and the decoded, packed ``.npz`` files the loader reads, from
  ``DNBOOK_CACHE``, else ``~/.cache/dnbook``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DNBOOK_DATA"
# The checkout dnbook runs from: the folder above the package, when it holds pyproject.toml.
_CHECKOUT = Path(__file__).resolve().parents[2]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None
CACHE_ENV = "DNBOOK_CACHE"


class DataNotFoundError(FileNotFoundError, ValueError):
    """A dataset is neither in the cache nor under ``DNBOOK_DATA``; the message says how to
    get it (which command to run, which variable to set)."""


def data_root() -> Path | None:
    """The offline data folder named by ``DNBOOK_DATA``, or ``None`` when it is unset.

    A relative value is resolved against the repository root (when dnbook runs from a
    checkout), so ``DNBOOK_DATA=../shared/data`` means the same folder from the root and from
    ``notebooks/``. Outside a checkout, or when only the working directory holds the folder, it
    is resolved against the working directory."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    from_root = (REPO_ROOT / path).resolve() if REPO_ROOT is not None else None
    if from_root is not None and (from_root.exists() or not path.exists()):
        return from_root
    return path.resolve()


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
