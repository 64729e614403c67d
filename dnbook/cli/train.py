"""``python -m dnbook train``: train one configuration (or read back its stored result)."""

from __future__ import annotations

import argparse

from dnbook.cli._common import add_run_options, check_device, check_seed, summary, user_errors

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
    "epochs": ("passes over the training split; may be fractional (1.5: the last one half)", float),
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


def add_parser(commands) -> argparse.ArgumentParser:
    """The ``train`` subcommand's parser, added to ``commands``."""
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
    add_run_options(train)

    return train


def run(args: argparse.Namespace) -> int:
    from dnbook.engine import distributed
    from dnbook.engine.profiles import get_profile
    from dnbook.engine.runs import run_stored
    from dnbook.experiments import train_config

    with user_errors():
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
        print(summary(stored.result))
        if stored.trained:
            print(f"trained run {config.hash()}; result stored in {stored.path}")
        else:
            print(
                f"read the stored result of run {config.hash()} from {stored.path}; nothing "
                "was trained (a run is trained once per configuration)"
            )
    return 0
