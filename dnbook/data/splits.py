"""``load_dataset``: a dataset's train / validation / test splits as uint8 tensors.

The splits follow the paper's Train / Val / Test columns: the validation split is carved from
the official training set (for CIFAR, a tenth: 5,000 images, 500 per class, always the same
ones), and the official test set is the test split. ``n_train``, ``n_val`` and ``n_test`` then take
class-balanced subsets of those splits, chosen by ``seed``, for the small ``ci`` and ``cpu``
profiles.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dnbook._io import move_aside, warn_corrupt
from dnbook._validation import check_int
from dnbook.data import cifar
from dnbook.data.packed import read_packed
from dnbook.data.paths import (
    DATA_ENV,
    DataNotFoundError,
    cache_dir,
    candidate_paths,
    describe_locations,
)
from dnbook.data.registry import dataset_info
from dnbook.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from dnbook.data.synthetic import synthetic_splits

# The validation split is a property of the dataset, not of a run: its seed is fixed.
SPLIT_SEED = 0


@dataclass(eq=False)
class DatasetSplits:
    """A dataset split three ways, images as uint8 (N, 3, H, W), labels as int64 (N,).

    ``mean`` and ``std`` are per-channel statistics of ``train_x`` on the 0-255 scale, the
    values a loader normalizes with.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[-2:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the split ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def __repr__(self) -> str:
        height, width = self.image_size
        mean = ", ".join(f"{m:.1f}" for m in self.mean)
        std = ", ".join(f"{s:.1f}" for s in self.std)
        return (
            f"DatasetSplits({self.name!r}, {self.num_classes} classes, {height}x{width} px, "
            f"train={len(self.train_y)}, val={len(self.val_y)}, test={len(self.test_y)}, "
            f"mean=({mean}), std=({std}))"
        )


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices (sorted) of ``n`` samples, as evenly spread over the classes as the class sizes
    allow, chosen deterministically by ``seed``.

    Each sample gets a rank inside its class (in a random order); taking the ``n`` samples of
    lowest rank takes one of each class, then a second of each, and so on. Ties between
    classes are broken by a random class order, so which classes get one extra is random too.
    """
    labels = np.asarray(labels)
    if n > len(labels):
        raise ValueError(f"asked for {n} samples, but the split has only {len(labels)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    class_position = rng.permutation(int(labels.max(initial=-1)) + 1)
    shuffled = labels[order]
    # Rank of each shuffled sample among the samples of its class seen before it.
    by_class = np.argsort(shuffled, kind="stable")
    starts = np.searchsorted(shuffled[by_class], shuffled[by_class])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - starts
    key = rank * len(class_position) + class_position[shuffled]
    return np.sort(order[np.argsort(key, kind="stable")[:n]])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images (N, 3, H, W), 0-255 scale.

    A 256-bin histogram per channel makes this exact and cheap: no float copy of the images.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for channel in images.unbind(dim=1):
        counts = torch.bincount(channel.reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        # var = E[x^2] - E[x]^2, over the histogram.
        var = (counts * values.square()).sum() / total - mean.square()
        means.append(mean.item())
        stds.append(var.clamp_min(0).sqrt().item())
    return tuple(means), tuple(stds)


def _missing_data_message(name: str) -> str:
    if name == "cifar10":
        how = (
            "Either download the official archive once with "
            "`python data_scripts/prepare_cifar.py --dataset cifar10`, or point "
            f"{DATA_ENV} at a folder holding the offline copy {cifar.JPEG_COPY_NAME} "
            f"(for example `export {DATA_ENV}=../shared/data`)."
        )
    elif name == "cifar100":
        how = (
            "Download the official archive once with "
            "`python data_scripts/prepare_cifar.py --dataset cifar100`, or put the packed "
            f"cifar100.npz it writes into the folder {DATA_ENV} names."
        )
    else:
        size = name.rsplit("_", 1)[1]
        how = (
            "Build it from a local ImageNet folder with `python data_scripts/prepare_imagenet100.py"
            f" --imagenet /path/to/imagenet --size {size}` (see data_scripts/README.md), or put "
            f"the {name}.npz it writes into the folder {DATA_ENV} names."
        )
    return f"dataset {name!r} not found ({describe_locations()}). {how}"


def packed_path(name: str) -> Path:
    """The packed file ``load_dataset(name)`` reads, converting the shared JPEG copy of
    CIFAR-10 first if that is the only source; raises ``DataNotFoundError`` if there is none."""
    subdir = "imagenet100" if name.startswith("imagenet100") else ""
    for path in candidate_paths(f"{name}.npz", subdir):
        if path.is_file():
            return path
    if name == "cifar10":
        for copy in candidate_paths(cifar.JPEG_COPY_NAME):
            if copy.is_file():
                return cifar.pack_jpeg_copy(copy)
    raise DataNotFoundError(_missing_data_message(name))


def _read_packed_cache(name: str) -> dict[str, np.ndarray]:
    """The arrays of ``packed_path(name)``. A packed file in the cache that cannot be read (cut
    short, garbled) is moved aside as ``<name>.corrupt`` with a warning naming it, and packed
    again where dnbook can (CIFAR-10 from the JPEG copy); a file outside the cache (shared
    data under ``DNBOOK_DATA``) is never moved."""
    path = packed_path(name)
    try:
        return read_packed(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        if isinstance(error, DataNotFoundError) or not path.resolve().is_relative_to(
            cache_dir().resolve()
        ):
            raise
        aside = move_aside(path)
        warn_corrupt(path, f"{type(error).__name__}: {error}", f"moved to {aside.name}")
    return read_packed(packed_path(name))


def _check_size(name: str, value: int | None) -> None:
    if value is not None:
        check_int(name, value, minimum=0, what="None or a non-negative integer")


def _take(x: np.ndarray | torch.Tensor, index: np.ndarray) -> torch.Tensor:
    # Indexing copies, so the arrays cached by read_packed are never handed out.
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x[index])
    return x[torch.from_numpy(index)]


def load_dataset(
    name: str,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """Load ``name`` (one of ``DATASET_NAMES``) as train / validation / test splits.

    Args:
        name: ``"cifar10"``, ``"cifar100"``, ``"imagenet100_32"``, ``"imagenet100_64"`` or
            ``"synthetic"`` (generated in memory; defaults to 1,000 / 200 / 200 images).
        n_train, n_val, n_test: sizes of class-balanced subsets of each split; ``None`` keeps
            the whole split.
        seed: chooses the subsets (and, for ``"synthetic"``, the images). The validation split
            itself does not depend on it.

    Raises:
        DataNotFoundError: the data is not on this machine; the message says how to get it.
        ValueError: an unknown name, or a subset larger than its split.

    Example:
        >>> data = load_dataset("synthetic", n_train=100, n_val=20, n_test=20)
        >>> data.train_x.shape, data.train_x.dtype
        (torch.Size([100, 3, 32, 32]), torch.uint8)
    """
    info = dataset_info(name)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, size in sizes.items():
        _check_size(f"n_{split}", size)

    # Each split as (images, labels, indices of its samples in them).
    if name == "synthetic":
        wanted = {s: info.splits[s] if n is None else n for s, n in sizes.items()}
        generated = synthetic_splits(wanted["train"], wanted["val"], wanted["test"], seed)
        splits = {s: (x, y.numpy(), np.arange(len(y))) for s, (x, y) in generated.items()}
        classes, source = SYNTHETIC_CLASSES, f"synthetic stripes, generated with seed {seed}"
        sizes = dict.fromkeys(sizes)  # generated at the requested sizes already
    else:
        arrays = _read_packed_cache(name)
        classes, source = tuple(str(c) for c in arrays["classes"]), str(arrays["source"])
        splits = {
            s: (arrays[f"{s}_x"], arrays[f"{s}_y"], np.arange(len(arrays[f"{s}_y"])))
            for s in ("train", "val", "test")
            if f"{s}_x" in arrays
        }
        if "val" not in splits:
            x, y, everything = splits["train"]
            val_index = balanced_subset(y, round(info.val_fraction * len(y)), SPLIT_SEED)
            splits["train"] = (x, y, np.setdiff1d(everything, val_index, assume_unique=True))
            splits["val"] = (x, y, val_index)

    tensors = {}
    for split, (x, y, index) in splits.items():
        if sizes[split] is not None:
            if sizes[split] > len(index):
                raise ValueError(
                    f"n_{split}={sizes[split]} is larger than the {split} split of {name} "
                    f"({len(index)} images)"
                )
            index = index[balanced_subset(y[index], sizes[split], seed)]
        tensors[f"{split}_x"], tensors[f"{split}_y"] = _take(x, index), _take(y, index).long()
    mean, std = channel_stats(tensors["train_x"])
    return DatasetSplits(name, classes, **tensors, mean=mean, std=std, source=source)
