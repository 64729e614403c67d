"""CIFAR-10 and CIFAR-100 into the packed format, from two sources:

* the official "python version" archives (Krizhevsky 2009), downloaded and md5-checked by
  torchvision's dataset classes (``data_scripts/prepare_cifar.py``), then repacked here;
* the offline copy ``$DNBOOK_DATA/cifar10_jpegbytes.npz`` (60,000 CIFAR-10 images stored as
  JPEG bytes, see its README), decoded once and cached under a name that carries a hash of
  the source file, so a changed copy is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dnbook.data.packed import save_packed
from dnbook.data.paths import cache_dir

JPEG_COPY_NAME = "cifar10_jpegbytes.npz"

# What differs between the two official archives. File names come from torchvision's dataset
# classes, which also know their md5 sums; the label key is inside each pickled batch.
_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}


def _torchvision_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    classes = {"cifar10": CIFAR10, "cifar100": CIFAR100}
    if name not in classes:
        raise ValueError(f"name must be one of {sorted(classes)}, got {name!r}")
    return classes[name]


def download_cifar(name: str, root: str | Path) -> Path:
    """Download the official archive of ``name`` into ``root`` (md5-checked, extracted by
    torchvision) and return the extracted folder, e.g. ``root/cifar-10-batches-py``."""
    dataset_class = _torchvision_class(name)
    dataset_class(str(root), train=True, download=True)
    return Path(root) / dataset_class.base_folder


def _unpickle(path: Path) -> dict:
    # The official batches are Python 2 pickles; latin1 maps their byte strings one to one.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def read_cifar_python(name: str, folder: str | Path) -> dict:
    """Read an extracted official archive (``cifar-10-batches-py`` or ``cifar-100-python``)
    into ``{"train": (x, y), "test": (x, y)}`` with uint8 (N, 3, 32, 32) images, plus the
    class names under ``"classes"``."""
    dataset_class, folder = _torchvision_class(name), Path(folder)
    result: dict = {}
    for split, files in (("train", dataset_class.train_list), ("test", dataset_class.test_list)):
        batches = [_unpickle(folder / filename) for filename, _md5 in files]
        # Each batch stores images as rows of 3072 bytes: 1024 red, 1024 green, 1024 blue.
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b[_LABEL_KEYS[name]], dtype=np.int64) for b in batches])
        result[split] = (x.reshape(-1, 3, 32, 32), y)
    meta = _unpickle(folder / dataset_class.meta["filename"])
    result["classes"] = [str(c) for c in meta[dataset_class.meta["key"]]]
    return result


def pack_cifar_python(name: str, folder: str | Path, out: str | Path | None = None) -> Path:
    """Convert an extracted official archive to the packed file ``out``
    (default ``cache_dir()/<name>.npz``)."""
    data = read_cifar_python(name, folder)
    out = Path(out) if out is not None else cache_dir() / f"{name}.npz"
    source = f"{name} official python archive (https://www.cs.toronto.edu/~kriz/cifar.html)"
    return save_packed(out, {s: data[s] for s in ("train", "test")}, data["classes"], source)


def file_digest(path: str | Path, length: int = 12) -> str:
    """The first ``length`` hex digits of the file's SHA-256 (about 50 ms for 18 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def decode_jpeg_bytes(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode the images ``data[offsets[i]:offsets[i + 1]]`` into uint8 (N, 3, H, W).

    torchvision's libjpeg-turbo decoder gives exactly Pillow's pixels, about three times
    faster; torchvision has deprecated its image decoders, so Pillow takes over once they go.
    """
    spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        images = [
            np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB")) for a, b in spans
        ]
        return np.stack(images).transpose(0, 3, 1, 2)
    blob = torch.from_numpy(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg([blob[a:b] for a, b in spans], mode=ImageReadMode.RGB)
    return torch.stack(decoded).numpy()


def pack_jpeg_copy(source: str | Path, out: str | Path | None = None) -> Path:
    """Decode the shared ``cifar10_jpegbytes.npz`` into a packed file and return its path.

    The default ``out`` is ``cache_dir()/cifar10_jpeg-<sha256 prefix of source>.npz``; when it
    already exists nothing is decoded.
    """
    source = Path(source)
    out = Path(out) if out is not None else cache_dir() / f"cifar10_jpeg-{file_digest(source)}.npz"
    if out.exists():
        return out
    with np.load(source, allow_pickle=False) as copy:
        splits = {
            split: (
                decode_jpeg_bytes(copy[f"jpg_{split}"], copy[f"off_{split}"]),
                copy[f"y_{split}"].astype(np.int64),
            )
            for split in ("train", "test")
        }
        classes = [str(c) for c in copy["class_names"]]
        origin = f"{copy['source']} (JPEG copy {source.name}, decoded by dnbook)"
    return save_packed(out, splits, classes, origin)
