"""Tests of DeviceLoader: the batched crop-and-flip against a per-image reference, exact
normalization, epoch coverage, determinism, sharding, and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnbook.data import DeviceLoader, load_dataset
from dnbook.data.loader import random_crop_flip

MEAN, STD = (120.0, 115.0, 100.0), (60.0, 62.0, 65.0)


def make_data(n: int = 50, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return x, torch.arange(n)  # label = index, so a batch says which images it holds


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x.double() - mean) / std


def reference_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """One image at a time, the plain way: pad, slice, mirror."""
    height, width = image.shape[-2:]
    crop = F.pad(image, (4, 4, 4, 4))[:, top : top + height, left : left + width]
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_crop_flip_matches_per_image_reference(size):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, *size), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(0, 9, (40, 2), generator=generator)
    offsets[:4] = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0]])  # the extreme crops
    flips = torch.rand(40, generator=generator) < 0.5
    expected = torch.stack(
        [
            reference_crop_flip(img, int(t), int(le), bool(f))
            for img, (t, le), f in zip(images, offsets, flips, strict=True)
        ]
    )
    assert torch.equal(random_crop_flip(images, offsets, flips), expected)


def test_centre_crop_is_identity_and_flip_mirrors():
    images, _ = make_data(4)
    centre = torch.full((4, 2), 4)
    assert torch.equal(random_crop_flip(images, centre, torch.zeros(4, dtype=torch.bool)), images)
    mirrored = random_crop_flip(images, centre, torch.ones(4, dtype=torch.bool))
    assert torch.equal(mirrored, images.flip(-1))


@pytest.mark.parametrize(("batch_size", "expected_len"), [(7, 8), (10, 5), (50, 1)])
def test_eval_loader_is_ordered_exact_and_complete(batch_size, expected_len):
    x, y = make_data(50)
    loader = DeviceLoader(x, y, batch_size, train=False, mean=MEAN, std=STD)
    batches = list(loader)
    assert len(loader) == len(batches) == expected_len
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(labels, y)
    torch.testing.assert_close(images.double(), normalize(x), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("drop_last", [True, False])
def test_train_epoch_covers_each_image_once(drop_last):
    x, y = make_data(50)
    loader = DeviceLoader(x, y, 16, train=True, mean=MEAN, std=STD, drop_last=drop_last)
    labels = torch.cat([b[1] for b in loader])
    assert len(loader) == (3 if drop_last else 4)
    assert len(labels) == (48 if drop_last else 50)
    assert len(set(labels.tolist())) == len(labels)
    assert not torch.equal(labels, torch.arange(len(labels)))  # shuffled


def test_train_batches_are_augmented_copies_of_their_images():
    x, y = make_data(50)
    loader = DeviceLoader(x, y, 25, train=True, mean=MEAN, std=STD)
    images, labels = next(iter(loader))
    # Undo the normalization; every batch image is one of the 81 x 2 crops of its source.
    std, mean = torch.tensor(STD).view(1, 3, 1, 1), torch.tensor(MEAN).view(1, 3, 1, 1)
    pixels = (images.double() * std + mean).round().to(torch.uint8)
    for image, label in zip(pixels, labels, strict=True):
        candidates = [
            reference_crop_flip(x[label], top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
        ]
        assert any(torch.equal(image, c) for c in candidates)
    assert not torch.equal(pixels, x[labels])  # some image was moved or mirrored


def test_same_seed_same_batches_other_epoch_or_seed_differ():
    x, y = make_data(50)

    def epoch_batches(seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = DeviceLoader(x, y, 10, train=True, mean=MEAN, std=STD, seed=seed)
        loader.set_epoch(epoch)
        return list(loader)

    first, second = epoch_batches(0, 3), epoch_batches(0, 3)
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for other in (epoch_batches(0, 4), epoch_batches(1, 3)):
        assert not torch.equal(first[0][1], other[0][1])
        assert not torch.equal(first[0][0], other[0][0])


def test_shards_are_disjoint_and_equal():
    x, y = make_data(51)
    loaders = [
        DeviceLoader(x, y, 5, train=True, mean=MEAN, std=STD, rank=rank, world_size=2, seed=3)
        for rank in range(2)
    ]
    shards = [torch.cat([labels for _, labels in loader]) for loader in loaders]
    assert len(shards[0]) == len(shards[1]) == 25
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_channels_last_and_dataset_splits():
    data = load_dataset("synthetic", n_train=40, n_val=10, n_test=10)
    loader = DeviceLoader(
        data.train_x, data.train_y, 8, train=True, mean=data.mean, std=data.std, channels_last=True
    )
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert labels.dtype == torch.int64


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_rejects_bad_batch_size(batch_size):
    x, y = make_data(10)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(x, y, batch_size, train=True, mean=MEAN, std=STD)


def test_batch_larger_than_dataset_names_both_numbers():
    x, y = make_data(10)
    with pytest.raises(ValueError, match=r"batch_size \(64\).*\(10 images"):
        DeviceLoader(x, y, 64, train=True, mean=MEAN, std=STD)
    # Evaluation keeps the last, short batch, so one batch of all 10 images is fine.
    assert len(DeviceLoader(x, y, 64, train=False, mean=MEAN, std=STD)) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x_uint8": torch.zeros(4, 3, 8, 8)}, "uint8"),
        ({"x_uint8": torch.zeros(4, 1, 8, 8, dtype=torch.uint8)}, r"\(N, 3, H, W\)"),
        ({"y": torch.zeros(5)}, r"\(4,\)"),
        ({"mean": (1.0, 2.0)}, "mean must have 3"),
        ({"rank": 2, "world_size": 2}, "rank"),
    ],
)
def test_rejects_bad_arguments(change, match):
    kwargs = {
        "x_uint8": torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
        "y": torch.zeros(4),
        "batch_size": 2,
        "train": True,
        "mean": MEAN,
        "std": STD,
    } | change
    with pytest.raises(ValueError, match=match):
        DeviceLoader(**kwargs)
