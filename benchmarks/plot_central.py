"""The book's central figure: test accuracy against the learning rate, BN and DN-B, one panel
per model, mean and 95% t interval over the stored seeds, with the paper's points (ImageNet-100,
its own y axis) at their relative learning rates.

    python benchmarks/plot_central.py --profile cpu

reads every stored run of the experiments that train BN and DN-B(16,1)/(16,oup) at batch 64 over
learning rates (``lr_sweep``, ``cpu_pilot``'s bf16 runs, ``table2``, ``table3_resnet18``,
``table8``, ``table8_normalized_input``, ``dnb_design_v2``'s default and control, and
``dnc_failure``'s BN and DN-B controls; runs with the profile's default precision only), and
writes ``results/<profile>/central_lr.png`` and a CSV of the points beside it. A point
with one seed is drawn without an interval; the legend says how many seeds each line has. The
paper's learning rates are placed at ``lr * lr_star / 0.2``.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from dnbook.claims.verdicts import TEST, paired_interval  # noqa: E402
from dnbook.engine import get_profile  # noqa: E402
from dnbook.engine.environment import REPO_ROOT  # noqa: E402
from dnbook.engine.profiles import PAPER_LR  # noqa: E402
from dnbook.norms.registry import canonical_spec, parse_spec  # noqa: E402
from dnbook.report import experiment_runs  # noqa: E402

EXPERIMENTS = (
    "lr_sweep",
    "cpu_pilot",
    "table2",
    "table3_resnet18",
    "table8",
    "table8_normalized_input",
    "dnb_design_v2",
    "dnc_failure",
)
# canonical specs (defaults left out): today's DN-B pools the raw input; the first sweep's and
# the design study's incumbent pooled the normalized feature, drawn as a line of its own
NORMS = {
    "bn": "BN",
    "dnb:r=16,g=1": "DN-B(16,1)",
    "dnb:r=16,g=oup": "DN-B(16,oup)",
    "dnb:r=16,g=1,input=normalized": "DN-B(16,1), old default (normalized SC input)",
}
# one colour per norm in both panels
COLORS = dict(zip(NORMS.values(), ("tab:blue", "tab:orange", "tab:red", "tab:green"), strict=True))
MODELS = {"resnet18": "ResNet-18", "mobilenet_v2": "MobileNetV2"}

# The paper's test accuracies (ImageNet-100, 240 epochs) at its learning rates: Table 3's
# res-18 rows (its DN-B rows are DN-B(r, oup) with r = 4 at 0.2 and 0.5, r = 16 at 0.8) and
# Table 8 (MobileNetV2, DN-B(16,1)).
PAPER_POINTS = [
    ("resnet18", "BN", 0.2, 85.00),
    ("resnet18", "BN", 0.5, 84.64),
    ("resnet18", "BN", 0.8, 82.88),
    ("resnet18", "DN-B", 0.2, 84.36),
    ("resnet18", "DN-B", 0.5, 85.34),
    ("resnet18", "DN-B", 0.8, 84.78),
    ("mobilenet_v2", "BN", 0.2, 82.50),
    ("mobilenet_v2", "BN", 0.5, 74.12),
    ("mobilenet_v2", "DN-B", 0.2, 84.08),
    ("mobilenet_v2", "DN-B", 0.5, 83.24),
]


def points(profile) -> pd.DataFrame:
    """One row per (model, norm, lr): mean test accuracy, its 95% interval, seeds."""
    frames = [experiment_runs(name, profile)[0] for name in EXPERIMENTS]
    runs = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    runs = runs.drop_duplicates("hash")
    runs = runs[runs["batch_size"] == 64]
    runs["norm"] = [canonical_spec(*parse_spec(spec)) for spec in runs["norm"]]
    runs = runs[runs["norm"].isin(NORMS)]
    # cpu_pilot's float32 runs repeat a configuration in another precision: left out
    runs = runs[runs["amp"].astype(bool) & runs["channels_last"].astype(bool)]
    # a diverged run is a real outcome at that lr: count it at chance, as the verdicts do
    runs["acc"] = runs[TEST].astype(float).where(runs["status"] != "diverged", 10.0)
    rows = []
    for (model, norm, lr), group in runs.groupby(["model", "norm", "lr"]):
        acc = group["acc"].to_numpy()
        low = high = float("nan")
        if len(acc) >= 2:
            interval = paired_interval(acc)
            low, high = interval.low, interval.high
        rows.append(
            {
                "model": model,
                "norm": NORMS[norm],
                "lr": lr,
                "mean": acc.mean(),
                "low": low,
                "high": high,
                "seeds": len(acc),
                "diverged": int((group["status"] == "diverged").sum()),
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    table = points(profile)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (model, title) in zip(axes, MODELS.items(), strict=True):
        paper_ax = ax.twinx()
        for norm, group in table[table["model"] == model].groupby("norm"):
            group = group.sort_values("lr")
            seeds = f"{group['seeds'].min()}-{group['seeds'].max()}"
            errors = [
                (group["mean"] - group["low"]).fillna(0),
                (group["high"] - group["mean"]).fillna(0),
            ]
            line = ax.errorbar(
                group["lr"],
                group["mean"],
                yerr=errors,
                marker="o",
                capsize=3,
                color=COLORS[norm],
                label=f"{norm} (ours, {seeds} seeds)",
            ).lines[0]
            # the paper's DN-B rows: DN-B(16,1) in Table 8, DN-B(r, oup) in Table 3
            paper_dnb = "DN-B(16,1)" if model == "mobilenet_v2" else "DN-B(16,oup)"
            paper = [p for p in PAPER_POINTS if p[0] == model and norm.startswith(p[1])]
            if paper and norm in ("BN", paper_dnb):
                paper_ax.plot(
                    [profile.scaled_lr(p[2]) for p in paper],
                    [p[3] for p in paper],
                    marker="D",
                    linestyle="--",
                    fillstyle="none",
                    color=line.get_color(),
                    label=f"{paper[0][1]} (paper, ImageNet-100)",
                )
        ax.axvline(profile.lr_star, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted(set(table["lr"]) | {profile.scaled_lr(p[2]) for p in PAPER_POINTS})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(
            f"learning rate (lr* = {profile.lr_star:g} stands for the paper's {PAPER_LR})"
        )
        ax.set_ylabel(f"test accuracy, CIFAR-10, profile {profile.name} (%)")
        paper_ax.set_ylabel("paper's test accuracy, ImageNet-100 (%)")
        ax.set_title(f"{title} w{profile.width_mult:g}: mean and 95% t interval over seeds")
        handles = ax.get_legend_handles_labels()
        paper_handles = paper_ax.get_legend_handles_labels()
        ax.legend(handles[0] + paper_handles[0], handles[1] + paper_handles[1], fontsize=7)
    fig.tight_layout()
    out_dir = REPO_ROOT / "results" / profile.name
    fig.savefig(out_dir / "central_lr.png", dpi=110)
    table.to_csv(out_dir / "central_lr.csv", index=False, float_format="%.2f")
    print(table.to_markdown(index=False, floatfmt=("", "", "g", ".2f", ".2f", ".2f", "d", "d")))
    print(f"wrote {out_dir / 'central_lr.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
