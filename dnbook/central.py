"""The book's central figure: test accuracy against the learning rate, BN and DN-B.

One panel per model (ResNet-18, MobileNetV2), the mean and 95% t interval over every stored seed
of each (norm, learning rate) at batch 64, and the paper's own points on a second y axis
(ImageNet-100, 240 epochs), placed at ``profile.scaled_lr(lr)``: the paper's lr 0.2 sits at the
profile's ``lr_star``. The points come from every experiment that trains BN and DN-B at batch 64
over learning rates (:data:`EXPERIMENTS`); a configuration two experiments share counts once.

    from dnbook.central import central_points, plot_central
    plot_central("cpu")

``python benchmarks/plot_central.py --profile cpu`` writes the figure and its table beside the
runs (``results/<profile>/central_lr.png`` and ``.csv``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from dnbook.claims.verdicts import TEST, chance, paired_interval
from dnbook.engine.profiles import PAPER_LR, Profile, get_profile
from dnbook.norms.registry import canonical_spec, parse_spec
from dnbook.report import experiment_runs

# The experiments whose batch-64 runs of the norms below are points of the figure.
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
COLORS = dict(zip(NORMS.values(), ("tab:blue", "tab:orange", "tab:red", "tab:green"), strict=True))
MODELS = {"resnet18": "ResNet-18", "mobilenet_v2": "MobileNetV2"}

# The paper's test accuracies (ImageNet-100, 240 epochs) at its learning rates: Table 3's
# ResNet-18 rows (its DN-B rows are DN-B(r, oup), r = 4 at 0.2 and 0.5, r = 16 at 0.8) and
# Table 8 (MobileNetV2, DN-B(16,1)). Quoted from the paper, never measured here.
PAPER_POINTS = (
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
)
# the norm whose line the paper's DN-B points sit beside, per model
PAPER_DNB = {"mobilenet_v2": "DN-B(16,1)", "resnet18": "DN-B(16,oup)"}


def central_runs(profile: str | Profile) -> pd.DataFrame:
    """The stored runs the figure reads: batch 64, a norm of :data:`NORMS` (``norm`` column
    canonical), the engine's default training path (``amp`` and ``channels_last`` on:
    ``cpu_pilot``'s other paths repeat a configuration in another precision or layout), each
    configuration once; ``acc`` is the test accuracy with a diverged run at chance."""
    frames = [experiment_runs(name, profile)[0] for name in EXPERIMENTS]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    runs = pd.concat(frames, ignore_index=True).drop_duplicates("hash")
    runs = runs[runs["batch_size"] == 64].copy()
    runs["norm"] = [canonical_spec(*parse_spec(spec)) for spec in runs["norm"]]
    runs = runs[runs["norm"].isin(NORMS)]
    runs = runs[runs["amp"].astype(bool) & runs["channels_last"].astype(bool)]
    at_chance = runs["dataset"].map(chance)
    runs["acc"] = runs[TEST].astype(float).where(runs["status"] != "diverged", at_chance)
    return runs


def central_points(profile: str | Profile) -> pd.DataFrame:
    """One row per (model, norm, lr) of :func:`central_runs`: the mean test accuracy, its 95% t
    interval (NaN with one seed), the number of seeds and of diverged runs."""
    runs = central_runs(profile)
    columns = ["model", "norm", "lr", "mean", "low", "high", "seeds", "diverged"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (model, norm, lr), group in runs.groupby(["model", "norm", "lr"]):
        acc = group["acc"].to_numpy()
        interval = paired_interval(acc) if len(acc) >= 2 else None
        rows.append(
            {
                "model": model,
                "norm": NORMS[norm],
                "lr": lr,
                "mean": acc.mean(),
                "low": interval.low if interval else float("nan"),
                "high": interval.high if interval else float("nan"),
                "seeds": len(acc),
                "diverged": int((group["status"] == "diverged").sum()),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def plot_central(profile: str | Profile, table: pd.DataFrame | None = None) -> plt.Figure:
    """The figure: one panel per model of :data:`MODELS`, our points with their intervals on
    the left axis, the paper's (dashed, hollow diamonds) on the right one. ``table`` defaults
    to :func:`central_points` of ``profile``."""
    profile = get_profile(profile)
    table = central_points(profile) if table is None else table
    fig, axes = plt.subplots(1, len(MODELS), figsize=(12, 4.5))
    for ax, (model, title) in zip(axes, MODELS.items(), strict=True):
        paper_ax = ax.twinx()
        for norm, group in table[table["model"] == model].groupby("norm"):
            group = group.sort_values("lr")
            seeds = f"{group['seeds'].min()}-{group['seeds'].max()}"
            errors = [
                (group["mean"] - group["low"]).fillna(0),
                (group["high"] - group["mean"]).fillna(0),
            ]
            ax.errorbar(
                group["lr"],
                group["mean"],
                yerr=errors,
                marker="o",
                capsize=3,
                color=COLORS[norm],
                label=f"{norm} (ours, {seeds} seeds)",
            )
            paper = [p for p in PAPER_POINTS if p[0] == model and norm.startswith(p[1])]
            if paper and norm in ("BN", PAPER_DNB[model]):
                paper_ax.plot(
                    [profile.scaled_lr(p[2]) for p in paper],
                    [p[3] for p in paper],
                    marker="D",
                    linestyle="--",
                    fillstyle="none",
                    color=COLORS[norm],
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
        handles, labels = ax.get_legend_handles_labels()
        paper_handles, paper_labels = paper_ax.get_legend_handles_labels()
        ax.legend(handles + paper_handles, labels + paper_labels, fontsize=7)
    fig.tight_layout()
    return fig
