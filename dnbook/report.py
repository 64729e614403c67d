"""Stored results as a Markdown report: one table per experiment, one plot per experiment.

Each table has a row per variant of the experiment (its seeds pooled): the configuration knobs
that vary within the experiment, the status, the paper's three accuracy columns as mean ± std
over the seeds that finished, the number of seeds and the hardware. The columns follow Table 4
of the paper: train accuracy of the last epoch, best validation accuracy, and the test accuracy
of the best-validation weights. Runs that belong to no experiment (``python -m dnbook train``)
go to a last table. Beside ``report.md``, one PNG per experiment shows validation and test
accuracy against epoch with a band of one standard deviation over seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from dnbook._io import write_text
from dnbook.engine import load_results, results_dir, store
from dnbook.engine.profiles import Profile, get_profile
from dnbook.engine.saturation import METRICS as SATURATION_METRICS
from dnbook.engine.store import PROFILE_ORDER as PROFILE_ORDER
from dnbook.engine.store import curves_frame as curves_frame
from dnbook.engine.store import runs_frame as runs_frame
from dnbook.engine.store import split_size as split_size
from dnbook.experiments import EXPERIMENTS
from dnbook.tables import markdown_table
from dnbook.tables import mean_std as mean_std

# Result keys of the three accuracy columns (percent), and their headers.
ACCURACY_COLUMNS = {
    "train_acc": "train (last)",
    "best_val_acc": "val (best)",
    "test_acc_at_best_val": "test (best val)",
}
# TrainConfig fields shown when they vary within a table (seed never: seeds are pooled).
KNOBS = [
    "model",
    "norm",
    "width_mult",
    "dataset",
    "n_train",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "nesterov",
    "sync_bn",
]


def final_metrics(result: dict) -> dict[str, float]:
    """A result's ``train``, ``val`` and ``test`` accuracy (percent) as the report shows them;
    empty for a run that diverged."""
    final = result.get("final") or {}
    return {
        split: final[key]
        for split, key in zip(("train", "val", "test"), ACCURACY_COLUMNS, strict=True)
        if final.get(key) is not None
    }


def experiment_runs(
    name: str, profile: str | Profile, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`dnbook.engine.store.experiment_runs` of the registry's experiment ``name``."""
    return store.experiment_runs(EXPERIMENTS[name], profile, results_root)


def largest_stored(
    name: str, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`dnbook.engine.store.largest_stored` of the registry's experiment ``name``."""
    return store.largest_stored(EXPERIMENTS[name], results_root)


def seed_stats(runs: pd.DataFrame, metric: str = "test_acc_at_best_val") -> pd.DataFrame:
    """``runs`` pooled over seeds, numerically: per variant (and profile) the number of seeds,
    how many diverged, and the mean, standard deviation, minimum and maximum of ``metric`` over
    the seeds that finished (std is NaN with fewer than two)."""
    rows = []
    groups = runs.groupby(["variant", "profile"], sort=False, observed=True)
    for (variant, profile), group in groups:
        values = group.loc[group["status"] == "finished", metric].dropna()
        rows.append(
            {
                "variant": variant,
                "profile": profile,
                "seeds": len(group),
                "diverged": int((group["status"] == "diverged").sum()),
                "mean": values.mean(),
                "std": values.std(),
                "min": values.min(),
                "max": values.max(),
            }
        )
    return pd.DataFrame(rows)


def _status(group: pd.DataFrame) -> str:
    """``finished``, or how many seeds diverged and where the first of them did."""
    diverged = group[group["status"] == "diverged"]
    if diverged.empty:
        return ", ".join(sorted(group["status"].unique()))
    first = diverged.sort_values("diverged_step").iloc[0]
    return (
        f"**diverged** {len(diverged)}/{len(group)} "
        f"(step {first['diverged_step']:.0f}, {first['diverged_module']})"
    )


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (with a ``variant`` column) pooled over seeds: one row per variant, showing the
    knobs that vary between variants, the status, mean ± std of the accuracies, seeds, hardware."""
    varying = [knob for knob in KNOBS if runs[knob].astype(str).nunique() > 1]
    rows = []
    for variant, group in runs.groupby("variant", sort=False, observed=True):
        first = group.iloc[0]
        rows.append(
            {
                "variant": variant,
                **{knob: first[knob] for knob in varying},
                "status": _status(group),
                **{header: mean_std(group[key]) for key, header in ACCURACY_COLUMNS.items()},
                "seeds": len(group),
                "hardware": ", ".join(sorted(group["hardware"].unique())),
            }
        )
    return pd.DataFrame(rows)


def plot_curves(curves: pd.DataFrame, path: Path, title: str) -> Path:
    """Validation and test accuracy against epoch, one line per variant, band = ±1 std over
    seeds; saved as a PNG at ``path``."""
    grid = sns.relplot(
        data=curves,
        x="epoch",
        y="accuracy",
        hue="variant",
        hue_order=list(curves["variant"].unique()),
        col="split",
        marker="o",
        kind="line",
        errorbar="sd",
        height=3.2,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels("epoch", "accuracy (%)")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    grid.figure.suptitle(title, y=1.03)
    grid.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
    return path


SATURATION_TITLES = {
    "alpha_saturated": "alpha within 0.02 of 0 or 2",
    "lambda_saturated": "lambda within 0.02 of -1 or 1",
    "fc1_dead_units": "FC1 units off on every probe image",
    "fc1_zero_images": "images with every FC1 unit off (layer = BN)",
}


def plot_saturation(
    results: list[dict], labels: dict[str, str], group: str = "all"
) -> tuple[plt.Figure, pd.DataFrame]:
    """DN-B's SC-module over training, from the ``saturation`` records of stored ``results``
    (``dnbook.engine.saturation``): one panel per metric, one line per label (the mean over
    its seeds, shaded between the seeds' extremes) against the optimizer step. ``labels`` maps
    a result's hash to its line's label; ``group`` is ``"all"`` (every DN-B layer pooled),
    ``"first"`` or ``"last"``. Results without a record are left out. Returns the figure and
    the final values per run (fractions, one row per run)."""
    probed = [r for r in results if r.get("saturation") and r["hash"] in labels]
    by_line: dict[str, list[dict]] = {}
    for r in probed:
        by_line.setdefault(labels[r["hash"]], []).append(r)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, metric in zip(axes.flat, SATURATION_METRICS, strict=True):
        for label, runs in sorted(by_line.items()):
            steps = min((r["saturation"]["step"] for r in runs), key=len)
            values = np.array(
                [r["saturation"][group][metric][: len(steps)] for r in runs], dtype=float
            )
            if np.isnan(values).all():
                continue
            line = ax.plot(steps, 100 * values.mean(0), label=f"{label} ({len(runs)} seeds)")[0]
            ax.fill_between(
                steps, 100 * values.min(0), 100 * values.max(0),
                color=line.get_color(), alpha=0.2, linewidth=0,
            )  # fmt: skip
        ax.set_title(SATURATION_TITLES[metric], fontsize=9)
        ax.set_ylabel("%")
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    axes[0, 0].legend(fontsize=7)
    final = pd.DataFrame(
        [
            {"variant": labels[r["hash"]], "seed": r["seed"], "hash": r["hash"]}
            | {k: r["saturation"][group][k][-1] for k in SATURATION_METRICS}
            for r in probed
        ],
        columns=["variant", "seed", "hash", *SATURATION_METRICS],
    )
    return fig, final.sort_values(["variant", "seed"]).reset_index(drop=True)


def _section(title: str, notes: str, runs: pd.DataFrame, curves: pd.DataFrame, png: Path) -> str:
    lines = [f"## {title}", ""]
    if notes:
        lines += [notes, ""]
    lines += [markdown_table(summary_table(runs)), ""]
    # `runs` is in variant order; merging in that order keeps it for the legend
    curves = runs[["hash", "variant"]].merge(curves, on="hash")
    if not curves.empty:
        plot_curves(curves, png, title)
        lines += [f"![{title}]({png.name})", ""]
    return "\n".join(lines)


def render_report(
    profile: str | Profile | None = None,
    results_root: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Write ``report.md`` and its PNGs for every stored run of ``profile``.

    Args:
        profile: a profile or its name (default: :func:`get_profile`'s choice).
        results_root: the results root (default: every root the engine reads, see
            :func:`dnbook.engine.store.results_roots`).
        out_dir: where to write (default: ``<results root>/<profile>/report``, which git
            ignores).

    Returns:
        The path of ``report.md``.
    """
    profile = get_profile(profile)
    root = results_dir(results_root)
    out_dir = Path(out_dir) if out_dir is not None else root / profile.name / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    # every results root (the committed one and the reader's own, unless one is named)
    results = load_results(profile.name, results_root=results_root)
    lines = [
        f"# dnbook results, profile `{profile.name}`",
        "",
        f"{profile.description}. {len(results)} stored runs. Accuracies in percent, "
        "mean ± std over seeds; std needs two seeds or more.",
        "",
    ]
    if not results:
        lines.append("No stored results yet: run `python -m dnbook reproduce NAME`.")
    else:
        runs, curves = runs_frame(results), curves_frame(results)
        claimed: set[str] = set()
        for name, experiment in EXPERIMENTS.items():
            mine, _ = experiment_runs(name, profile, results_root)
            claimed |= set(experiment.labels(profile))
            if not mine.empty:
                title = f"{name}: {experiment.title} (paper: {experiment.paper_ref})"
                png = out_dir / f"{name}.png"
                lines.append(_section(title, experiment.notes, mine, curves, png))
        others = runs[~runs["hash"].isin(claimed)]
        if not others.empty:
            others = others.assign(
                variant=others["model"] + " " + others["norm"] + " #" + others["family"].str[:6]
            )
            lines.append(
                _section(
                    "Other runs",
                    "Runs that belong to no experiment of the registry.",
                    others,
                    curves,
                    out_dir / "other_runs.png",
                )
            )
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
