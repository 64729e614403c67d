"""What the subcommands share: the program's name, the help of the shared options, the checks
of ``--device`` and ``--seed``, and the one-line summary of a result.

Like every module of the command line, it imports what a check needs when it runs (the start
of ``python -m dnbook`` stays fast)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from dnbook._io import ConfigError
from dnbook.engine.profiles import PROFILES

PROG = "python -m dnbook"
PROFILE_HELP = (
    "the scale of the run: "
    + "; ".join(f"{name}: {profile.description}" for name, profile in PROFILES.items())
    + ". Default: $DNBOOK_PROFILE, else gpu where CUDA is available, else cpu"
)
RESULTS_HELP = (
    "results root; runs are read from and stored under DIR/<profile>/ (default: "
    "$DNBOOK_RESULTS; if unset, read from <repo>/results and then ~/.cache/dnbook/results, "
    "written to the latter)"
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """While the arguments are read and checked, any ``ValueError`` is the user's: a
    :class:`ConfigError` (one line). Errors raised later keep their traceback."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from error


def check_device(value: str | None) -> None:
    """Raise :class:`ConfigError` naming ``--device``, the value and what this machine allows,
    unless ``value`` is ``None``, ``cpu`` or an available CUDA device."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    allowed = "cpu" + (f", cuda, cuda:0 to cuda:{count - 1}" if count else "")
    if value is None:
        return
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {value!r} is not a device; allowed: {allowed}") from None
    if device.type == "cpu" and device.index in (None, 0):
        return
    if device.type != "cuda":
        raise ConfigError(f"--device {value!r} is not supported; allowed: {allowed}")
    if count == 0:
        raise ConfigError(f"--device {value!r}: this machine has no CUDA device; allowed: cpu")
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"--device {value!r}: this machine has {count} CUDA device(s); allowed: {allowed}"
        )


def check_seed(value: int | None) -> None:
    """Raise :class:`ConfigError` naming ``--seed`` unless it is ``None`` or in NumPy's range."""
    from dnbook.engine.rng import SEED_MAX

    if value is not None and not 0 <= value <= SEED_MAX:
        raise ConfigError(f"--seed {value}: out of range; allowed: an integer from 0 to {SEED_MAX}")


def summary(result: dict) -> str:
    from dnbook.report import final_metrics

    metrics = final_metrics(result)
    accuracies = ", ".join(
        f"{split} {metrics[split]:.2f}%" for split in ("train", "val", "test") if split in metrics
    )
    return f"{result.get('status', '?')}: {accuracies or 'no accuracy recorded'}"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=list(PROFILES), default=None, help=PROFILE_HELP)
    parser.add_argument("--results-dir", default=None, metavar="DIR", help=RESULTS_HELP)
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint of an interrupted run and train it from the start "
        "(a stored result is still read, not trained again)",
    )
