"""The configuration of one training run: a frozen dataclass whose hash names its result.

Every field that changes what a run computes lives here, so two runs with equal configs are
the same experiment and share one result file. Fields that only change how fast a run goes
on a given machine (``amp``, ``channels_last``) are here too, because bf16 autocast changes
the numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from dnbook._validation import check_int
from dnbook.models import MODEL_NAMES
from dnbook.norms import make_norm, parse_spec
from dnbook.norms.factory import hashed_options


@dataclass(frozen=True)
class TrainConfig:
    """One training run, from the model to the seed.

    Args:
        model: a name from ``dnbook.models.MODEL_NAMES``. Default: ``"mobilenet_v2"``
        norm: a norm spec for ``dnbook.norms.make_norm``, e.g. ``"bn"``, ``"dnb:r=16,g=1"``.
            Default: ``"bn"``
        width_mult: channel multiplier of the model. Default: 1.0
        stem: ``"cifar"`` (stride-1 stem for 32-px images) or ``"imagenet"``. Default: ``"cifar"``
        dataset: a name for ``dnbook.data.load_dataset``. Default: ``"cifar10"``
        n_train, n_val, n_test: subset sizes (``None``: the whole split). Default: ``None``
        epochs: number of passes over the training split, a positive int or float; a
            fractional run ends part-way through its last epoch, after
            :func:`scaled_count` ``(epochs, steps_per_epoch)`` steps in all (see
            :meth:`total_steps`). A float with an integral value is stored as an int, so
            ``epochs=2.0`` and ``epochs=2`` are one config with one hash. Default: 10
        batch_size: images per step and per process (the batch statistics' batch). Default: 64
        eval_batch_size: images per evaluation step. Default: 500
        lr: peak learning rate, reached at the end of the warm-up. Default: 0.2
        momentum: SGD momentum. Default: 0.9
        nesterov: Nesterov momentum. Default: ``False``
        weight_decay: L2 penalty. Default: 4e-5
        norm_weight_decay: apply weight decay to norm-layer (and their SC-module) parameters
            and to every 1-D parameter (biases). Default: ``False``
        warmup_epochs: linear warm-up length, in epochs (may be fractional). Default: 1.0
        label_smoothing: cross-entropy label smoothing. Default: 0.0
        seed: seed of the initialization, the augmentation and the batch order (the
            train/val split is fixed, independent of it). Default: 0
        sync_bn: under DDP, synchronize torch BatchNorm2d statistics across processes.
            Default: ``False`` (per-process statistics, as in the paper)
        amp: bf16 autocast where the device gains from it (CUDA, CPUs with AMX; see
            :mod:`dnbook.engine.precision`). Default: ``True``
        channels_last: channels-last memory format (CUDA only). Default: ``True``

    Example::

        >>> config = TrainConfig(norm="dnb:r=16,g=1", epochs=3)
        >>> len(config.hash())
        12
        >>> config.replace(seed=1).seed
        1
    """

    model: str = "mobilenet_v2"
    norm: str = "bn"
    width_mult: float = 1.0
    stem: str = "cifar"
    dataset: str = "cifar10"
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    epochs: int | float = 10
    batch_size: int = 64
    eval_batch_size: int = 500
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    norm_weight_decay: bool = False
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    sync_bn: bool = False
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        epochs = self.epochs
        if isinstance(epochs, float) and math.isfinite(epochs) and epochs.is_integer():
            # 2.0 epochs is the config of 2: an int stays an int in the hashed JSON
            object.__setattr__(self, "epochs", int(epochs))
        _validate(self)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the run at ``steps_per_epoch`` steps per epoch:
        ``epochs * steps_per_epoch`` rounded to the nearest integer, halves up, at least 1
        (:func:`scaled_count`). Whole epochs: exactly ``epochs * steps_per_epoch``."""
        return scaled_count(self.epochs, steps_per_epoch)

    def steps_for(self, train_images: int) -> int:
        """Optimizer steps of a one-process run over ``train_images`` training images: the
        loop's loader drops the last partial batch, so an epoch is ``train_images //
        batch_size`` steps, and the run :meth:`total_steps` of those."""
        return self.total_steps(train_images // self.batch_size)

    def hash(self) -> str:
        """A stable 12-hex-digit name: sha1 of the canonical JSON of the fields, with the
        norm spec expanded to every option, defaults included. So ``"dnb:g=1,r=16"`` and
        ``"dnb:r=16,g=1"`` share a hash, while a stored ``dnb:r=16,g=1`` run keeps its own
        hash if a layer default changes later (the short spec would then mean another layer)."""
        fields = self.to_dict()
        fields["norm"] = _expanded_norm(self.norm)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; an unknown field raises ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown fields {unknown}; expected some of {sorted(known)}"
            )
        return cls(**fields)


def scaled_count(epochs: int | float, per_epoch: int) -> int:
    """``epochs * per_epoch`` (steps, or images) rounded to the nearest integer, halves up,
    and at least 1: the one rounding of a fractional number of epochs, shared by the training
    loop and every estimate of steps or images. Computed exactly (``Fraction``), so
    ``1.5 * 3`` is 5 on every machine.

    Example::

        >>> scaled_count(1.5, 3), scaled_count(0.375, 10), scaled_count(3, 703)
        (5, 4, 2109)
    """
    return max(1, math.floor(Fraction(epochs) * per_epoch + Fraction(1, 2)))


def _expanded_norm(spec: str) -> str:
    factory = make_norm(spec)
    # every option, less those added after the stored results and at their legacy value
    hashed = hashed_options(factory.name, factory.options)
    options = ",".join(f"{key}={value}" for key, value in sorted(hashed.items()))
    return f"{factory.name}:{options}" if options else factory.name


def _validate(config: TrainConfig) -> None:
    if config.model not in MODEL_NAMES:
        raise ValueError(
            f"TrainConfig: model must be one of {sorted(MODEL_NAMES)}, got {config.model!r}"
        )
    parse_spec(config.norm)  # raises ValueError naming the known specs
    epochs = config.epochs
    if (
        isinstance(epochs, bool)
        or not isinstance(epochs, int | float)
        or not math.isfinite(epochs)
        or not epochs > 0
    ):
        raise ValueError(
            f"TrainConfig: epochs must be a positive, finite int or float, got {epochs!r}"
        )
    for name in ("batch_size", "eval_batch_size"):
        check_int(f"TrainConfig: {name}", getattr(config, name), minimum=1, what="an integer >= 1")
    for name in ("n_train", "n_val", "n_test"):
        if (value := getattr(config, name)) is not None:
            check_int(f"TrainConfig: {name}", value, minimum=0, what="None or an integer >= 0")
    if not config.lr > 0:
        raise ValueError(f"TrainConfig: lr must be > 0, got {config.lr!r}")
    if not config.width_mult > 0:
        raise ValueError(f"TrainConfig: width_mult must be > 0, got {config.width_mult!r}")
    for name in ("momentum", "weight_decay", "warmup_epochs"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"TrainConfig: {name} must be >= 0, got {getattr(config, name)!r}")
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(
            f"TrainConfig: label_smoothing must be in [0, 1), got {config.label_smoothing!r}"
        )
    if config.stem not in ("cifar", "imagenet"):
        raise ValueError(f"TrainConfig: stem must be 'cifar' or 'imagenet', got {config.stem!r}")
