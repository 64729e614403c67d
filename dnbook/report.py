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
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from dnbook._io import write_text
from dnbook.data.registry import DATASETS
from dnbook.engine import TrainConfig, load_results, results_dir, results_frame
from dnbook.engine.profiles import Profile, get_profile
from dnbook.experiments import EXPERIMENTS

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


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """The engine's :func:`~dnbook.engine.results_frame` plus the columns the report needs:
    ``family`` (the hash of the config with seed 0: runs that differ only by seed share it) and
    ``hardware`` (the GPU, else the CPU)."""
    frame = results_frame(results)
    frame["family"] = [TrainConfig.from_dict(r["config"]).replace(seed=0).hash() for r in results]
    frame["hardware"] = [
        (r.get("hardware") or {}).get("gpu") or (r.get("hardware") or {}).get("cpu") or "?"
        for r in results
    ]
    return frame


def curves_frame(results: list[dict]) -> pd.DataFrame:
    """One row per run, epoch and split: ``hash, seed, epoch, split, accuracy``."""
    rows = [
        {
            "hash": result["hash"],
            "seed": result["config"]["seed"],
            "epoch": row["epoch"],
            "split": split,
            "accuracy": row[f"{split}_acc"],
        }
        for result in results
        for row in result.get("curves") or []
        for split in ("val", "test")
        if row.get(f"{split}_acc") is not None
    ]
    return pd.DataFrame(rows, columns=["hash", "seed", "epoch", "split", "accuracy"])


def split_size(config, split: str) -> int:
    """Images in ``split`` (``"train"``, ``"val"`` or ``"test"``) of a run's config (a dict or a
    row of :func:`runs_frame`): its own subset size, else the whole split of its dataset."""
    value = config[f"n_{split}"]
    if value is None or value != value:  # None, or NaN in a DataFrame column
        return DATASETS[config["dataset"]].splits[split]
    return int(value)


# Profiles from the largest to the smallest: what a chapter shows when several have results.
# The new `cpu` profile is left out until the experiment chapters are re-executed on its runs
# (so far it holds the stage-0 sweep and the pilots, which no chapter shows): a chapter must not
# mix its few first runs with cpu_v1's for the other variants.
PROFILE_ORDER = ("paper", "gpu", "cpu_v1", "ci")


def experiment_runs(
    name: str, profile: str | Profile, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The stored runs of experiment ``name`` at ``profile``: a :func:`runs_frame` with a
    ``variant`` column (the registry's label) and a ``profile`` column, in the experiment's
    variant order and then by seed, and the result dicts themselves. Both are empty when
    nothing is stored."""
    profile = get_profile(profile)
    labels = EXPERIMENTS[name].labels(profile)
    results = [r for r in load_results(profile.name, results_root) if r["hash"] in labels]
    if not results:
        return pd.DataFrame(), []
    frame = runs_frame(results)
    order = list(dict.fromkeys(labels.values()))
    frame["variant"] = pd.Categorical(frame["hash"].map(labels), order)
    frame["profile"] = profile.name
    frame = frame.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True)
    return frame, results


def largest_stored(
    name: str, results_root: str | Path | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """For every variant of experiment ``name``, the runs of the largest profile (in
    :data:`PROFILE_ORDER`) that has that variant stored; a grid half done at a large profile
    is completed from a smaller one, and the ``profile`` column says which is which."""
    frames, results = [], []
    for profile_name in PROFILE_ORDER:
        frame, stored = experiment_runs(name, profile_name, results_root)
        if frame.empty:
            continue
        shown = {v for f in frames for v in f["variant"]}
        keep = ~frame["variant"].isin(shown)
        frames.append(frame[keep])
        kept = set(frame.loc[keep, "hash"])
        results += [r for r in stored if r["hash"] in kept]
    if not frames:
        return pd.DataFrame(), []
    order = [label for label, _ in EXPERIMENTS[name].variants]
    order += [v for f in frames for v in f["variant"].cat.categories if v not in order]
    frame = pd.concat([f.astype({"variant": str}) for f in frames], ignore_index=True)
    frame["variant"] = pd.Categorical(frame["variant"], list(dict.fromkeys(order)))
    return frame.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True), results


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


def mean_std(values, unit: str = "") -> str:
    """``mean ± std`` of ``values`` (the value alone for one, "–" for none; the count is said
    elsewhere), for tables and the claims ledger."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}{unit}"
    return f"{values.mean():.2f}{unit} ± {values.std():.2f}"


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


def _markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' ``to_markdown`` needs the optional ``tabulate``)."""
    cells = [list(map(str, table.columns))] + [list(map(str, row)) for row in table.to_numpy()]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * len(table.columns))
    return "\n".join(lines)


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


def _section(title: str, notes: str, runs: pd.DataFrame, curves: pd.DataFrame, png: Path) -> str:
    lines = [f"## {title}", ""]
    if notes:
        lines += [notes, ""]
    lines += [_markdown(summary_table(runs)), ""]
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
