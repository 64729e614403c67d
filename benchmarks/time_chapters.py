"""Execute every chapter of the book (and its solutions) at a profile and record how long each
took, with the hardware and versions, for the tour chapter's table.

    DNBOOK_DATA=../shared/data python benchmarks/time_chapters.py --profile ci

writes ``results/chapter_times/<profile>.json``. Notebooks are executed in a fresh kernel each,
in memory; ``--inplace`` also saves each executed notebook, so one pass refreshes the book.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from dnbook._io import write_json
from dnbook.engine import provenance
from dnbook.engine.environment import REPO_ROOT


def chapter_paths(root: Path) -> list[Path]:
    notebooks = root / "notebooks"
    return sorted(notebooks.glob("[0-9][0-9]*_*.ipynb")) + sorted(
        (notebooks / "solutions").glob("[0-9][0-9]*_*.ipynb")
    )


def time_notebook(path: Path, timeout: int, inplace: bool = False) -> dict:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    status = "ok"
    try:
        client.execute()
    except Exception as error:  # record the failure, keep timing the others
        status = f"error: {type(error).__name__}"
    if inplace and status == "ok":
        nbformat.write(notebook, path)
    seconds = round(time.perf_counter() - start, 1)
    return {"notebook": str(path.relative_to(REPO_ROOT)), "seconds": seconds, "status": status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        default=os.environ.get("DNBOOK_PROFILE", "ci"),
        help="the profile the chapters train at (sets DNBOOK_PROFILE)",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    parser.add_argument("--out", type=Path, default=None, help="output JSON path")
    parser.add_argument(
        "--inplace", action="store_true", help="save each executed notebook (outputs included)"
    )
    args = parser.parse_args(argv)
    os.environ["DNBOOK_PROFILE"] = args.profile
    rows = []
    for path in chapter_paths(REPO_ROOT):
        rows.append(time_notebook(path, args.timeout, args.inplace))
        row = rows[-1]
        print(f"{row['seconds']:8.1f} s  {row['status']:<6} {row['notebook']}", flush=True)
    out = args.out or REPO_ROOT / "results" / "chapter_times" / f"{args.profile}.json"
    record = {
        "profile": args.profile,
        **provenance.record(" ".join([sys.executable, *sys.argv])),
        "load_average_after": os.getloadavg(),
        "chapters": rows,
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    write_json(out, record)
    print(f"wrote {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
