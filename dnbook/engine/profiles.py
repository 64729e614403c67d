"""Profiles: how big the book's experiments are on a given machine, defined in one place.

An experiment of the paper (``dnbook.experiments``) fixes what is compared: the model, the
norm layers, the learning rates and batch sizes. A profile fixes how much of it is affordable:
the dataset and its subset sizes, the number of epochs, the network width and the seeds.

==========  ==========================================================================
``ci``      CPU, every experiment of the book together in a few minutes; smoke-level numbers
``cpu``     full CIFAR-10 on 2 CPU cores, 3 epochs, width 0.25: a scale at which BN learns
``cpu_v1``  the first, too-small cpu scale (3,000 images, 138 steps): its stored runs only
``gpu``     one H200: every experiment of the book, 3 seeds, in at most 25 minutes
``paper``   the paper's settings on ImageNet-100: 240 epochs, batch 64, lr 0.2
==========  ==========================================================================

**Learning rates.** Experiments name learning rates in the paper's units. A profile trains at
``lr * lr_star / 0.2``: ``lr_star`` stands for the paper's lr 0.2, which in the paper is BN's
good learning rate, so at a new scale it maps to BN's best learning rate there, and the paper's
0.5 (Table 8's "high" lr) to 2.5 ``lr_star``. The ``cpu`` profile's ``lr_star`` comes from its
stage-0 sweep (the ``lr_sweep`` experiment, rule in ``results/cpu/README.md``).

``DNBOOK_PROFILE`` selects one; the default is ``gpu`` where CUDA is available, else ``cpu``.
The time estimates in the comments below are arithmetic from the throughputs they name, not
measurements of these profiles; ``python -m dnbook reproduce NAME --dry-run`` prints the
number of training images and steps a profile asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import torch

from dnbook.data.registry import DATASETS

# DN-B's SC input before the dnb_design_v2 study moved the default to the raw input.
DNB_INPUT_BEFORE_V2 = "normalized"

# The learning rate of the paper's main experiments (MobileNetV2 and ResNets at batch 64): the
# unit in which experiments name their learning rates.
PAPER_LR = 0.2


@dataclass(frozen=True)
class Profile:
    """The size of every experiment run under one name.

    Args:
        name: the profile's name; results go to ``results/<name>/``.
        description: one line for ``--help`` and reports.
        dataset: a ``dnbook.data.load_dataset`` name.
        n_train, n_val, n_test: subset sizes (``None``: the whole split).
        epochs: epochs of a standard run (batch size at least ``small_batch_reference``).
        width_mult: MobileNetV2's width multiplier.
        resnet_width_mult: ResNet-18/34's width multiplier.
        seeds: the seeds every configuration is trained with.
        stem: ``"cifar"`` (stride-1 stem for 32 px images) or ``"imagenet"``.
        eval_batch_size: batch size of the validation and test passes.
        small_batch_reference: below this training batch size a run gets proportionally
            fewer epochs, exactly ``epochs * batch_size / small_batch_reference`` (a
            fraction where it is not whole: the run stops part-way through its last epoch),
            so every run at a batch size of at most the reference takes the same number of
            optimizer steps. With 16, the ``paper`` profile reproduces the paper's own
            schedules: 120 epochs at batch 8 and 60 at batch 4 (Tables 3 and 4); the ``cpu``
            profile gives 1.5 epochs at batch 8, 0.75 at 4, 0.375 at 2 (3 from batch 16 up).
        jobs: how many runs ``reproduce`` trains at once by default (separate processes).
        device_hint: the machine the profile was sized for.
        lr_star: the learning rate that stands for the paper's lr 0.2 at this scale. An
            experiment names learning rates in the paper's units; a run at this profile trains
            at ``lr * lr_star / 0.2`` (see :meth:`scaled_lr`). Default: 0.2 (the paper's own
            numbers, unchanged).
        warmup_fraction: linear warm-up length as a fraction of a run's epochs; ``None`` keeps
            the older rule of one epoch capped at a fifth of the run. Default: ``None``
        recipe: ``(field, value)`` pairs of :class:`~dnbook.engine.TrainConfig` that every run
            of the profile sets (optimizer settings sized by the profile's pilots).
            Default: none
        headline_seeds: the seeds of the headline comparisons (experiments marked
            ``headline``: Table 2, Table 4, Table 8), which need more paired seeds than the
            rest to tell a difference of a point. Default: ``None`` (the same as ``seeds``)
        whole_epochs: keep the older small-batch rule, the ratio rounded to a whole number
            of epochs and at least 1 (``max(1, round(...))``), which skews the step counts;
            only ``ci`` and ``cpu_v1`` keep it, so that their configs keep their hashes
            (``cpu_v1``'s stored batch-8 runs; ``ci``'s smoke runs and the notebooks
            executed at it). Default: ``False``
        norm_pins: ``(norm name, "key=value")`` pairs: at this profile a spec of that norm
            that does not set ``key`` gets ``key=value``. It keeps a layer default as it was
            when the profile's runs were trained, so that those runs keep their meaning (and
            hashes) after the default moved; only ``cpu_v1`` pins one, DN-B's SC input.
            Default: none
    """

    name: str
    description: str
    dataset: str
    n_train: int | None
    n_val: int | None
    n_test: int | None
    epochs: int
    width_mult: float
    resnet_width_mult: float
    seeds: tuple[int, ...]
    stem: str = "cifar"
    eval_batch_size: int = 500
    small_batch_reference: int = 16
    jobs: int = 1
    device_hint: str = "cpu"
    lr_star: float = 0.2
    warmup_fraction: float | None = None
    recipe: tuple[tuple[str, object], ...] = ()
    headline_seeds: tuple[int, ...] | None = None
    whole_epochs: bool = False
    norm_pins: tuple[tuple[str, str], ...] = ()

    def split_size(self, split: str) -> int:
        """Images of ``split`` (``"train"``, ``"val"`` or ``"test"``) a run at this profile
        uses: the profile's subset size, or the whole split's size where that is ``None``.

        Example::

            >>> PROFILES["ci"].split_size("test"), PROFILES["cpu"].split_size("test")
            (256, 10000)
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        subset = getattr(self, f"n_{split}")
        return DATASETS[self.dataset].splits[split] if subset is None else subset

    def seeds_for(self, headline: bool = False) -> tuple[int, ...]:
        """The seeds of an experiment: ``headline_seeds`` for a headline one, else ``seeds``."""
        return self.headline_seeds if headline and self.headline_seeds else self.seeds

    def scaled_lr(self, paper_lr: float) -> float:
        """The learning rate that stands for the paper's ``paper_lr`` at this profile:
        ``paper_lr * lr_star / 0.2``, rounded to 6 significant digits so that a mapped lr
        prints (and hashes) the same on every machine."""
        return float(f"{paper_lr * self.lr_star / PAPER_LR:.6g}")

    def epochs_for(self, batch_size: int) -> int | float:
        """Epochs of a run at ``batch_size``: ``epochs`` from ``small_batch_reference`` up,
        below it exactly ``epochs * batch_size / small_batch_reference`` (an ``int`` where
        that is whole, else a ``float``), so that every run at a batch of at most the
        reference takes the same number of optimizer steps (up to the rounding of
        :func:`~dnbook.engine.config.scaled_count`, half a step). There is no floor in
        epochs: the ratio is positive for any batch of at least 1, and the training loop
        takes at least one step. A ``whole_epochs`` profile rounds to whole epochs instead.

        Example::

            >>> [PROFILES["cpu"].epochs_for(b) for b in (64, 16, 8, 4, 2)]
            [3, 3, 1.5, 0.75, 0.375]
            >>> [PROFILES["paper"].epochs_for(b) for b in (64, 8, 4)]
            [240, 120, 60]
        """
        if batch_size >= self.small_batch_reference:
            return self.epochs
        if self.whole_epochs:
            return max(1, round(self.epochs * batch_size / self.small_batch_reference))
        ratio = Fraction(self.epochs * batch_size, self.small_batch_reference)
        return int(ratio) if ratio.denominator == 1 else float(ratio)

    @property
    def train_images(self) -> int:
        """Training images per epoch (approximate for ImageNet-100's whole split)."""
        return self.split_size("train")


PROFILES: dict[str, Profile] = {
    # Every experiment of the book (about 60 distinct runs) in a few minutes of CPU: each run
    # is one epoch of 512 images, 8 steps at batch 64, at a quarter (MobileNetV2) or an
    # eighth (ResNet) of the width. The numbers say that the code path works, nothing more.
    # Small batches keep their one epoch (whole_epochs, as before fractional epochs, so that the
    # ci hashes and the notebooks executed at ci stay): batch 2 is 256 steps of a tiny network.
    "ci": Profile(
        name="ci",
        description="CPU smoke run: every experiment in a few minutes; numbers mean nothing",
        dataset="cifar10",
        n_train=512,
        n_val=256,
        n_test=256,
        epochs=1,
        width_mult=0.25,
        resnet_width_mult=0.125,
        seeds=(0,),
        eval_batch_size=256,
        small_batch_reference=64,
        device_hint="cpu",
        whole_epochs=True,
    ),
    # Full CIFAR-10 on two CPU cores, sized by the pilots in results/cpu/ so that BN clearly
    # learns (results/cpu/README.md gives the figures). Recipe: SGD, Nesterov momentum 0.9 (as
    # the engine had), weight decay 5e-4 (a common CIFAR value for runs this short; DenseNAS's
    # 4e-5 is for 240 ImageNet epochs; not swept), warm-up over 10% of the steps, cosine to
    # zero, no label smoothing (the paper states none). lr_star = 0.2: BN's best lr on
    # MobileNetV2 in the one-seed stage-0 sweep (results/cpu/README.md; ties go to the larger
    # lr by the rule written before the sweep), so at this scale the paper's learning rates
    # are used unchanged. r keeps the paper's values at width 0.25 (not yet remapped).
    "cpu": Profile(
        name="cpu",
        description="full CIFAR-10, width 0.25, 3 epochs: BN learns; hours a chapter on 2 cores",
        dataset="cifar10",
        n_train=None,
        n_val=None,
        n_test=None,
        epochs=3,
        width_mult=0.25,
        resnet_width_mult=0.25,
        seeds=(0, 1, 2),
        eval_batch_size=1_000,
        small_batch_reference=16,
        jobs=2,
        device_hint="cpu",
        lr_star=0.2,
        warmup_fraction=0.1,
        recipe=(("nesterov", True), ("weight_decay", 5e-4)),
        headline_seeds=(0, 1, 2, 3, 4),
    ),
    # The first `cpu` profile, kept under this name, read-only, for its stored runs
    # (results/cpu_v1/): too small to ask the paper's questions (3 epochs of 3,000 images are
    # 138 SGD steps), so every verdict on it reads "not tested". How it was sized, and what its
    # runs measured: results/cpu_v1/README.md.
    "cpu_v1": Profile(
        name="cpu_v1",
        description="the first cpu scale (3,000 images, 138 steps): stored runs only; too small",
        dataset="cifar10",
        n_train=3_000,
        n_val=500,
        n_test=1_000,
        epochs=3,
        width_mult=0.25,
        resnet_width_mult=0.125,
        seeds=(0, 1, 2),
        eval_batch_size=500,
        small_batch_reference=64,
        jobs=2,
        device_hint="cpu",
        whole_epochs=True,
        # its DN-B runs pooled the normalized feature, the default until dnb_design_v2
        norm_pins=(("dnb", f"input={DNB_INPUT_BEFORE_V2}"),),
    ),
    # One H200, every experiment with 3 seeds in at most 25 minutes. Not yet measured: the
    # sizing assumes a width-1.0 MobileNetV2 or ResNet step at 32x32 is bound by kernel
    # launches, about 8 ms at batch >= 32 and 6 ms below, and that 12 runs side by side on the
    # one GPU (16 CPU cores to launch kernels) share it at close to 12x one run's throughput.
    # `reproduce all --profile gpu --dry-run` counts 144 runs:
    #   78 runs at batch >= 32:   823,000 steps x 8 ms = 6,600 s
    #   66 runs at batch <= 16: 1,485,000 steps x 6 ms = 8,900 s
    #   (below batch 32 the epochs shrink so that each run takes the steps of a batch-32 run)
    #   15,500 s of single-run time / 12 concurrent runs ~ 1,300 s ~ 22 minutes.
    # Measure one epoch first (`train --epochs 1`) and lower `epochs` here if a step is slower.
    "gpu": Profile(
        name="gpu",
        description="one H200: every experiment, 3 seeds, full CIFAR-10, in about 25 minutes",
        dataset="cifar10",
        n_train=45_000,
        n_val=5_000,
        n_test=10_000,
        epochs=15,
        width_mult=1.0,
        resnet_width_mult=1.0,
        seeds=(0, 1, 2),
        eval_batch_size=1_000,
        small_batch_reference=32,
        jobs=12,
        device_hint="one NVIDIA H200",
    ),
    # The paper's settings: ImageNet-100, 240 epochs at batch 64, lr 0.2, the ImageNet stem.
    # The paper trains at full resolution (224 px); dnbook's loader keeps the dataset as one
    # uint8 tensor on the device, which it can do for the packed 64 px copy
    # (`data_scripts/` builds it from a local ImageNet), so this profile uses that copy: the
    # schedule is the paper's, the resolution is not. Days of GPU time; nobody has run it here.
    "paper": Profile(
        name="paper",
        description="the paper's settings: ImageNet-100 (64 px copy), 240 epochs, 3 seeds",
        dataset="imagenet100_64",
        n_train=None,
        n_val=None,
        n_test=None,
        epochs=240,
        width_mult=1.0,
        resnet_width_mult=1.0,
        seeds=(0, 1, 2),
        stem="imagenet",
        eval_batch_size=500,
        small_batch_reference=16,
        jobs=4,
        device_hint="one or more data-centre GPUs",
    ),
}


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile called ``name``; by default ``$DNBOOK_PROFILE``, else ``gpu`` where CUDA is
    available and ``cpu`` otherwise. A :class:`Profile` passes through unchanged.

    Raises:
        ValueError: for a name that is not in :data:`PROFILES`.
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get("DNBOOK_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]
