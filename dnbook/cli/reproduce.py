"""``python -m dnbook reproduce``: train (or read back) every configuration of one of the
paper's experiments at a profile's scale."""

from __future__ import annotations

import argparse

from dnbook._io import ConfigError
from dnbook.cli._common import add_run_options, check_device, summary, user_errors


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``reproduce`` subcommand's parser, added to ``commands``."""
    reproduce = commands.add_parser(
        "reproduce",
        help="train every configuration of one of the paper's experiments",
        description="Train (or read back) every configuration of an experiment of the paper "
        "at a profile's scale; finished runs are skipped, interrupted ones resume.",
    )
    from dnbook.experiments import EXPERIMENTS

    reproduce.add_argument(
        "name",
        metavar="NAME",
        help="an experiment, or all: "
        + "; ".join(f"{name} ({experiment.title})" for name, experiment in EXPERIMENTS.items()),
    )
    reproduce.add_argument(
        "--dry-run", action="store_true", help="list the configurations and the cost, train nothing"
    )
    reproduce.add_argument(
        "--only",
        metavar="REGEX",
        default=None,
        help="train only the variants whose label matches REGEX (for example '^BN'); "
        "--dry-run lists the labels' configurations",
    )
    reproduce.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: the profile's, 12 for gpu)",
    )
    add_run_options(reproduce)

    return reproduce


def run(args: argparse.Namespace) -> int:
    from dnbook.engine.profiles import get_profile
    from dnbook.engine.store import stored_result
    from dnbook.experiments import configs, estimate, estimate_steps, reproduce

    with user_errors():
        check_device(args.device)
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError(f"--jobs {args.jobs}: allowed: an integer >= 1")
        profile = get_profile(args.profile)
        todo = configs(args.name, profile, args.only)
    stored = {c.hash() for c in todo if stored_result(c, profile.name, args.results_dir)}
    print(
        f"{args.name} at profile {profile.name}: {len(todo)} runs "
        f"({len(stored)} already stored, skipped), {estimate(args.name, profile, args.only):,} "
        f"training images and {estimate_steps(args.name, profile, args.only):,} steps for all "
        "of them"
    )
    if args.dry_run:
        for config in todo:
            print(
                f"  {config.hash()}  {config.model:<12} {config.norm:<22} "
                f"batch {config.batch_size:<3} lr {config.lr:<8g} epochs {config.epochs:<3g} "
                f"seed {config.seed}" + ("  (stored)" if config.hash() in stored else "")
            )
        return 0
    results = reproduce(
        args.name,
        profile,
        progress=not args.no_progress,
        jobs=args.jobs or profile.jobs,
        only=args.only,
        results_root=args.results_dir,
        device=args.device,
        resume=not args.restart,
    )
    for config, result in zip(todo, results, strict=True):
        print(f"  {config.hash()}  {config.norm:<22} {summary(result)}")
    return 0
