"""Tests of dnbook.data's datasets: paths, splits, the synthetic set, and the converters from
the official CIFAR archives, the shared JPEG copy and a local ImageNet folder, each on a tiny
fake the test writes itself (no download)."""

from __future__ import annotations

import io
import pickle
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnbook.data import (
    DATASET_NAMES,
    DataNotFoundError,
    balanced_subset,
    cache_dir,
    cifar,
    data_root,
    load_dataset,
    splits,
)
from dnbook.data.imagenet100 import choose_classes, list_images, split_files
from dnbook.data.packed import read_packed, save_packed

REPO = Path(__file__).resolve().parents[1]
SHARED_COPY = (data_root() or Path("/nonexistent")) / cifar.JPEG_COPY_NAME


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """No offline data, and an empty cache in tmp_path."""
    monkeypatch.delenv("DNBOOK_DATA", raising=False)
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path


def random_images(n: int, seed: int, size: int = 32) -> np.ndarray:
    """Smooth random uint8 images (N, size, size, 3): blurred noise, so JPEG keeps them well."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, size // 4, size // 4, 3)).astype(np.uint8)
    return coarse.repeat(4, axis=1).repeat(4, axis=2)


# ---------------------------------------------------------------------------------- paths


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DNBOOK_DATA", raising=False)
    monkeypatch.delenv("DNBOOK_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() is None
    assert cache_dir() == tmp_path / "home" / ".cache" / "dnbook"
    assert cache_dir().is_dir()
    monkeypatch.setenv("DNBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "elsewhere"))
    assert data_root() == tmp_path / "data"
    assert cache_dir() == tmp_path / "elsewhere"


# ------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize("n", [0, 7, 10, 35, 100])
def test_balanced_subset_is_balanced_and_deterministic(n):
    labels = np.repeat(np.arange(10), 10)[np.random.default_rng(1).permutation(100)]
    index = balanced_subset(labels, n, seed=3)
    assert len(index) == len(set(index.tolist())) == n
    assert np.all(np.diff(index) > 0)
    counts = np.bincount(labels[index], minlength=10)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(index, balanced_subset(labels, n, seed=3))


def test_balanced_subset_depends_on_seed_and_fills_from_larger_classes():
    labels = np.array([0] * 2 + [1] * 20)
    assert not np.array_equal(balanced_subset(labels, 10, 0), balanced_subset(labels, 10, 1))
    # Class 0 has only 2 samples: both are taken, the rest come from class 1.
    assert np.bincount(labels[balanced_subset(labels, 10, 0)]).tolist() == [2, 8]
    with pytest.raises(ValueError, match="23.*22"):
        balanced_subset(labels, 23, 0)


def test_channel_stats_match_float64():
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    mean, std = splits.channel_stats(images)
    values = images.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), values.mean(1))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), values.std(1, correction=0))


# ------------------------------------------------------------------------------- synthetic


def test_synthetic_dataset():
    data = load_dataset("synthetic", n_train=200, n_val=50, n_test=30, seed=1)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (200, 50, 30)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (3, 32, 32)
    assert data.train_y.dtype == torch.int64 and data.num_classes == 10
    assert torch.bincount(data.train_y).tolist() == [20] * 10
    assert "train=200, val=50, test=30" in repr(data) and data.image_size == (32, 32)
    assert data.split("val")[1] is data.val_y
    again = load_dataset("synthetic", n_train=200, n_val=50, n_test=30, seed=1)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    other = load_dataset("synthetic", n_train=200, n_val=50, n_test=30, seed=2)
    assert not torch.equal(other.train_x, data.train_x)
    assert not torch.equal(data.train_x[:30], data.test_x)
    torch.testing.assert_close(
        torch.tensor(data.mean), data.train_x.double().mean((0, 2, 3)).float()
    )


def test_synthetic_classes_differ_in_pattern_not_mean_colour():
    """The class is in the stripes' colour and angle, not in the average colour, so a model
    has to look at spatial structure; the class means of the images (the signal) differ."""
    data = load_dataset("synthetic", n_train=1000, n_val=0, n_test=0)
    x, y = data.train_x.double(), data.train_y
    mean_colour = torch.stack([x[y == k].mean((0, 2, 3)) for k in range(10)])  # (10, 3)
    assert mean_colour.std(0).max() < 3.0
    class_images = torch.stack([x[y == k].mean(0) for k in range(10)])  # (10, 3, 32, 32)
    assert class_images.std(0).mean() > 3 * mean_colour.std(0).max()


# --------------------------------------------------------------------------- load_dataset


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mnist"}, "cifar10"),
        ({"name": "synthetic", "n_train": -1}, "n_train"),
        ({"name": "synthetic", "n_val": 1.5}, "n_val"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("cifar10", "prepare_cifar.py --dataset cifar10"),
        ("cifar100", "prepare_cifar.py --dataset cifar100"),
        ("imagenet100_32", "prepare_imagenet100.py"),
        ("imagenet100_64", "prepare_imagenet100.py"),
    ],
)
def test_missing_data_says_how_to_get_it(empty_env, name, command):
    assert name in DATASET_NAMES
    with pytest.raises(DataNotFoundError, match="DNBOOK_DATA") as error:
        load_dataset(name)
    assert isinstance(error.value, FileNotFoundError)
    assert command in str(error.value)


# ------------------------------------------------------------- the shared JPEG copy (fake)


def write_jpeg_copy(path: Path, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Write a tiny file in the format of shared/data/cifar10_jpegbytes.npz; return the
    encoded images decoded again by Pillow, the reference pixels."""
    arrays, reference = {}, {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        blobs = []
        for image in random_images(n, seed):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=75)
            blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        arrays[f"jpg_{split}"] = np.concatenate(blobs)
        arrays[f"off_{split}"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
        arrays[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8)
        reference[split] = np.stack(
            [np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB")) for b in blobs]
        ).transpose(0, 3, 1, 2)
    classes = np.array([f"class{k}" for k in range(10)], dtype=np.str_)
    np.savez(path, **arrays, class_names=classes, source=np.array("a test's fake copy"))
    return reference


def test_jpeg_copy_is_decoded_once_and_split(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    reference = write_jpeg_copy(data_dir / cifar.JPEG_COPY_NAME, n_train=100, n_test=20)
    monkeypatch.setenv("DNBOOK_DATA", str(data_dir))
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))

    data = load_dataset("cifar10")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (90, 10, 20)
    assert torch.bincount(data.val_y).tolist() == [1] * 10
    # Pixels are exactly Pillow's decoding of the same bytes; the test split keeps its order.
    assert torch.equal(data.test_x, torch.from_numpy(reference["test"]))
    train_and_val = torch.cat([data.train_x, data.val_x])
    assert sorted(map(bytes, train_and_val.numpy())) == sorted(map(bytes, reference["train"]))
    assert "fake copy" in data.source and data.classes[0] == "class0"

    packed = list((tmp_path / "cache").glob("cifar10_jpeg-*.npz"))
    assert len(packed) == 1
    # A second load reads the packed file: decoding again would fail here.
    monkeypatch.setattr(cifar, "decode_jpeg_bytes", None)
    again = load_dataset("cifar10", n_train=20, n_val=10, n_test=10, seed=5)
    assert torch.bincount(again.train_y).tolist() == [2] * 10
    with pytest.raises(ValueError, match=r"n_train=91 is larger than the train split .*\(90 "):
        load_dataset("cifar10", n_train=91)
    assert len(list((tmp_path / "cache").glob("cifar10_jpeg-*.npz"))) == 1


def test_pillow_decodes_the_same_pixels_as_torchvision(tmp_path, monkeypatch):
    write_jpeg_copy(tmp_path / "copy.npz", n_train=12, n_test=1)
    with np.load(tmp_path / "copy.npz") as copy:
        data, offsets = copy["jpg_train"], copy["off_train"]
    fast = cifar.decode_jpeg_bytes(data, offsets)
    monkeypatch.setitem(sys.modules, "torchvision.io", None)  # as if torchvision dropped it
    np.testing.assert_array_equal(cifar.decode_jpeg_bytes(data, offsets), fast)


# --------------------------------------------------------- official CIFAR archives (fake)

# Fake archives in the layout of the official "python version": under torchvision's file names,
# pickled dicts with the keys and values the official files unpickle to (encoding="latin1").
ARCHIVES = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names", 10),
        "labels": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names", 100),
        "labels": "fine_labels",
    },
}


def write_cifar_archive(root: Path, name: str, per_file: int) -> dict[str, np.ndarray]:
    layout = ARCHIVES[name]
    folder = root / layout["folder"]
    folder.mkdir(parents=True)
    meta_file, meta_key, num_classes = layout["meta"]
    written = {}
    for split in ("train", "test"):
        images, labels = [], []
        for k, filename in enumerate(layout[split]):
            x = random_images(per_file, seed=hash((split, k)) % 1000).transpose(0, 3, 1, 2)
            y = list(np.arange(per_file) * 7 % num_classes)
            entry = {"data": x.reshape(per_file, -1), layout["labels"]: y, "batch_label": "x"}
            (folder / filename).write_bytes(pickle.dumps(entry, protocol=2))
            images.append(x)
            labels += y
        written[split] = (np.concatenate(images), np.array(labels))
    names = [f"class{k}" for k in range(num_classes)]
    (folder / meta_file).write_bytes(pickle.dumps({meta_key: names}, protocol=2))
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_official_archive_conversion(empty_env, name):
    written = write_cifar_archive(empty_env / "downloads", name, per_file=20)
    folder = empty_env / "downloads" / ARCHIVES[name]["folder"]
    result = cifar.read_cifar_python(name, folder)
    for split in ("train", "test"):
        np.testing.assert_array_equal(result[split][0], written[split][0])
        np.testing.assert_array_equal(result[split][1], written[split][1])
    assert result["classes"][:2] == ["class0", "class1"]

    # Through the script, as a user without internet would run it, then load_dataset.
    script = REPO / "data_scripts" / "prepare_cifar.py"
    argv = ["prepare_cifar.py", "--dataset", name, "--extracted", str(folder)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        runpy.run_path(str(script), run_name="__main__")
    data = load_dataset(name)
    n_train = len(written["train"][1])
    assert len(data.train_y) + len(data.val_y) == n_train
    assert len(data.val_y) == round(0.1 * n_train)
    assert torch.equal(data.test_x, torch.from_numpy(written["test"][0]))
    assert "official" in data.source


def test_official_cifar10_is_preferred_to_the_jpeg_copy(empty_env, monkeypatch):
    data_dir = empty_env / "data"
    data_dir.mkdir()
    write_jpeg_copy(data_dir / cifar.JPEG_COPY_NAME, n_train=20, n_test=10)
    monkeypatch.setenv("DNBOOK_DATA", str(data_dir))
    x = np.zeros((30, 3, 32, 32), dtype=np.uint8)
    y = np.arange(30) % 10
    save_packed(cache_dir() / "cifar10.npz", {"train": (x, y), "test": (x, y)}, "abcdefghij", "ok")
    assert load_dataset("cifar10").source == "ok"


def test_packed_format_round_trip_and_channels_last_input(tmp_path):
    x = random_images(6, seed=0)  # (N, H, W, 3)
    y = np.arange(6)
    path = save_packed(tmp_path / "p.npz", {"train": (x, y), "test": (x[:2], y[:2])}, "ab", "s")
    arrays = read_packed(path)
    np.testing.assert_array_equal(arrays["train_x"], x.transpose(0, 3, 1, 2))
    assert arrays["train_y"].dtype == np.int64 and str(arrays["source"]) == "s"
    with pytest.raises(ValueError, match="uint8"):
        save_packed(tmp_path / "q.npz", {"train": (x.astype(float), y), "test": (x, y)}, "a", "s")


# ----------------------------------------------------------------- ImageNet-100 (fake)


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    """120 classes with 10 training and 2 validation JPEGs each, 12x16 px."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for k in range(120):
        wnid = f"n{k:08d}"
        for split, count in (("train", 10), ("val", 2)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def read_list(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().splitlines()
    return [(p, int(label)) for p, label in (line.split() for line in lines)]


def test_imagenet100_protocol(fake_imagenet, tmp_path, monkeypatch):
    monkeypatch.delenv("DNBOOK_DATA", raising=False)
    monkeypatch.setenv("DNBOOK_CACHE", str(tmp_path / "cache"))
    script = REPO / "data_scripts" / "prepare_imagenet100.py"
    argv = ["prepare_imagenet100.py", "--imagenet", str(fake_imagenet), "--size", "32", "64"]
    monkeypatch.setattr(sys, "argv", [*argv, "--workers", "1"])
    runpy.run_path(str(script), run_name="__main__")

    out = tmp_path / "cache" / "imagenet100"
    classes = (out / "classes.txt").read_text().split()
    assert len(classes) == len(set(classes)) == 100 and classes == sorted(classes)
    lists = {split: read_list(out / f"{split}.txt") for split in ("train", "val", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [800, 200, 200]
    for split, items in lists.items():
        assert np.bincount([label for _, label in items]).tolist() == [len(items) // 100] * 100
        for path, label in items:
            assert path.startswith("val/" if split == "test" else "train/")
            assert path.split("/")[1] == classes[label] and (fake_imagenet / path).is_file()
    assert not {p for p, _ in lists["train"]} & {p for p, _ in lists["val"]}

    for size in (32, 64):
        data = load_dataset(f"imagenet100_{size}", n_train=200)
        assert data.train_x.shape == (200, 3, size, size) and data.num_classes == 100
        assert (len(data.val_y), len(data.test_y)) == (200, 200)
        assert data.classes == tuple(classes) and "seed 0" in data.source


def test_imagenet100_draw_depends_on_seed_only(fake_imagenet):
    train, test = list_images(fake_imagenet / "train"), list_images(fake_imagenet / "val")

    def draw(seed: int) -> tuple[list[str], list[tuple[Path, int]]]:
        classes = choose_classes(list(train), 100, seed)
        return classes, split_files(train, test, classes, 0.2, seed)["val"]

    assert draw(0) == draw(0)
    assert draw(0)[0] != draw(1)[0]
    with pytest.raises(ValueError, match="121 classes.*only 120"):
        choose_classes(list(train), 121, 0)


# ------------------------------------------------------------------ the real shared copy


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_COPY.is_file(), reason="DNBOOK_DATA has no cifar10_jpegbytes.npz")
def test_real_cifar10():
    """The real copy (decoded once into the cache, about 10 s the first time)."""
    data = load_dataset("cifar10")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (45_000, 5_000, 10_000)
    for labels, per_class in ((data.train_y, 4_500), (data.val_y, 500), (data.test_y, 1_000)):
        assert torch.bincount(labels).tolist() == [per_class] * 10
    assert data.train_x.shape[1:] == (3, 32, 32)
    # The README's train channel means, measured over all 50,000 training images.
    torch.testing.assert_close(
        torch.tensor(data.mean), torch.tensor([125.3, 122.9, 113.9]), atol=0.5, rtol=0
    )
