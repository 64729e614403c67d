"""``python -m dnbook claims``: the paper's claims with their verdicts on the stored results."""

from __future__ import annotations

import argparse

from dnbook.cli._common import RESULTS_HELP


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``claims`` subcommand's parser, added to ``commands``."""
    claims = commands.add_parser(
        "claims",
        help="the paper's claims with their verdicts on the stored results",
        description="Evaluate every claim of the paper on the stored results (dnbook.claims) "
        "and print the ledger: a Markdown table, or with --json every claim's id, verdict, "
        "measurement, 95%% interval, seeds, profile and chapter.",
    )
    claims.add_argument("--json", action="store_true", help="print the ledger as JSON")
    claims.add_argument("--results-dir", default=None, metavar="DIR", help=RESULTS_HELP)
    return claims


def run(args: argparse.Namespace) -> int:
    from dnbook.claims import ledger, to_json, to_markdown

    table = ledger(results_root=args.results_dir)
    print(to_json(table) if args.json else to_markdown(table))
    return 0
