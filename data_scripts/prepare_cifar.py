"""Download CIFAR-10 / CIFAR-100 and pack them for dnbook.

    python data_scripts/prepare_cifar.py --dataset cifar10          # or cifar100, or all

downloads the official "python version" archive (md5-checked by torchvision) into
``<cache>/downloads`` and writes ``<cache>/<dataset>.npz``, which ``load_dataset`` then reads.
``<cache>`` is ``$DNBOOK_CACHE`` or ``~/.cache/dnbook``. Without internet, copy the extracted
archive folder (``cifar-10-batches-py`` or ``cifar-100-python``) to the machine and pass it
with ``--extracted``.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
from pathlib import Path

from dnbook.data.cifar import _torchvision_class, download_cifar, pack_cifar_python
from dnbook.data.paths import cache_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=["cifar10", "cifar100", "all"],
        default="cifar10",
        help="which archive to prepare (default: cifar10)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="where to download and extract the archives (default: <cache>/downloads)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the packed <dataset>.npz (default: the cache folder, where "
        "load_dataset looks)",
    )
    parser.add_argument(
        "--extracted",
        type=Path,
        default=None,
        help="convert this already-extracted archive folder instead of downloading "
        "(needs a single --dataset)",
    )
    args = parser.parse_args(argv)
    names = ["cifar10", "cifar100"] if args.dataset == "all" else [args.dataset]
    if args.extracted is not None and len(names) > 1:
        parser.error("--extracted converts one archive: pass --dataset cifar10 or cifar100")
    out = args.out if args.out is not None else cache_dir()
    for name in names:
        start = time.perf_counter()
        if args.extracted is not None:
            folder = args.extracted
        else:
            try:
                folder = download_cifar(name, args.root or cache_dir() / "downloads")
            except (urllib.error.URLError, OSError, RuntimeError) as error:
                # One line, not the downloader's traceback: where it tried, and what else works.
                url = _torchvision_class(name).url
                reason = getattr(error, "reason", None) or error
                sys.exit(
                    f"prepare_cifar.py: could not download {url} ({reason}). Offline: copy the "
                    f"extracted archive here and pass --extracted <folder> --dataset {name}, or "
                    "(CIFAR-10) set DNBOOK_DATA to a folder holding cifar10_jpegbytes.npz."
                )
        path = pack_cifar_python(name, folder, out / f"{name}.npz")
        print(f"{name}: wrote {path} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
