"""ImageNet-100 following the paper's protocol, built from a local ImageNet folder.

The paper trains on 100 ImageNet classes drawn at random, keeps 20% of each class's training
images as a validation split and tests on the official validation images of those classes.
``build_imagenet100`` does exactly that with a fixed seed and writes, into ``out``:

* ``classes.txt``: the chosen WordNet ids, one per line; line ``k`` is label ``k``;
* ``train.txt``, ``val.txt``, ``test.txt``: ``<path relative to the ImageNet folder> <label>``
  per line, for full-resolution training with any loader;
* ``imagenet100_<size>.npz`` for each requested size: the packed uint8 format
  (``dnbook.data.packed``) with the three splits, each image resized so that its shorter side
  is ``size`` and centre-cropped to ``size x size``;
* ``meta.json``: the settings and the split sizes.

Expected layout (the usual one after extracting ILSVRC2012 and sorting the validation images
into class folders)::

    IMAGENET/train/n01440764/*.JPEG
    IMAGENET/val/n01440764/*.JPEG
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from dnbook._io import write_json, write_text
from dnbook._validation import check_positive_int
from dnbook.data.packed import save_packed
from dnbook.data.registry import DATASETS

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
NUM_CLASSES = DATASETS["imagenet100_32"].num_classes
VAL_FRACTION = DATASETS["imagenet100_32"].val_fraction


def list_images(folder: Path) -> dict[str, list[Path]]:
    """``{class folder name: sorted image paths}`` for every sub-folder of ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist; expected ImageNet's layout train/<wnid>/*.JPEG and "
            "val/<wnid>/*.JPEG (see data_scripts/README.md)"
        )
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def choose_classes(wnids: Sequence[str], num_classes: int, seed: int) -> list[str]:
    """``num_classes`` of ``wnids`` drawn at random with ``seed``, returned sorted (label order)."""
    wnids = sorted(wnids)
    if num_classes > len(wnids):
        raise ValueError(f"asked for {num_classes} classes, but the folder has only {len(wnids)}")
    chosen = np.random.default_rng(seed).choice(len(wnids), size=num_classes, replace=False)
    return sorted(wnids[i] for i in chosen)


def split_files(
    train: dict[str, list[Path]],
    test: dict[str, list[Path]],
    classes: Sequence[str],
    val_fraction: float,
    seed: int,
) -> dict[str, list[tuple[Path, int]]]:
    """Train / val / test lists of ``(path, label)``: ``val_fraction`` of each class's training
    images (rounded, chosen with ``seed``) become validation; the official val set is test."""
    rng = np.random.default_rng([seed, 1])  # a stream apart from the class draw
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for label, wnid in enumerate(classes):
        if wnid not in test or not test[wnid]:
            raise FileNotFoundError(
                f"no validation images for class {wnid}; expected val/{wnid}/*.JPEG "
                "(sort the official validation images into class folders first)"
            )
        files = train[wnid]
        n_val = round(val_fraction * len(files))
        is_val = np.zeros(len(files), dtype=bool)
        is_val[rng.permutation(len(files))[:n_val]] = True
        splits["train"] += [(p, label) for p, v in zip(files, is_val, strict=True) if not v]
        splits["val"] += [(p, label) for p, v in zip(files, is_val, strict=True) if v]
        splits["test"] += [(p, label) for p in test[wnid]]
    return splits


def load_resized(path: Path, sizes: Sequence[int]) -> list[np.ndarray]:
    """The image at ``path`` as uint8 (size, size, 3) arrays, one per size: shorter side
    resized to ``size`` (bicubic, antialiased), then centre-cropped."""
    with Image.open(path) as image:
        # Let the JPEG decoder skip detail the smallest output cannot show (1/2 .. 1/8 scale,
        # never below max(sizes)): many times faster on full-size ImageNet photos.
        image.draft("RGB", (max(sizes), max(sizes)))
        image = image.convert("RGB")
        return [
            np.asarray(ImageOps.fit(image, (s, s), method=Image.Resampling.BICUBIC)) for s in sizes
        ]


def _resize_all(paths: Iterable[Path], sizes: Sequence[int], workers: int) -> list[np.ndarray]:
    """Stacked (N, size, size, 3) arrays, one per size, decoding each file once."""
    paths = list(paths)
    work = partial(load_resized, sizes=sizes)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = list(pool.map(work, paths, chunksize=64))
    else:
        images = [work(p) for p in paths]
    empty = [np.zeros((0, s, s, 3), dtype=np.uint8) for s in sizes]
    return [np.stack(per_size) for per_size in zip(*images, strict=True)] if images else empty


def build_imagenet100(
    imagenet: str | Path,
    out: str | Path,
    sizes: Sequence[int] = (32,),
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
    val_fraction: float = VAL_FRACTION,
    workers: int = 1,
) -> dict[str, Path]:
    """Build ImageNet-100 from ``imagenet`` into ``out`` (see the module docstring) and return
    the paths written, by name (``"classes"``, ``"train"``, ..., ``"imagenet100_32"``)."""
    imagenet, out = Path(imagenet), Path(out)
    if not sizes:
        raise ValueError(f"sizes must be positive integers, got {list(sizes)}")
    for size in sizes:
        check_positive_int("each size", size)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, test = list_images(imagenet / "train"), list_images(imagenet / "val")
    classes = choose_classes(list(train), num_classes, seed)
    splits = split_files(train, test, classes, val_fraction, seed)

    out.mkdir(parents=True, exist_ok=True)
    written = {"classes": out / "classes.txt", "meta": out / "meta.json"}
    write_text(written["classes"], "".join(f"{wnid}\n" for wnid in classes))
    for split, items in splits.items():
        written[split] = out / f"{split}.txt"
        lines = (f"{p.relative_to(imagenet).as_posix()} {label}\n" for p, label in items)
        write_text(written[split], "".join(lines))

    resized = {
        split: _resize_all((p for p, _ in items), sizes, workers) for split, items in splits.items()
    }
    for k, size in enumerate(sizes):
        name = f"imagenet100_{size}"
        source = (
            f"ImageNet-100 from {imagenet}: {num_classes} classes drawn with seed {seed}, "
            f"{val_fraction:.0%} of each class's training images as validation, the official "
            f"validation images as test; shorter side resized to {size} px, centre crop"
        )
        packed = {
            split: (resized[split][k], np.array([label for _, label in items], dtype=np.int64))
            for split, items in splits.items()
        }
        written[name] = save_packed(out / f"{name}.npz", packed, classes, source)

    meta = {
        "imagenet": str(imagenet.resolve()),
        "seed": seed,
        "num_classes": num_classes,
        "val_fraction": val_fraction,
        "sizes": list(sizes),
        "counts": {split: len(items) for split, items in splits.items()},
    }
    write_json(written["meta"], meta)
    return written
