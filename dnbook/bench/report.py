"""The benchmark's report: a run's figures as Markdown tables (median milliseconds and ratio
to the baseline per clock, images per second, the layers' counted memory traffic), and the
lines printed as it goes."""

from __future__ import annotations

from collections.abc import Sequence

from dnbook.tables import markdown_table

MODEL_TITLES = {"mobilenet_v2": "MobileNetV2", "resnet18": "ResNet-18"}


def _layer_phase(settings: dict) -> str:
    """What the layer benchmark timed."""
    if not settings.get("layer_eval"):
        return "forward + backward (float32, contiguous)"
    return (
        f"evaluation forward (eval mode, no gradients; {settings['memory_format']}, "
        f"--autocast {settings['autocast']} unless the spec says otherwise)"
    )


def _load_text(load: list[float] | None) -> str:
    return "unknown" if load is None else " ".join(f"{value:.2f}" for value in load)


def _ratio(row: dict, clock: str) -> str:
    value = row.get(f"ratio_{clock}")
    return "" if value is None else f"{value:.2f}"


def _timing_cells(row: dict, digits: int) -> list[str]:
    """Median wall ms, its ratio to the baseline, median CPU ms, its ratio ('' where absent)."""
    cells = []
    for clock in ("wall_ms", "cpu_ms"):
        value = row.get(f"median_{clock}")
        cells += ["" if value is None else f"{value:.{digits}f}", _ratio(row, clock)]
    return cells


def _table(intro: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table after a line of text; the first two columns left-aligned."""
    return ["", intro, "", markdown_table(rows, header, right=2)]


def markdown(result: dict) -> str:
    """The run's figures as Markdown tables: median milliseconds and ratio to BN per clock,
    and the layers' cost model."""
    settings = result["settings"]
    lines = [
        f"# Norm benchmark: {result['name']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['device']}; {result['hardware']['cpu']}; torch {result['versions']['torch']}; "
        f"{settings['threads']} threads; load average (1, 5, 15 min) before "
        f"{_load_text(result['load_average_before'])}, after "
        f"{_load_text(result['load_average_after'])}; {result['wall_time_s']:.0f} s in all.",
    ]
    timing = ["wall ms", "wall / BN", "CPU ms", "CPU / BN"]
    if result["models"]:
        lines += _table(
            f"{MODEL_TITLES.get(settings.get('model'), 'MobileNetV2')} (CIFAR stem, width "
            f"{settings['width']}), one SGD training step, "
            f"median over {settings['steps']} interleaved steps after {settings['warmup']} "
            "warm-up rounds:",
            ["batch", "norm", *timing, "images/s"],
            [
                [str(entry["batch_size"]), f"`{spec}`", *_timing_cells(row, 1)]
                + [f"{row['images_per_s']:.0f}"]
                for entry in result["models"]
                for spec, row in entry["norms"].items()
                if "error" not in row
            ],
        )
        lines += _whole_run(result)
    if result["layers"]:
        lines += _table(
            f"One layer, {_layer_phase(settings)}, median over {settings['layer_steps']} "
            "interleaved steps:",
            ["shape", "norm", *timing],
            [
                [str(tuple(entry["shape"])), f"`{spec}`", *_timing_cells(row, 2)]
                for entry in result["layers"]
                for spec, row in entry["norms"].items()
            ],
        )
    counts = ("kernels", "reads", "writes", "allocations")
    counted = [
        [str(tuple(entry["shape"])), f"`{spec}`"]
        + [f"{row['traffic']['forward'][k]} \\| {row['traffic']['backward'][k]}" for k in counts]
        for entry in result["layers"]
        for spec, row in entry["norms"].items()
        if "traffic" in row
    ]
    if counted:
        lines += _table(
            "Cost model of one layer's training forward | backward, counted at the ATen level: "
            "kernels (non-view ops), and activation-sized reads / writes / new allocations:",
            ["shape", "norm", *counts],
            counted,
        )
    return "\n".join(lines) + "\n"


def _seconds(values: list[float]) -> str:
    return f"{sum(values) / 1e3:.1f}" if values else ""


def _number(value: float | None, digits: int, missing: str = "") -> str:
    return missing if value is None else f"{value:,.{digits}f}"


def _whole_run(result: dict) -> list[str]:
    """The first calls (where a compiled model compiles), the steady steps, and the estimate of
    a whole run, on the CPU clock where there is one; and the specs that failed."""
    settings = result["settings"]
    clock = (
        "cpu_ms"
        if any(row.get("cpu_ms") for entry in result["models"] for row in entry["norms"].values())
        else "wall_ms"
    )
    rows, failed = [], []
    for entry in result["models"]:
        for spec, row in entry["norms"].items():
            if "error" in row:
                failed.append(f"- `{spec}` (batch {entry['batch_size']}) failed: {row['error']}")
            elif f"whole_run_{clock}" in row:
                dynamo = row.get("dynamo", {})
                graphs = " / ".join(
                    f"{dynamo[phase]['graphs']}, {dynamo[phase]['graph_breaks']}"
                    for phase in ("train", "eval", "train_after_eval")
                    if phase in dynamo
                )
                rows.append(
                    [
                        str(entry["batch_size"]),
                        f"`{spec}`",
                        _seconds(row[f"first_{clock}"]),
                        _number(row[f"median_{clock}"], 1),
                        _seconds(row[f"eval_first_{clock}"]),
                        _number(row[f"eval_median_{clock}"], 0),
                        _number(row[f"after_eval_{clock}"][0], 1),
                        _number(
                            row.get(f"break_even_{clock}"),
                            0,
                            "never" if spec in _compiled(entry) else "",
                        ),
                        _number(row[f"whole_run_{clock}"] / 1e3, 0),
                        _number(row.get(f"whole_run_ratio_{clock}"), 2),
                        graphs,
                    ]
                )
    lines = []
    if rows:
        name = "CPU" if clock == "cpu_ms" else "wall"
        lines += _table(
            f"A whole run, {name} time: the training steps' first calls (the first, then "
            f"{settings['warmup']} warm-up rounds; a compiled model compiles in them), the "
            f"steady step, evaluation at batch {settings['eval_batch']} (first call, then "
            "steady), one training step after evaluation, the training steps after which "
            "compiling has paid for itself against the same spec eager, and the estimate of a "
            f"run of {settings['run_steps']} steps and {settings['run_eval_batches']} "
            "evaluation batches (first calls as measured, the rest at the steady times), also "
            "as a ratio to the baseline's; Dynamo's graphs and graph breaks (train / eval / "
            "train after eval):",
            [
                "batch",
                "norm",
                "first calls s",
                "step ms",
                "eval first s",
                "eval ms",
                "step after eval ms",
                "break-even steps",
                "run s",
                "run / BN",
                "graphs, breaks",
            ],
            rows,
        )
    if failed:
        lines += ["", "Failed:", "", *failed]
    return lines


def _compiled(entry: dict) -> set[str]:
    """The specs of a batch-size entry compared with their eager form (those with a
    ``break_even`` field on some clock, even ``None``)."""
    return {
        spec
        for spec, row in entry["norms"].items()
        if any(key.startswith("break_even_") for key in row)
    }


def print_rows(title: str, rows: dict[str, dict]) -> None:
    print(title, flush=True)
    for spec, row in rows.items():
        if "error" in row:
            print(f"  {spec:<28} failed: {row['error']}", flush=True)
            continue
        cpu = row.get("median_cpu_ms")
        cpu_text = "" if cpu is None else f"  cpu {cpu:9.2f} ms  x{row.get('ratio_cpu_ms', 0):.2f}"
        print(
            f"  {spec:<28} wall {row['median_wall_ms']:9.2f} ms  "
            f"x{row.get('ratio_wall_ms', 0):.2f}{cpu_text}",
            flush=True,
        )
        if "first_wall_ms" in row:
            clock = "cpu_ms" if row.get("first_cpu_ms") else "wall_ms"
            run = row.get(f"whole_run_{clock}")
            run_text = "" if run is None else f", whole run {run / 1e3:,.0f} s"
            print(
                f"  {'':<28} first calls {_seconds(row[f'first_{clock}'])} s{run_text} "
                f"({clock.removesuffix('_ms')})",
                flush=True,
            )
