"""``python -m dnbook complexity``: parameters and Mult-Adds of the paper's models against the
paper's tables."""

from __future__ import annotations

import argparse


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``complexity`` subcommand's parser, added to ``commands``."""
    return commands.add_parser(
        "complexity",
        help="parameters and multiply-adds of the paper's models, against the paper's tables",
        description="Count parameters and multiply-adds of MobileNetV2 and ResNet with each norm "
        "layer at 224 px and print them next to the paper's #p and Mult-Adds columns, the #p "
        "under both readings of the SC-module's FC1 (with and without a bias), which reading "
        "fits, and a line for every value that does not.",
    )


def run(args: argparse.Namespace) -> int:
    from dnbook.cost.paper import print_comparison

    print_comparison()
    return 0
