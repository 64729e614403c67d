"""``python -m dnbook bench``: the norm layers' speed side by side (:mod:`dnbook.bench`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``bench`` subcommand's parser, added to ``commands``."""
    from dnbook.bench import add_arguments

    return add_arguments(
        commands.add_parser(
            "bench",
            help="training-step time of MobileNetV2 with each norm layer, as ratios to BN",
            description="Time a training step of the CIFAR-stem MobileNetV2 with each norm layer "
            "(interleaved, median over steps) and one layer's forward+backward; writes JSON and "
            "Markdown with the hardware and versions under results/bench/.",
        )
    )


def run(args: argparse.Namespace) -> int:
    from dnbook.bench import run_benchmark

    run_benchmark(args, "python -m dnbook " + " ".join(sys.argv[1:]))
    return 0
