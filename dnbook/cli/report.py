"""``python -m dnbook report``: the stored results of a profile as Markdown with plots."""

from __future__ import annotations

import argparse

from dnbook.cli._common import PROFILE_HELP, RESULTS_HELP, user_errors
from dnbook.engine.profiles import PROFILES


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``report`` subcommand's parser, added to ``commands``."""
    report = commands.add_parser(
        "report",
        help="render the stored results as Markdown with plots",
        description="Render the stored results of a profile as a Markdown file with one table "
        "per experiment (mean and std over seeds) and seaborn plots of accuracy against epoch.",
    )
    report.add_argument("--profile", choices=list(PROFILES), default=None, help=PROFILE_HELP)
    report.add_argument("--results-dir", default=None, metavar="DIR", help=RESULTS_HELP)
    report.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: <results>/<profile>/report)",
    )

    return report


def run(args: argparse.Namespace) -> int:
    from dnbook.engine.profiles import get_profile
    from dnbook.report import render_report

    with user_errors():
        get_profile(args.profile)
    path = render_report(profile=args.profile, results_root=args.results_dir, out_dir=args.out)
    print(path)
    return 0
