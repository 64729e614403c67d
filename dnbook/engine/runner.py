"""Experiments as sets of runs: build their configurations at a profile, estimate their cost,
say before training what that will take, train them.

An :class:`Experiment` fixes what is compared (model, norm layer, learning rate, batch size);
a :class:`~dnbook.engine.profiles.Profile` fixes the scale (dataset, subset, epochs, width,
seeds); :func:`train_config` puts the two together into one
:class:`~dnbook.engine.TrainConfig`. A :class:`Registry` holds experiments by name and answers
for them: :meth:`Registry.configs`, :meth:`Registry.estimate`, :meth:`Registry.announce`,
:meth:`Registry.reproduce`.
The paper's experiments, the registry's data, are in :mod:`dnbook.experiments`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dnbook import _io
from dnbook.engine import environment
from dnbook.engine.config import TrainConfig, scaled_count
from dnbook.engine.profiles import PAPER_LR, Profile, get_profile
from dnbook.engine.runs import run
from dnbook.engine.store import results_roots, stored_result, weights_path
from dnbook.norms.registry import with_option

PAPER_BATCH = 64

Variants = tuple[tuple[str, dict], ...]


def warmup_epochs(epochs: int | float, fraction: float | None = None) -> float:
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
    first of the profile's seeds; ``overrides`` set any other :class:`TrainConfig` field; a
    norm spec gets the profile's ``norm_pins``."""
    for pinned_norm, option in profile.norm_pins:
        norm = with_option(norm, pinned_norm, option)
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


def _shown(path: Path) -> str:
    """``path`` relative to the checkout where it lies in it (``results/...``), else whole."""
    return (
        str(path.relative_to(environment.REPO_ROOT))
        if path.is_relative_to(environment.REPO_ROOT)
        else str(path)
    )


def _measured_cost(chapter: str, profile: Profile, results_root: str | Path | None) -> str:
    """The line on what ``chapter`` cost at ``profile`` when last measured: its row of
    ``chapter_costs/<profile>.json`` (runs still to train and their estimated hours), else of
    ``chapter_times/<profile>.json`` (seconds to execute the notebook), from the first results
    root that has one with a row for the chapter (an unreadable file is passed over)."""
    for root in results_roots(results_root):
        for kind in ("chapter_costs", "chapter_times"):
            path = root / kind / f"{profile.name}.json"
            if not path.is_file():
                continue
            found, _ = _io.read_json(path)
            rows = found.get("chapters", []) if isinstance(found, dict) else []
            if kind == "chapter_costs":
                row = next((r for r in rows if r.get("chapter") == chapter), None)
                if row is not None:
                    return (
                        f"    the whole chapter at {profile.name!r}, when last counted: "
                        f"{row['estimated']} runs still to train, about "
                        f"{row['estimated_hours']:.1f} h on {found['hardware']['cpu']} "
                        f"({_shown(path)})"
                    )
            else:
                row = next((r for r in rows if Path(r.get("notebook", "")).stem == chapter), None)
                if row is not None:
                    return (
                        f"    the whole chapter took {row['seconds']:.0f} s at {profile.name!r} "
                        f"when last timed, on {found['hardware']['cpu']} ({_shown(path)}; longer "
                        "when its runs are not stored yet)"
                    )
    return f"    no measured time for {chapter} at profile {profile.name!r} yet"


# What a training call reads back instead of training (Registry.announce's ``reads_back``).
READS_BACK = {
    "result": "stored (read back)",  # run, reproduce: a stored result
    "weights": "with cached weights (read back)",  # trained_model: the weights in the cache
    None: "read back",  # train: nothing, every run trains
}


_stop_requested = False
"""Set in a worker process of :meth:`Registry.reproduce` once it has been interrupted: the
configurations still queued to it then stop at once instead of training."""


def _stop_worker(signum: int, frame) -> None:
    global _stop_requested
    _stop_requested = True
    raise _io.Interrupted(signum)


def _run_one(config: TrainConfig, profile_name: str, run_kwargs: dict) -> dict:
    """One run in a worker process of :meth:`Registry.reproduce`. SIGTERM stops it as Ctrl-C
    does (the run keeps its last checkpoint; the worker says where it stopped), and a worker
    that was interrupted trains nothing more."""
    global _stop_requested
    if _stop_requested:
        raise _io.Interrupted(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _stop_worker)
    try:
        return run(config, profile=profile_name, **run_kwargs)
    except KeyboardInterrupt as interrupt:
        _stop_requested = True
        if isinstance(interrupt, _io.Interrupted):
            print(f"run {config.hash()}: {interrupt.describe()}", file=sys.stderr, flush=True)
        raise


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """Ctrl-C at a terminal reaches every process of the group, but ``kill`` reaches the
    parent only, and a job started with ``&`` from a script ignores SIGINT: pass SIGTERM on to
    the workers still alive, so that each stops its run as Ctrl-C would, instead of the parent
    waiting for every queued run to train."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):  # it ended in between
                os.kill(process.pid, signal.SIGTERM)


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
        (every epoch of every distinct configuration, a fractional one's share rounded as the
        loop rounds steps, :func:`~dnbook.engine.config.scaled_count`; evaluation passes not
        counted)."""
        profile = get_profile(profile)
        return sum(
            scaled_count(config.epochs, _train_images(config, profile))
            for config in self.configs(name_or_all, profile, only)
        )

    def estimate_steps(
        self, name_or_all: str, profile: str | Profile | None = None, only: str | None = None
    ) -> int:
        """Optimizer steps of the same runs (a GPU step at small batch costs about as much as a
        big one, so steps, not images, predict GPU time), as the loop counts them
        (:meth:`TrainConfig.steps_for`: whole batches only)."""
        profile = get_profile(profile)
        return sum(
            config.steps_for(_train_images(config, profile))
            for config in self.configs(name_or_all, profile, only)
        )

    def announce(
        self,
        names: str | Iterable[str] = (),
        profile: str | Profile | None = None,
        *,
        configs: Iterable[TrainConfig] = (),
        chapter: str | None = None,
        reads_back: str | None = "result",
        results_root: str | Path | None = None,
    ) -> None:
        """Print, before training, how many runs a training cell needs and what they cost.

        The first line counts the distinct runs of the experiments ``names`` and of ``configs``
        at ``profile``: how many will be read back, and how many trained, with their optimizer
        steps (the training loader drops a last partial batch: ``n_train // batch_size`` steps
        an epoch; a fractional run's steps are rounded as the loop rounds them,
        :meth:`TrainConfig.total_steps`). The second says what the whole ``chapter`` cost at ``profile`` when last
        measured: ``chapter_costs/<profile>.json`` (runs still to train and their estimated
        hours, written by ``benchmarks/chapter_cost.py``), else ``chapter_times/<profile>.json``
        (seconds to execute the notebook, ``benchmarks/time_chapters.py``), else that no
        time has been measured.

        Args:
            names: experiment names (one name or several). Default: none
            profile: a profile or its name. Default: :func:`get_profile`'s choice
            configs: more configurations, not a registry experiment's (a chapter's own runs).
                Default: none
            chapter: the notebook's name without ``.ipynb`` (``"07_mobilenetv2"``) whose
                measured cost is printed. Default: ``None`` (no second line)
            reads_back: what the training call reads back instead of training: ``"result"``
                (:func:`~dnbook.engine.run`, :meth:`reproduce`: a stored result),
                ``"weights"`` (:func:`~dnbook.engine.trained_model`: the best-validation
                weights in the cache) or ``None`` (:func:`~dnbook.engine.train`: every run
                trains). Default: ``"result"``
            results_root: where stored results and the measured costs are looked up (see
                :func:`~dnbook.engine.store.results_roots`). Default: the committed results,
                then the reader's

        Raises:
            ValueError: for an unknown experiment or ``reads_back``.

        Example:
            >>> from dnbook.experiments import announce
            >>> announce("table2", "ci", chapter="07_mobilenetv2")  # doctest: +SKIP
            4 runs at profile 'ci': 1 stored (read back), 3 to train (24 optimizer steps; a bar per epoch)
                the whole chapter took 16 s at 'ci' when last timed, on AMD EPYC (results/...)
        """  # noqa: E501
        if reads_back not in READS_BACK:
            raise ValueError(f"reads_back {reads_back!r}: expected one of {list(READS_BACK)}")
        profile = get_profile(profile)
        names = [names] if isinstance(names, str) else list(names)
        every = _unique([*(c for name in names for c in self.configs(name, profile)), *configs])
        is_read_back = {
            "result": lambda c: (
                stored_result(c, profile.name, results_root, warn=False) is not None
            ),
            "weights": lambda c: weights_path(c).is_file(),
            None: lambda c: False,
        }[reads_back]
        todo = [c for c in every if not is_read_back(c)]
        steps = sum(c.total_steps(_train_images(c, profile) // c.batch_size) for c in todo)
        print(
            f"{len(every)} run{'s' * (len(every) != 1)} at profile {profile.name!r}: "
            f"{len(every) - len(todo)} "
            f"{READS_BACK[reads_back]}, {len(todo)} to train ({steps:,} optimizer steps; a bar "
            "per epoch)"
        )
        if chapter is not None:
            print(_measured_cost(chapter, profile, results_root))

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
            try:
                return [future.result() for future in futures]
            except KeyboardInterrupt:
                _interrupt_workers(pool)
                pool.shutdown(wait=True, cancel_futures=True)
                raise
