"""``python -m dnbook``: help texts, a dry run, a real tiny training, the report, bad values.

Calls ``main(argv)`` in-process (fast); one subprocess checks the module entry point itself.
"""

import argparse
import json
import re
import subprocess
import sys

import pytest

from dnbook.__main__ import main
from dnbook.engine import TrainConfig
from dnbook.experiments import configs

COMMANDS = ["train", "reproduce", "report", "complexity", "bench"]
TINY_TRAIN = [
    "train",
    "--dataset", "synthetic",
    "--n-train", "64", "--n-val", "32", "--n-test", "32",
    "--epochs", "1", "--batch-size", "32", "--width-mult", "0.25",
    "--profile", "ci", "--no-progress",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))


def test_module_entry_point_prints_help():
    done = subprocess.run(
        [sys.executable, "-m", "dnbook", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if command in ("train", "reproduce", "report"):  # the commands that read or write runs
        assert "--profile" in out


def test_train_help_explains_every_option(capsys):
    main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ["--model", "--norm", "--dataset", "--epochs", "--lr", "--batch-size", "--seed",
                   "--width-mult", "--stem", "--n-train", "--n-val", "--n-test", "--weight-decay",
                   "--warmup-epochs", "--label-smoothing", "--nesterov", "--profile",
                   "--results-dir", "--no-progress", "--device"]:  # fmt: skip
        assert option in out


def test_reproduce_dry_run_lists_configs_and_cost(capsys, tmp_path):
    argv = ["reproduce", "table2", "--profile", "ci", "--dry-run", "--results-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "table2 at profile ci: 4 runs (0 already stored, skipped), 2,048 training images" in out
    assert "dnb:r=16,g=oup" in out and "se:r=16" in out
    assert len(out.strip().splitlines()) == 1 + 4


@pytest.mark.parametrize(("batch", "epochs"), [("8", "1.5"), ("64", "3")])
def test_reproduce_dry_run_prints_fractional_epochs(capsys, tmp_path, batch, epochs):
    argv = ["reproduce", "table4", "--profile", "cpu", "--dry-run", "--results-dir", str(tmp_path)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line for line in lines[1:] if f"batch {batch} " in line]
    assert rows and all(f" epochs {epochs} " in line for line in rows)
    assert not any("epochs 2 " in line for line in lines)  # the old round(1.5)


def test_train_accepts_fractional_epochs():
    from dnbook.cli.train import add_parser

    commands = argparse.ArgumentParser().add_subparsers()
    parser = add_parser(commands)
    assert parser.parse_args(["--epochs", "1.5"]).epochs == 1.5
    assert parser.parse_args(["--epochs", "2"]).epochs == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "epochs must be a positive"),
        (["train", "--lr", "-1"], "lr must be > 0"),
        (["train", "--norm", "nonsense"], "nonsense"),
        (["reproduce", "table5", "--dry-run"], "unknown experiment 'table5'"),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--profile", "ci", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_profile_is_a_usage_error(capsys):
    assert main(["reproduce", "table2", "--profile", "laptop"]) == 2
    assert "invalid choice: 'laptop'" in capsys.readouterr().err


def _store_variant(result: dict, folder, **changes) -> dict:
    """Store a copy of ``result`` under another config (changes to its fields)."""
    config = TrainConfig.from_dict(result["config"]).replace(**changes)
    copy = {**result, "config": config.to_dict(), "hash": config.hash(), "seed": config.seed}
    (folder / f"{config.hash()}.json").write_text(json.dumps(copy))
    return copy


def test_train_then_report(tmp_path, capsys):
    results = tmp_path / "results"
    assert main([*TINY_TRAIN, "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("finished: train ")
    (stored,) = (results / "ci").glob("*.json")
    trained = json.loads(stored.read_text())
    assert trained["config"]["dataset"] == "synthetic"

    # Beside it, as if `reproduce table6 --profile ci` had run: a finished DN-B(8,1) run (the
    # trained run's numbers under table6's config) and a diverged DN-B(32,1) run; both belong
    # to Table 6 alone.
    table6 = {c.norm: c for c in configs("table6", "ci")}
    _store_variant(trained, results / "ci", **table6["dnb:r=8,g=1"].to_dict())
    diverged = {
        **trained,
        "status": "diverged",
        "final": dict.fromkeys(trained["final"]),
        "curves": [],
        "divergence": {"step": 3, "first_nonfinite": {"module": "features.1.conv.1"}},
    }
    _store_variant(diverged, results / "ci", **table6["dnb:r=32,g=1"].to_dict())

    out_dir = tmp_path / "report"
    assert (
        main(["report", "--profile", "ci", "--results-dir", str(results), "--out", str(out_dir)])
        == 0
    )
    # cells as one space apart, whatever the padding of the columns
    report = re.sub(r" +", " ", (out_dir / "report.md").read_text())
    assert "## table6: " in report and "## Other runs" in report
    assert "| variant |" in report
    assert "| DN-B(8,1) | dnb:r=8,g=1 | finished |" in report
    assert "| DN-B(32,1) | dnb:r=32,g=1 | **diverged** 1/1 (step 3, features.1.conv.1) |" in report
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["other_runs.png", "table6.png"]
