"""Experiments as sets of runs: build their configurations at a profile, estimate their cost,
train them.

An :class:`Experiment` fixes what is compared (model, norm layer, learning rate, batch size);
a :class:`~dnbook.engine.profiles.Profile` fixes the scale (dataset, subset, epochs, width,
seeds); :func:`train_config` puts the two together into one
:class:`~dnbook.engine.TrainConfig`. A :class:`Registry` holds experiments by name and answers
for them: :meth:`Registry.configs`, :meth:`Registry.estimate`, :meth:`Registry.reproduce`.
The paper's experiments, the registry's data, are in :mod:`dnbook.experiments`.
"""

from __future__ import annotations

import math
import multiprocessing
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from dnbook.engine.config import TrainConfig
from dnbook.engine.profiles import PAPER_LR, Profile, get_profile
from dnbook.engine.runs import run

PAPER_BATCH = 64

Variants = tuple[tuple[str, dict], ...]


def warmup_epochs(epochs: int, fraction: float | None = None) -> float:
    """Linear warm-up length of a run of ``epochs``: ``fraction`` of the run where a profile
    sets one, else one epoch capped at a fifth of the run."""
    if fraction is not None:
        return float(f"{fraction * epochs:.6g}")
    return min(1.0, epochs / 5)


def train_config(
    profile: Profile,
    *,
    model: str = "mobilenet_v2",
    norm: str = "bn",
    lr: float = PAPER_LR,
    batch_size: int = PAPER_BATCH,
    seed: int | None = None,
    absolute_lr: float | None = None,
    **overrides,
) -> TrainConfig:
    """One configuration at ``profile``'s scale: its dataset, subset, width, stem, recipe and the
    epochs for ``batch_size`` (see :meth:`Profile.epochs_for`). ``lr`` is in the paper's units
    and becomes :meth:`Profile.scaled_lr` (``lr * lr_star / 0.2``), unless ``absolute_lr`` is
    given (the learning-rate sweeps that define ``lr_star`` use it); ``seed`` defaults to the
    first of the profile's seeds; ``overrides`` set any other :class:`TrainConfig` field."""
    is_resnet = model.startswith("resnet")
    epochs = profile.epochs_for(batch_size)
    fields = {
        "model": model,
        "norm": norm,
        "width_mult": profile.resnet_width_mult if is_resnet else profile.width_mult,
        "stem": profile.stem,
        "dataset": profile.dataset,
        "n_train": profile.n_train,
        "n_val": profile.n_val,
        "n_test": profile.n_test,
        "epochs": epochs,
        "batch_size": batch_size,
        "eval_batch_size": profile.eval_batch_size,
        "lr": profile.scaled_lr(lr) if absolute_lr is None else absolute_lr,
        "warmup_epochs": warmup_epochs(epochs, profile.warmup_fraction),
        "seed": profile.seeds[0] if seed is None else seed,
        **dict(profile.recipe),
    }
    fields.update(overrides)
    return TrainConfig(**fields)


@dataclass(frozen=True)
class Experiment:
    """A named experiment of the paper.

    Args:
        name: the registry key (``python -m dnbook reproduce NAME``).
        title: one line.
        paper_ref: where the paper reports it.
        notes: how this version departs from the paper, and why.
        variants: ``(label, options)`` pairs; each options dict goes to :func:`train_config`
            and is trained once per seed of the profile.
        headline: a headline comparison of the paper, trained with the profile's
            ``headline_seeds`` (see :meth:`~dnbook.engine.profiles.Profile.seeds_for`).
            Default: ``False``
    """

    name: str
    title: str
    paper_ref: str
    notes: str
    variants: Variants
    headline: bool = False

    def _labelled(self, profile: str | Profile | None) -> list[tuple[str, TrainConfig]]:
        """(variant label, config) for every variant and every seed of ``profile``."""
        profile = get_profile(profile)
        return [
            (label, train_config(profile, seed=seed, **options))
            for label, options in self.variants
            for seed in profile.seeds_for(self.headline)
        ]

    def builder(self, profile: str | Profile | None = None) -> list[TrainConfig]:
        """The experiment's configurations at ``profile``: every variant times every seed."""
        return _unique(config for _, config in self._labelled(profile))

    def labels(self, profile: str | Profile | None = None) -> dict[str, str]:
        """Config hash -> the variant's label, for tables and plot legends."""
        return {config.hash(): label for label, config in self._labelled(profile)}


@dataclass(frozen=True)
class ScaledExperiment(Experiment):
    """An experiment that departs from the profile's scale or seeds at some profiles (kept so
    that runs stored at an earlier scale keep their hashes).

    Args:
        scale: profile name -> :class:`TrainConfig` fields that replace the profile's (subset
            sizes, width, epochs) for this experiment only. Default: none
        seeds: profile name -> the seeds of every variant. Default: the profile's
        extra: profile name -> more variants at that profile; a ``"seed"`` option trains one
            of them with that seed only. Default: none
        ci_variants: the variants at the ``ci`` profile. Default: ``variants``
    """

    scale: dict[str, dict] = field(default_factory=dict)
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    extra: dict[str, Variants] = field(default_factory=dict)
    ci_variants: Variants = ()

    def _labelled(self, profile: str | Profile | None) -> list[tuple[str, TrainConfig]]:
        profile = get_profile(profile)
        variants = self.ci_variants if profile.name == "ci" and self.ci_variants else self.variants
        scale = self.scale.get(profile.name, {})
        labelled = []
        for label, options in variants + self.extra.get(profile.name, ()):
            options = {**scale, **options}
            seed = options.pop("seed", None)
            default = profile.seeds_for(self.headline)
            seeds = self.seeds.get(profile.name, default) if seed is None else (seed,)
            labelled += [(label, train_config(profile, seed=s, **options)) for s in seeds]
        return labelled


def _unique(configs: Iterable[TrainConfig]) -> list[TrainConfig]:
    """``configs`` without repeats (same hash), in first-seen order."""
    seen: dict[str, TrainConfig] = {}
    for config in configs:
        seen.setdefault(config.hash(), config)
    return list(seen.values())


def _train_images(config: TrainConfig, profile: Profile) -> int:
    """Images per epoch: the config's own subset where an experiment sets one (dnb_design does),
    else the profile's."""
    return config.n_train or profile.train_images


def _run_one(config: TrainConfig, profile_name: str, run_kwargs: dict) -> dict:
    return run(config, profile=profile_name, **run_kwargs)


class Registry(dict[str, Experiment]):
    """Experiments by name, and what can be asked of them by name (``"all"``: every one)."""

    def names(self, name_or_all: str) -> list[str]:
        """``[name]``, or every experiment's name for ``"all"``.

        Raises:
            ValueError: for an unknown name.
        """
        if name_or_all == "all":
            return list(self)
        if name_or_all not in self:
            raise ValueError(
                f"unknown experiment {name_or_all!r}; expected 'all' or one of {', '.join(self)}"
            )
        return [name_or_all]

    def configs(
        self, name_or_all: str, profile: str | Profile | None = None, only: str | None = None
    ) -> list[TrainConfig]:
        """The distinct configurations of one experiment, or of all of them, at ``profile``.

        Args:
            only: a regular expression; keep the variants whose label it matches
                (``re.search``), for example ``"^BN"`` for an experiment's BN rows.
                Default: every variant

        Raises:
            ValueError: for an unknown experiment, or an ``only`` that is not a valid
                expression or matches no variant.
        """
        names = self.names(name_or_all)
        labelled = [pair for name in names for pair in self[name]._labelled(profile)]
        if only is not None:
            try:
                pattern = re.compile(only)
            except re.error as error:
                raise ValueError(f"--only {only!r} is not a regular expression: {error}") from None
            labelled = [(label, config) for label, config in labelled if pattern.search(label)]
            if not labelled:
                raise ValueError(f"--only {only!r} matches no variant of {name_or_all}")
        return _unique(config for _, config in labelled)

    def estimate(
        self, name_or_all: str, profile: str | Profile | None = None, only: str | None = None
    ) -> int:
        """Training images that ``reproduce(name_or_all, profile)`` processes from scratch
        (every epoch of every distinct configuration; evaluation passes not counted)."""
        profile = get_profile(profile)
        return sum(
            config.epochs * _train_images(config, profile)
            for config in self.configs(name_or_all, profile, only)
        )

    def estimate_steps(
        self, name_or_all: str, profile: str | Profile | None = None, only: str | None = None
    ) -> int:
        """Optimizer steps of the same runs (a GPU step at small batch costs about as much as a
        big one, so steps, not images, predict GPU time)."""
        profile = get_profile(profile)
        return sum(
            config.epochs * math.ceil(_train_images(config, profile) / config.batch_size)
            for config in self.configs(name_or_all, profile, only)
        )

    def reproduce(
        self,
        name_or_all: str,
        profile: str | Profile | None = None,
        progress: bool = True,
        jobs: int = 1,
        only: str | None = None,
        **run_kwargs,
    ) -> list[dict]:
        """Train (or read back from the results store) every configuration of an experiment.

        Args:
            name_or_all: an experiment's name, or ``"all"``.
            profile: a profile or its name. Default: :func:`get_profile`'s choice
            progress: show progress bars (only with ``jobs=1``). Default: ``True``
            jobs: runs trained at once, each in its own process (for one GPU shared by several
                launch-bound runs); finished runs are skipped either way. Default: ``1``
            only: keep the variants whose label matches this regular expression (see
                :meth:`configs`). Default: every variant
            **run_kwargs: passed to :func:`dnbook.engine.run` (``results_root``, ``device``,
                ``resume``).

        Returns:
            The stored result of each configuration, in :meth:`configs` order.
        """
        profile = get_profile(profile)
        todo = self.configs(name_or_all, profile, only)
        if jobs <= 1:
            return [
                run(config, profile=profile.name, progress=progress, **run_kwargs)
                for config in todo
            ]
        run_kwargs = {**run_kwargs, "progress": False}
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(_run_one, config, profile.name, run_kwargs) for config in todo]
            return [future.result() for future in futures]
