"""DN-B's SC-module over training: saturation and dead units against the step, one line per
variant and learning rate, the mean over seeds with the seeds' range shaded.

    python benchmarks/plot_saturation.py --profile cpu
    python benchmarks/plot_saturation.py --profile cpu --only "^DN-B (old default|raw input)"
    python benchmarks/plot_saturation.py --profile cpu --experiment table8 --only "^DN-B"

reads the ``saturation`` record (``dnbook.engine.saturation``) of every stored run of
``--experiment`` (default ``dnb_design_v2``) whose variant label matches ``--only``, pooled over
the DN-B layers (``--group all``, or ``first`` / ``last`` for one layer), and writes
``results/<profile>/saturation_<experiment>.png`` and a CSV of the final values per run.
Runs stored before the trainer had the probe have no record and are counted, not drawn.
"""

from __future__ import annotations

import argparse
import re

import matplotlib

matplotlib.use("Agg")

from dnbook.engine import get_profile  # noqa: E402
from dnbook.engine.environment import REPO_ROOT  # noqa: E402
from dnbook.report import experiment_runs, plot_saturation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--experiment", default="dnb_design_v2")
    parser.add_argument(
        "--only", default="^DN-B (old default|raw input)", help="regex on the variant label"
    )
    parser.add_argument("--group", default="all", choices=("all", "first", "last"))
    args = parser.parse_args()
    profile = get_profile(args.profile)
    frame, results = experiment_runs(args.experiment, profile)
    if frame.empty:
        raise SystemExit(f"nothing stored for {args.experiment} at profile {profile.name}")
    variants = dict(zip(frame["hash"], frame["variant"].astype(str), strict=True))
    chosen = [r for r in results if re.search(args.only, variants[r["hash"]])]
    probed = [r for r in chosen if r.get("saturation")]
    print(
        f"{len(chosen)} runs match {args.only!r}; {len(probed)} have a saturation record "
        f"({len(chosen) - len(probed)} were trained before the probe existed)"
    )
    if not probed:
        return 1
    fig, table = plot_saturation(probed, variants, args.group)
    fig.suptitle(
        f"{args.experiment} at profile {profile.name}, DN-B layers: {args.group}; "
        "mean over seeds, shaded: the seeds' range"
    )
    fig.tight_layout()
    out_dir = REPO_ROOT / "results" / profile.name
    png = out_dir / f"saturation_{args.experiment}.png"
    fig.savefig(png, dpi=110)
    table.to_csv(png.with_suffix(".csv"), index=False, float_format="%.5f")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
