"""The command line: ``python -m dnbook {train, reproduce, report, complexity, bench}``.

Every subcommand has ``--help``. A bad value (a negative learning rate, an unknown norm spec,
profile, experiment or device, an out-of-range seed) prints one line,
``python -m dnbook: error: ...``, and exits with status 2; an error inside training (a bug)
keeps its traceback. Ctrl-C or SIGTERM during training prints one line saying where the run
stopped and that rerunning the same command resumes it (exit status 130 or 143). A stored file
that cannot be read is named in one ``warning:`` line and skipped.

This module is the program around the subcommands (parser, warnings, signals, exit status);
each subcommand is a module of :mod:`dnbook.cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from dnbook._io import ConfigError, CorruptFileWarning, Interrupted
from dnbook.cli import bench, claims, complexity, report, reproduce, speed, train
from dnbook.cli._common import PROG

# The subcommands in the order ``--help`` lists them (each module: add_parser, run).
SUBCOMMANDS = (train, reproduce, report, complexity, claims, bench, speed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="dnbook: train and compare normalization layers "
        "(BN, GN, MABN, SE, DN-C, DN-B) on the paper's experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(commands).set_defaults(handler=subcommand.run)
    return parser


_shown_warnings: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, ``python -m dnbook: warning: ...``, each message once per
    command (libraries that enter ``warnings.catch_warnings`` reset Python's own once-only
    bookkeeping)."""
    if str(message) in _shown_warnings:
        return
    _shown_warnings.add(str(message))
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


def _terminate(signum, frame) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0, 2 for a bad value, 130 or 143 when
    interrupted by Ctrl-C or SIGTERM (the run resumes when the same command is run again)."""
    from dnbook.data import DataNotFoundError

    parser = build_parser()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    showwarning = warnings.showwarning
    try:
        if in_main_thread:  # SIGTERM stops a run as Ctrl-C does: one line, the checkpoint kept
            signal.signal(signal.SIGTERM, _terminate)
        warnings.showwarning = _show_warning
        _shown_warnings.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("always", CorruptFileWarning)  # _show_warning dedupes
            args = parser.parse_args(argv)
            status = args.handler(args)
            sys.stdout.flush()  # a closed pipe is met here, not at exit
            return status
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 1
    except (ConfigError, DataNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if not isinstance(interrupt, Interrupted):
            interrupt = Interrupted(signal.SIGINT)
        print(f"{PROG}: {interrupt.describe()}", file=sys.stderr)
        return 128 + interrupt.signum
    except BrokenPipeError:
        # The reader of our output went away (`... | head`): stop quietly, as `cat` does.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        warnings.showwarning = showwarning
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
