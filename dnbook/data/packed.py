"""The one on-disk format the loader reads: an uncompressed ``.npz`` of uint8 images.

========================  =====================  ==========================================
array                     dtype, shape           meaning
========================  =====================  ==========================================
``train_x``, ``test_x``   uint8 (N, 3, H, W)     images, channels first
``train_y``, ``test_y``   int64 (N,)             labels ``0 .. len(classes) - 1``
``val_x``, ``val_y``      optional               a validation split fixed by the converter
                                                 (ImageNet-100); otherwise carved at load time
``classes``               str (K,)               class names
``source``                str ()                 where the pixels came from
========================  =====================  ==========================================

Every converter (official CIFAR archives, the shared JPEG copy, a local ImageNet folder) writes
this format, so the loading code has a single path. Uncompressed, because images barely
compress and ``np.load`` of 180 MB of raw arrays takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from dnbook._io import atomic_open

REQUIRED_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "source")
SPLIT_NAMES = ("train", "val", "test")


def to_channels_first(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) -> (N, 3, H, W); channels-first input is returned as is."""
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]):
        raise ValueError(
            f"expected images of shape (N, 3, H, W) or (N, H, W, 3), got {images.shape}"
        )
    if images.shape[1] == 3:
        return images
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def save_packed(
    path: str | Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    source: str,
) -> Path:
    """Write ``splits`` (``{"train": (x, y), "test": (x, y)[, "val": (x, y)]}``) to ``path``.

    Images may be (N, 3, H, W) or (N, H, W, 3) uint8; they are stored channels first. The file
    is written next to ``path`` and renamed into place, so a crash never leaves half a file.
    """
    path = Path(path)
    missing = {"train", "test"} - splits.keys()
    if missing:
        raise ValueError(f"save_packed needs the splits train and test, missing {sorted(missing)}")
    arrays: dict[str, np.ndarray] = {}
    for split, (x, y) in splits.items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8 or len(x) != len(y):
            raise ValueError(
                f"{split}: expected uint8 images and one label per image, "
                f"got {x.dtype} images of shape {x.shape} and {len(y)} labels"
            )
        arrays[f"{split}_x"] = to_channels_first(x)
        arrays[f"{split}_y"] = y.astype(np.int64)
    arrays["classes"] = np.asarray(list(classes), dtype=np.str_)
    arrays["source"] = np.asarray(source, dtype=np.str_)
    with atomic_open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def read_packed(path: str | Path) -> dict[str, np.ndarray]:
    """Read a packed file into a dict of arrays (cached per process, see below).

    The arrays are shared between callers: treat them as read-only.
    """
    stat = Path(path).stat()
    return _read_packed(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


# Keyed by size and modification time as well as the path, so that a file rewritten by a
# converter is read again instead of served stale.
@lru_cache(maxsize=4)
def _read_packed(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{path} is not a dnbook packed dataset: missing arrays {missing}")
    for key in list(arrays):
        if key.endswith("_x"):
            arrays[key] = to_channels_first(arrays[key])
    return arrays
