"""The benchmark's report: a run's figures as Markdown tables (median milliseconds and ratio
to the baseline per clock, images per second, the layers' counted memory traffic), and the
lines printed as it goes."""

from __future__ import annotations

from collections.abc import Sequence

from dnbook.tables import markdown_table


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
            f"MobileNetV2 (CIFAR stem, width {settings['width']}), one SGD training step, "
            f"median over {settings['steps']} interleaved steps after {settings['warmup']} "
            "warm-up rounds:",
            ["batch", "norm", *timing, "images/s"],
            [
                [str(entry["batch_size"]), f"`{spec}`", *_timing_cells(row, 1)]
                + [f"{row['images_per_s']:.0f}"]
                for entry in result["models"]
                for spec, row in entry["norms"].items()
            ],
        )
    if result["layers"]:
        lines += _table(
            f"One layer, forward + backward, median over {settings['layer_steps']} interleaved "
            "steps:",
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


def print_rows(title: str, rows: dict[str, dict]) -> None:
    print(title, flush=True)
    for spec, row in rows.items():
        cpu = row.get("median_cpu_ms")
        cpu_text = "" if cpu is None else f"  cpu {cpu:9.2f} ms  x{row.get('ratio_cpu_ms', 0):.2f}"
        print(
            f"  {spec:<28} wall {row['median_wall_ms']:9.2f} ms  "
            f"x{row.get('ratio_wall_ms', 0):.2f}{cpu_text}",
            flush=True,
        )
