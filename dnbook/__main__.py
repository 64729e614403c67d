"""The command line: ``python -m dnbook {train, reproduce, report, complexity, bench}``.

Every subcommand has ``--help``. A bad value (a negative learning rate, an unknown norm spec,
profile, experiment or device, an out-of-range seed) prints one line,
``python -m dnbook: error: ...``, and exits with status 2; an error inside training (a bug)
keeps its traceback. Ctrl-C or SIGTERM during training prints one line saying where the run
stopped and that rerunning the same command resumes it (exit status 130 or 143). A stored file
that cannot be read is named in one ``warning:`` line and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from dnbook._io import ConfigError, CorruptFileWarning, Interrupted
from dnbook.engine.profiles import PROFILES

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
PROG = "python -m dnbook"


@contextlib.contextmanager
def _arguments() -> Iterator[None]:
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
    from dnbook.engine.trainer import SEED_MAX

    if value is not None and not 0 <= value <= SEED_MAX:
        raise ConfigError(f"--seed {value}: out of range; allowed: an integer from 0 to {SEED_MAX}")


def _train(args: argparse.Namespace) -> int:
    from dnbook.engine import distributed
    from dnbook.engine.profiles import get_profile
    from dnbook.engine.runs import run_stored
    from dnbook.experiments import train_config

    with _arguments():
        check_device(args.device)
        check_seed(args.seed)
        profile = get_profile(args.profile)
        # The profile supplies the scale (dataset, subset, epochs, width, stem); every option
        # given on the command line overrides it.
        given = {field: getattr(args, field) for field in TRAIN_FIELDS}
        config = train_config(
            profile, **{field: value for field, value in given.items() if value is not None}
        )
    try:
        stored = run_stored(
            config,
            profile=profile.name,
            results_root=args.results_dir,
            progress=not args.no_progress,
            device=args.device,
            resume=not args.restart,
        )
    finally:
        distributed.teardown()  # under torchrun: leave the process group cleanly
    if distributed.context_from_env().is_main:
        print(_summary(stored.result))
        if stored.trained:
            print(f"trained run {config.hash()}; result stored in {stored.path}")
        else:
            print(
                f"read the stored result of run {config.hash()} from {stored.path}; nothing "
                "was trained (a run is trained once per configuration)"
            )
    return 0


def _summary(result: dict) -> str:
    from dnbook.report import final_metrics

    metrics = final_metrics(result)
    accuracies = ", ".join(
        f"{split} {metrics[split]:.2f}%" for split in ("train", "val", "test") if split in metrics
    )
    return f"{result.get('status', '?')}: {accuracies or 'no accuracy recorded'}"


def _reproduce(args: argparse.Namespace) -> int:
    from dnbook.engine.profiles import get_profile
    from dnbook.engine.store import stored_result
    from dnbook.experiments import configs, estimate, estimate_steps, reproduce

    with _arguments():
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
                f"batch {config.batch_size:<3} lr {config.lr:<8g} epochs {config.epochs:<3} "
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
        print(f"  {config.hash()}  {config.norm:<22} {_summary(result)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dnbook.engine.profiles import get_profile
    from dnbook.report import render_report

    with _arguments():
        get_profile(args.profile)
    path = render_report(profile=args.profile, results_root=args.results_dir, out_dir=args.out)
    print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dnbook.bench import run_benchmark

    run_benchmark(args, "python -m dnbook " + " ".join(sys.argv[1:]))
    return 0


def _speed(args: argparse.Namespace) -> int:
    from dnbook import speed

    return speed.run(args, "python -m dnbook " + " ".join(sys.argv[1:]))


def _complexity(args: argparse.Namespace) -> int:
    from dnbook.cost.paper import print_comparison

    print_comparison()
    return 0


def _claims(args: argparse.Namespace) -> int:
    from dnbook.claims import ledger, to_json, to_markdown

    table = ledger(results_root=args.results_dir)
    print(to_json(table) if args.json else to_markdown(table))
    return 0


# TrainConfig fields that `train` exposes: (help, type). The profile supplies the fields of
# PROFILE_FIELDS (and the epochs); the others default to TrainConfig's values.
TRAIN_OPTIONS = {
    "model": ("mobilenet_v2, resnet18, resnet34 or plain_cnn", str),
    "norm": (
        "norm layer spec, e.g. bn, gn:groups=8, mabn:buffer=4, se:r=16, dnb:r=16,g=1, "
        "dnb:r=16,g=oup, dnc:r=16,merge=fc1 (see dnbook.norms.NORM_SPECS)",
        str,
    ),
    "dataset": ("cifar10, cifar100, imagenet100_32, imagenet100_64 or synthetic", str),
    "epochs": ("passes over the training split", int),
    "lr": ("peak learning rate, reached after the warm-up, then cosine decay", float),
    "batch_size": ("training images per step (and per process under torchrun)", int),
    "seed": ("seed of the initialization, augmentation and batch order", int),
    "width_mult": ("channel multiplier of the model", float),
    "stem": ("cifar (no early downsampling, 32 px images) or imagenet", str),
    "n_train": ("training images to use (a fixed class-balanced subset)", int),
    "n_val": ("validation images to use", int),
    "n_test": ("test images to use", int),
    "weight_decay": ("L2 penalty (none on norm layers and biases)", float),
    "warmup_epochs": ("linear warm-up length in epochs, may be fractional", float),
    "label_smoothing": ("cross-entropy label smoothing in [0, 1)", float),
}
PROFILE_FIELDS = ("dataset", "epochs", "seed", "width_mult", "stem", "n_train", "n_val", "n_test")
TRAIN_FIELDS = (*TRAIN_OPTIONS, "nesterov", "sync_bn")


def _default_text(field: str) -> str:
    if field in PROFILE_FIELDS:
        return "the profile's"
    from dnbook.engine import TrainConfig

    return str(TrainConfig.__dataclass_fields__[field].default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="dnbook: train and compare normalization layers "
        "(BN, GN, MABN, SE, DN-C, DN-B) on the paper's experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train one configuration and store its result",
        description="Train one configuration. Options not given come from the profile "
        "(dataset, subset sizes, epochs, width, stem) or from TrainConfig's defaults. A "
        "configuration already in the results store is not trained again. Runs under "
        "torchrun --nproc_per_node=N as well (DDP).",
    )
    for field, (text, kind) in TRAIN_OPTIONS.items():
        train.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{text} (default: {_default_text(field)})",
        )
    train.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    train.add_argument(
        "--sync-bn",
        action="store_true",
        default=None,
        help="under torchrun, synchronize BN statistics across processes "
        "(default: per process, as in the paper)",
    )
    _add_run_options(train)

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
    _add_run_options(reproduce)

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

    commands.add_parser(
        "complexity",
        help="parameters and multiply-adds of the paper's models, against the paper's tables",
        description="Count parameters and multiply-adds of MobileNetV2 and ResNet with each norm "
        "layer at 224 px and print them next to the paper's #p and Mult-Adds columns, the #p "
        "under both readings of the SC-module's FC1 (with and without a bias), which reading "
        "fits, and a line for every value that does not.",
    )
    claims = commands.add_parser(
        "claims",
        help="the paper's claims with their verdicts on the stored results",
        description="Evaluate every claim of the paper on the stored results (dnbook.claims) "
        "and print the ledger: a Markdown table, or with --json every claim's id, verdict, "
        "measurement, 95%% interval, seeds, profile and chapter.",
    )
    claims.add_argument("--json", action="store_true", help="print the ledger as JSON")
    claims.add_argument("--results-dir", default=None, metavar="DIR", help=RESULTS_HELP)
    from dnbook.bench import add_arguments as add_bench_arguments

    add_bench_arguments(
        commands.add_parser(
            "bench",
            help="training-step time of MobileNetV2 with each norm layer, as ratios to BN",
            description="Time a training step of the CIFAR-stem MobileNetV2 with each norm layer "
            "(interleaved, median over steps) and one layer's forward+backward; writes JSON and "
            "Markdown with the hardware and versions under results/bench/.",
        )
    )
    from dnbook import speed

    speed.add_arguments(
        commands.add_parser(
            "speed",
            help="time to a target test accuracy of two training paths; a step's time breakdown",
            description=speed.DESCRIPTION,
        )
    )
    for name, handler in (
        ("speed", _speed),
        ("train", _train),
        ("reproduce", _reproduce),
        ("report", _report),
        ("complexity", _complexity),
        ("bench", _bench),
        ("claims", _claims),
    ):
        commands.choices[name].set_defaults(handler=handler)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
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
