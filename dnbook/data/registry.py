"""What is known of each dataset before it is loaded: classes, image size, split sizes and the
validation fraction, one entry each.

Anything that needs such a fact (the trainer's top-5 rule, a trained model's classifier, a
profile's images per epoch, a claim's chance level) reads it here instead of loading the data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """The facts of one dataset.

    Args:
        name: the name :func:`dnbook.data.load_dataset` takes.
        num_classes: classes (the classifier's outputs).
        image_size: the images' height and width, in pixels.
        val_fraction: the fraction of the official training images kept for validation
            (``None``: the splits are generated, not carved).
        splits: images in the ``train``, ``val`` and ``test`` splits (a config's ``None``
            subset means the whole split; for ``synthetic``, the sizes generated). ImageNet-100's
            training and validation sizes depend on the classes drawn, so they are approximate
            (80% and 20% of about 1,300 images a class; 50 test images a class).
    """

    name: str
    num_classes: int
    image_size: int
    val_fraction: float | None
    splits: dict[str, int]


IMAGENET100_SPLITS = {"train": 102_000, "val": 26_000, "test": 5_000}
# CIFAR: a tenth of the 50,000 training images (5,000, 500 a class, always the same ones) is
# the validation split. ImageNet-100 follows the paper: 20% of each class's training images.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("cifar10", 10, 32, 0.1, {"train": 45_000, "val": 5_000, "test": 10_000}),
        DatasetInfo("cifar100", 100, 32, 0.1, {"train": 45_000, "val": 5_000, "test": 10_000}),
        DatasetInfo("imagenet100_32", 100, 32, 0.2, IMAGENET100_SPLITS),
        DatasetInfo("imagenet100_64", 100, 64, 0.2, IMAGENET100_SPLITS),
        DatasetInfo("synthetic", 10, 32, None, {"train": 1_000, "val": 200, "test": 200}),
    )
}
DATASET_NAMES = tuple(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The facts of dataset ``name``.

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> dataset_info("cifar10").num_classes
        10
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {name!r}")
    return DATASETS[name]
