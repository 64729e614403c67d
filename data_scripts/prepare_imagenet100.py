"""Build ImageNet-100 (the paper's protocol) from a local ImageNet folder.

    python data_scripts/prepare_imagenet100.py --imagenet /data/imagenet --size 32 64

draws 100 classes at random with ``--seed``, keeps 20% of each class's training images as
validation, takes the official validation images of those classes as test, and writes file
lists (for full-resolution training) and packed low-resolution copies
(``imagenet100_<size>.npz``, read by ``load_dataset("imagenet100_<size>")``) into ``--out``.
The ImageNet folder must hold ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``
(see data_scripts/README.md).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dnbook.data.imagenet100 import NUM_CLASSES, VAL_FRACTION, build_imagenet100
from dnbook.data.paths import cache_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--imagenet",
        type=Path,
        required=True,
        help="ImageNet folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <cache>/imagenet100, where load_dataset looks; "
        "<cache> is $DNBOOK_CACHE or ~/.cache/dnbook)",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=[32],
        help="side of the packed low-resolution copies in pixels, e.g. 32 64 (default: 32); "
        "each image is decoded once for all sizes",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the class draw and of the split (default: 0)"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=NUM_CLASSES,
        help=f"classes to draw (default: {NUM_CLASSES})",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help=f"share of each class's training images kept for validation (default: {VAL_FRACTION})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes decoding and resizing images (default: all cores)",
    )
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else cache_dir() / "imagenet100"
    start = time.perf_counter()
    written = build_imagenet100(
        args.imagenet,
        out,
        sizes=args.size,
        seed=args.seed,
        num_classes=args.num_classes,
        val_fraction=args.val_fraction,
        workers=args.workers,
    )
    for name, path in written.items():
        print(f"{name:>16}: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
