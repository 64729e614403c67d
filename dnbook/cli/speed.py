"""``python -m dnbook speed``: time to a target accuracy of two training paths
(:mod:`dnbook.speed`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``speed`` subcommand's parser, added to ``commands``."""
    from dnbook import speed

    return speed.add_arguments(
        commands.add_parser(
            "speed",
            help="time to a target test accuracy of two training paths; a step's time breakdown",
            description=speed.DESCRIPTION,
        )
    )


def run(args: argparse.Namespace) -> int:
    from dnbook import speed

    return speed.run(args, "python -m dnbook " + " ".join(sys.argv[1:]))
