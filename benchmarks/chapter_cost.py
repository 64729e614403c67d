"""What each chapter's runs cost at a profile: stored wall times, and for runs not stored yet
an estimate from the stored runs most like them, each kind labelled.

    python benchmarks/chapter_cost.py --profile cpu

writes ``results/chapter_costs/<profile>.json`` and prints a table. A stored run's
``wall_time_s`` was measured with the profile's ``jobs`` runs sharing the machine, so a
chapter's time on that machine is the sum over its runs divided by ``jobs``. A run not stored
yet is estimated as the mean seconds per optimizer step of the stored runs of the same model,
norm family (BN-like or DN) and batch size, times its steps; where no such run is stored it is
left out of the sum and counted. ``time_chapters.py`` measures the other part of a chapter's
time: executing the notebook on stored runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

import pandas as pd

from dnbook._io import write_json
from dnbook.engine import provenance
from dnbook.engine.environment import REPO_ROOT
from dnbook.engine.profiles import get_profile
from dnbook.engine.store import load_results
from dnbook.experiments import configs

# The experiments each chapter reads (the notebooks' calls to the registry).
CHAPTERS = {
    "00_tour": ("table2",),
    "01_batch_norm": ("bn_testbed",),
    "02_small_batches": ("small_batch_testbed",),
    "05_dynamic_normalization": ("dnb_design_v2",),
    "06_dnc_failure": ("dnc_failure",),
    "07_mobilenetv2": ("table1", "table2", "table2_low_lr", "fig1"),
    "08_robustness": ("table3_resnet18", "table3_resnet34", "table4", "table8", "small_batch"),
    "09_ablation_r_g": ("table6", "table7"),
    "10_affine_parameters": ("fig5",),
}


def family(norm: str) -> str:
    return "dn" if norm.startswith(("dnb", "dnc")) else "bn-like"


def kind(config) -> tuple[str, str, int]:
    return (config.model, family(config.norm), config.batch_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    stored = {r["hash"]: r for r in load_results(profile.name, REPO_ROOT / "results")}
    per_step: dict[tuple, list[float]] = defaultdict(list)
    for r in stored.values():
        if r.get("wall_time_s") and r.get("steps"):
            cfg = r["config"]
            per_step[(cfg["model"], family(cfg["norm"]), cfg["batch_size"])].append(
                r["wall_time_s"] / r["steps"]
            )
    rows, seen = [], set()
    for chapter, experiments in CHAPTERS.items():
        measured = estimated = 0.0
        n_stored = n_estimated = n_unknown = n_runs = 0
        for name in experiments:
            for config in configs(name, profile):
                h = config.hash()
                n_runs += 1
                if h in stored and stored[h].get("wall_time_s"):
                    measured += stored[h]["wall_time_s"]
                    n_stored += 1
                elif per_step.get(kind(config)):
                    steps = config.steps_for(config.n_train or profile.train_images)
                    estimated += statistics.mean(per_step[kind(config)]) * steps
                    n_estimated += 1
                else:
                    n_unknown += 1
                seen.add(h)
        rows.append(
            {
                "chapter": chapter,
                "runs": n_runs,
                "stored": n_stored,
                "stored_hours": round(measured / 3600 / profile.jobs, 2),
                "estimated": n_estimated,
                "estimated_hours": round(estimated / 3600 / profile.jobs, 2),
                "no_estimate": n_unknown,
            }
        )
    frame = pd.DataFrame(rows)
    print(
        f"profile {profile.name}: hours on the 2-core machine ({profile.jobs} runs at a time); "
        "stored = measured wall time of stored runs, estimated = runs not stored yet"
    )
    print(frame.to_markdown(index=False))
    out = REPO_ROOT / "results" / "chapter_costs" / f"{profile.name}.json"
    write_json(
        out,
        {
            "profile": profile.name,
            **provenance.record(" ".join([sys.executable, *sys.argv])),
            "seconds_per_step": {
                " ".join(map(str, k)): round(statistics.mean(v), 4) for k, v in per_step.items()
            },
            "chapters": rows,
        },
    )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
