"""``python -m dnbook``: help texts, a dry run, a real tiny training, the report, bad values.

Calls ``main(argv)`` in-process (fast); one subprocess checks the module entry point itself.
"""

import subprocess
import sys

import pytest

from dnbook.__main__ import main

COMMANDS = ["train", "reproduce", "report", "complexity"]
TINY_TRAIN = [
    "train",
    "--dataset", "synthetic",
    "--n-train", "64", "--n-val", "32", "--n-test", "32",
    "--epochs", "2", "--batch-size", "32", "--width-mult", "0.25",
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
    assert "bench" not in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if command != "complexity":
        assert "--profile" in out


def test_train_help_explains_every_option(capsys):
    main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ["--model", "--norm", "--dataset", "--epochs", "--lr", "--batch-size", "--seed",
                   "--width-mult", "--stem", "--n-train", "--n-val", "--n-test", "--weight-decay",
                   "--warmup-epochs", "--label-smoothing", "--nesterov", "--profile",
                   "--results-dir", "--no-progress", "--device"]:  # fmt: skip
        assert option in out


def test_reproduce_dry_run_lists_configs_and_cost(capsys):
    assert main(["reproduce", "table2", "--profile", "ci", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "table2 at profile ci: 4 runs, 2,048 training images" in out
    assert "dnb:r=16,g=oup" in out and "se:r=16" in out
    assert len(out.strip().splitlines()) == 1 + 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
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


def test_train_then_report(tmp_path, capsys):
    results = tmp_path / "results"
    assert main([*TINY_TRAIN, "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("finished: train ")
    stored = list((results / "ci").rglob("*.json"))
    assert len(stored) == 1

    out_dir = tmp_path / "report"
    assert main(["report", "--profile", "ci", "--results-dir", str(results), "--out", str(out_dir)]) == 0
    report = (out_dir / "report.md").read_text()
    assert "## Other runs" in report
    assert "| variant |" in report and "finished" in report
    assert list(out_dir.glob("*.png"))
