"""Plot the stored stage-0 learning-rate sweep of a profile: test accuracy (best-validation
epoch) against the learning rate, one line per model and norm, and mark lr_star.

    python benchmarks/plot_lr_sweep.py --profile cpu

writes ``results/<profile>/lr_sweep.png`` (committed beside the runs it plots).
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dnbook.engine import get_profile  # noqa: E402
from dnbook.engine.environment import REPO_ROOT  # noqa: E402
from dnbook.report import experiment_runs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    runs, _ = experiment_runs("lr_sweep", profile)
    runs = runs[runs["status"] == "finished"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (model, norm), group in runs.groupby(["model", "norm"]):
        group = group.sort_values("lr")
        label = f"{model}, {'BN' if norm == 'bn' else 'DN-B ' + norm}"
        ax.plot(group["lr"], group["test_acc_at_best_val"], marker="o", label=label)
    ax.axvline(profile.lr_star, color="grey", linestyle="--", label=f"lr* = {profile.lr_star:g}")
    ax.axhline(10, color="black", linewidth=0.8, linestyle=":", label="chance (10%)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate (absolute)")
    ax.set_ylabel("test accuracy at best validation epoch (%)")
    seeds = sorted(runs["seed"].unique())
    ax.set_title(f"Stage 0 at the {profile.name} profile (seed {', '.join(map(str, seeds))})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = REPO_ROOT / "results" / profile.name / "lr_sweep.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
