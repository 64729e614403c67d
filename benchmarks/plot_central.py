"""Write the book's central figure (:mod:`dnbook.central`) and its points beside the runs:
``results/<profile>/central_lr.png`` and ``central_lr.csv``, and print the points.

    python benchmarks/plot_central.py --profile cpu
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

from dnbook.central import central_points, plot_central  # noqa: E402
from dnbook.engine import get_profile  # noqa: E402
from dnbook.engine.environment import REPO_ROOT  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    table = central_points(profile)
    fig = plot_central(profile, table)
    out_dir = REPO_ROOT / "results" / profile.name
    fig.savefig(out_dir / "central_lr.png", dpi=110)
    table.to_csv(out_dir / "central_lr.csv", index=False, float_format="%.2f")
    print(table.to_markdown(index=False, floatfmt=("", "", "g", ".2f", ".2f", ".2f", "d", "d")))
    print(f"wrote {out_dir / 'central_lr.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
