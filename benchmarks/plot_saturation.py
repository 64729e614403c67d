"""DN-B's SC-module over training: saturation and dead units against the step, one line per
variant and learning rate, the mean over seeds with the seeds' range shaded.

    python benchmarks/plot_saturation.py --profile cpu
    python benchmarks/plot_saturation.py --profile cpu --only "^DN-B (default|raw input)"

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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dnbook.engine import get_profile  # noqa: E402
from dnbook.engine.environment import REPO_ROOT  # noqa: E402
from dnbook.engine.saturation import METRICS  # noqa: E402
from dnbook.report import experiment_runs  # noqa: E402

TITLES = {
    "alpha_saturated": "alpha within 0.02 of 0 or 2",
    "lambda_saturated": "lambda within 0.02 of -1 or 1",
    "fc1_dead_units": "FC1 units off on every probe image",
    "fc1_zero_images": "images with every FC1 unit off (layer = BN)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--experiment", default="dnb_design_v2")
    parser.add_argument("--only", default="^DN-B default", help="regex on the variant label")
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
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    rows = []
    by_line: dict[str, list[dict]] = {}
    for r in probed:
        by_line.setdefault(variants[r["hash"]], []).append(r)
        record = r["saturation"]
        rows.append(
            {"variant": variants[r["hash"]], "seed": r["seed"], "hash": r["hash"]}
            | {k: record[args.group][k][-1] for k in METRICS}
        )
    for ax, metric in zip(axes.flat, METRICS, strict=True):
        for label, runs in sorted(by_line.items()):
            steps = min((r["saturation"]["step"] for r in runs), key=len)
            values = np.array(
                [r["saturation"][args.group][metric][: len(steps)] for r in runs], dtype=float
            )
            if np.isnan(values).all():
                continue
            line = ax.plot(steps, 100 * values.mean(0), label=f"{label} ({len(runs)} seeds)")[0]
            ax.fill_between(
                steps,
                100 * values.min(0),
                100 * values.max(0),
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        ax.set_title(TITLES[metric], fontsize=9)
        ax.set_ylabel("%")
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"{args.experiment} at profile {profile.name}, DN-B layers: {args.group}; "
        "mean over seeds, shaded: the seeds' range"
    )
    fig.tight_layout()
    out_dir = REPO_ROOT / "results" / profile.name
    png = out_dir / f"saturation_{args.experiment}.png"
    fig.savefig(png, dpi=110)
    table = pd.DataFrame(rows).sort_values(["variant", "seed"])
    table.to_csv(png.with_suffix(".csv"), index=False, float_format="%.5f")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
