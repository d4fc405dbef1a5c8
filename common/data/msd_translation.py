"""BraTS and LiTS preparation of Vorontsov et al., "Towards annotation-efficient segmentation via image-to-image
translation", MedIA 2022 (arXiv 1904.01636), Sec. 4.2-4.3, from Medical Segmentation Decathlon layouts
(``dataset.json`` with a ``"training"`` list; Task01_BrainTumour holds the BraTS volumes, Task03_Liver LiTS).

* BraTS (:func:`prepare_brats`): per volume ``(v - mean) / (5 std)``, one mean and std pooled over the non-zero voxels
  of all channels (as the authors' ``prepare_brats_data_hemispheres.py``), clipped to [-1, 1]; axial slices split
  into left / right hemispheres (``C x H x W/2``, 4x240x120 for BraTS); half-slices with at least 25% brain are kept;
  P = tumour (any label > 0) covering at least 1% of the brain of the half-slice, A = no tumour, others dropped.
* LiTS (:func:`prepare_lits`): per volume ``(v - mu) / (5 sigma)``, statistics over the liver tissue (label 1, lesions
  excluded, as the authors' ``prepare_lits.py``), clipped to [-1, 1]; axial slices with liver covering at least 6% of
  the slice; P = a lesion (label 2) component at least 6 px wide in both directions, A = no lesion, others dropped;
  each kept slice is cropped to the liver's bounding box, resized to 256x256 and zeroed outside the liver; A slices
  are sampled to follow a 20-bin histogram of the P slices' relative axial positions.

Both split by volume (80/10/10, seeded), choose the labelled volumes (``labelled_fraction``, whole volumes only) and
write the same layout as :mod:`common.data.cluttered_mnist` (``{split}_present_images.npy`` ``(N, C, H, W)``
float32, ``{split}_present_masks.npy`` ``(N, 1, H, W)`` uint8, ``{split}_absent_images.npy``, ``index.json``), so
:func:`common.data.cluttered_mnist.cluttered_mnist_datalists` reads them. Augmentation is left to the transforms.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from common.atomic_write import publish_folder
from common.transforms.intensity import NormaliseOverForeground

__all__ = ["brats_half_slices", "lits_slices", "prepare_brats", "prepare_lits", "sample_by_position"]

SPLITS = ("train", "validation", "test")
# part of the cache key of a prepared folder: raised whenever the written data change (2: the authors' normalisation
# statistics, pooled over the BraTS channels and over LiTS liver tissue without lesions)
PREPARATION_VERSION = 2
Slices = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[float], list[float]]


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def _normalise(volume: np.ndarray, statistics_mask: np.ndarray, keep_mask: np.ndarray, k: float = 5.0) -> np.ndarray:
    """:class:`common.transforms.NormaliseOverForeground` on a channel-last ``(X, Y, Z, C)`` volume: one mean and std
    over the voxels where ``statistics_mask`` (the volume's shape) is true, clipped to [-1, 1]; 0 where ``keep_mask``
    (``(X, Y, Z)``) is false. A volume with no statistics voxel gives zeros."""
    if not statistics_mask.any():
        return np.zeros_like(volume)
    channels_first = torch.from_numpy(np.moveaxis(volume, -1, 0).copy())
    out = NormaliseOverForeground(k=k, clip=(-1.0, 1.0))(
        channels_first,
        mask=torch.from_numpy(np.moveaxis(statistics_mask, -1, 0).copy()),
        keep=torch.from_numpy(keep_mask[None].copy()),
    )
    return np.moveaxis(out.numpy(), 0, -1).astype(np.float32)


def brats_half_slices(
    image: np.ndarray,
    label: np.ndarray,
    min_brain_fraction: float = 0.25,
    min_tumour_fraction: float = 0.01,
) -> Slices:
    """Hemisphere half-slices of one BraTS volume.

    Args:
        image: ``(X, Y, Z, C)`` volume (MSD layout), X left-right.
        label: ``(X, Y, Z)`` labels (any value > 0 is tumour).
        min_brain_fraction: brain share a half-slice needs (0.25).
        min_tumour_fraction: tumour / brain share that makes a half-slice P (0.01).

    Returns:
        P images ``(C, Y, X/2)``, P masks ``(1, Y, X/2)``, A images, and the relative axial positions of P and A.
    """
    brain = np.any(image != 0, axis=-1)
    volume = _normalise(image, image != 0, brain)
    half = image.shape[0] // 2
    p_img, p_mask, a_img, p_pos, a_pos = [], [], [], [], []
    for z in range(image.shape[2]):
        for xs in (slice(0, half), slice(half, 2 * half)):
            brain_area = int(brain[xs, :, z].sum())
            if brain_area < min_brain_fraction * half * image.shape[1]:
                continue
            img = np.ascontiguousarray(volume[xs, :, z].transpose(2, 1, 0))
            tumour = label[xs, :, z].T > 0
            area = int(tumour.sum())
            if area == 0:
                a_img.append(img)
                a_pos.append(z / image.shape[2])
            elif area >= min_tumour_fraction * brain_area:
                p_img.append(img)
                p_mask.append(tumour[None].astype(np.uint8))
                p_pos.append(z / image.shape[2])
    return p_img, p_mask, a_img, p_pos, a_pos


def _resize(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=(size, size), mode=mode, **kwargs)[0, 0].numpy()


def lits_slices(
    image: np.ndarray,
    label: np.ndarray,
    size: int = 256,
    min_liver_fraction: float = 0.06,
    min_lesion_width: int = 6,
) -> Slices:
    """Liver-cropped axial slices of one LiTS volume.

    Args:
        image: ``(X, Y, Z)`` CT volume.
        label: ``(X, Y, Z)`` labels (1 liver, 2 lesion).
        size: side of the resized crops (256).
        min_liver_fraction: liver share of the slice needed (0.06).
        min_lesion_width: P needs a lesion component at least this wide in both directions (6 px).

    Returns:
        P images ``(1, size, size)``, P lesion masks ``(1, size, size)``, A images, and the relative axial positions
        of P and A.
    """
    liver = label >= 1
    volume = _normalise(image[..., None], (label == 1)[..., None], liver)[..., 0]
    p_img, p_mask, a_img, p_pos, a_pos = [], [], [], [], []
    for z in range(image.shape[2]):
        liver_z = liver[:, :, z]
        if liver_z.sum() < min_liver_fraction * liver_z.size:
            continue
        lesion = label[:, :, z] == 2
        components = ndimage.find_objects(ndimage.label(lesion)[0])
        wide = any(min(s.stop - s.start for s in box) >= min_lesion_width for box in components)
        if lesion.any() and not wide:
            continue
        rows, cols = np.nonzero(liver_z)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        keep = _resize(liver_z[box], size, "nearest") > 0.5
        img = (_resize(volume[:, :, z][box], size, "bilinear") * keep)[None].astype(np.float32)
        if wide:
            p_img.append(img)
            p_mask.append(((_resize(lesion[box], size, "nearest") > 0.5) & keep)[None].astype(np.uint8))
            p_pos.append(z / image.shape[2])
        else:
            a_img.append(img)
            a_pos.append(z / image.shape[2])
    return p_img, p_mask, a_img, p_pos, a_pos


def sample_by_position(
    p_positions: Sequence[float], a_positions: Sequence[float], rng: np.random.Generator, bins: int = 20
) -> np.ndarray:
    """Indices of A slices drawn so that their relative axial positions follow the histogram of the P slices':
    per bin of [0, 1] (20 bins) as many A slices as there are P slices, or all A slices of the bin if fewer."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    p_bin = np.clip(np.digitize(p_positions, edges) - 1, 0, bins - 1)
    a_bin = np.clip(np.digitize(a_positions, edges) - 1, 0, bins - 1)
    chosen = []
    for b in range(bins):
        candidates = np.flatnonzero(a_bin == b)
        want = int((p_bin == b).sum())
        chosen.append(rng.choice(candidates, min(want, len(candidates)), replace=False))
    return np.sort(np.concatenate(chosen).astype(int))


def _write(folder: Path, name: str, arrays: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> None:
    out = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype, (len(arrays), *shape))
    for i, a in enumerate(arrays):
        out[i] = a
    out.flush()


def _prepare(
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    task: str,
    extract: Callable[[np.ndarray, np.ndarray], Slices],
    sample_absent: bool,
    split_fractions: Sequence[float],
    labelled_fraction: float,
    seed: int,
    settings: dict,
) -> Path:
    dataset_dir = Path(dataset_dir)
    cases = json.loads((dataset_dir / "dataset.json").read_text(encoding="utf-8"))["training"]
    settings = {**settings, "task": task, "num_cases": len(cases), "split_fractions": list(split_fractions)}
    settings["preparation_version"] = PREPARATION_VERSION
    settings.update(labelled_fraction=labelled_fraction, seed=seed, dataset_dir=str(dataset_dir.resolve()))
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    final = Path(work_dir) / f"{task}_s{seed}_{digest}"
    if (final / "index.json").is_file():
        return final
    folder = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    n_train = int(round(split_fractions[0] * len(cases)))
    n_val = int(round(split_fractions[1] * len(cases)))
    groups = {
        "train": order[:n_train],
        "validation": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    labelled_cases = set(groups["train"][: int(round(labelled_fraction * len(groups["train"])))].tolist())
    labelled: list[int] = []
    for split in SPLITS:
        p_img, p_mask, a_img, p_pos, a_pos = [], [], [], [], []
        for case in sorted(groups[split]):
            item = cases[case]
            parts = extract(_load(dataset_dir / item["image"]), _load(dataset_dir / item["label"]))
            if split == "train" and case in labelled_cases:
                labelled += range(len(p_img), len(p_img) + len(parts[0]))
            for store, new in zip((p_img, p_mask, a_img, p_pos, a_pos), parts):
                store.extend(new)
        if sample_absent and a_img:
            a_img = [a_img[i] for i in sample_by_position(p_pos, a_pos, rng)]
        if not p_img and not a_img:
            raise ValueError(f"no {task} slice of the {split} split passed the filters ({len(groups[split])} volumes).")
        shape = (p_img or a_img)[0].shape
        _write(folder, f"{split}_present_images", p_img, shape, np.float32)
        _write(folder, f"{split}_present_masks", p_mask, (1, *shape[1:]), np.uint8)
        _write(folder, f"{split}_absent_images", a_img, shape, np.float32)
    (folder / "index.json").write_text(
        json.dumps({"settings": settings, "labelled": labelled}, indent=1), encoding="utf-8"
    )
    return publish_folder(folder, final, "index.json")


def prepare_brats(
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    labelled_fraction: float = 0.01,
    seed: int = 0,
    min_brain_fraction: float = 0.25,
    min_tumour_fraction: float = 0.01,
) -> Path:
    """Prepares MSD Task01_BrainTumour (BraTS) as hemisphere half-slices (module docstring); returns the folder.

    Args:
        dataset_dir: the MSD task folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        work_dir: parent of the output folder ``brats_s<seed>_<hash of the settings>``.
        split_fractions: training / validation / test shares of the volumes.
        labelled_fraction: share of training volumes whose P slices keep their masks.
        seed: split and labelled-volume seed.
        min_brain_fraction, min_tumour_fraction: slice filters (0.25, 0.01).
    """

    def extract(image: np.ndarray, label: np.ndarray) -> Slices:
        return brats_half_slices(image, label, min_brain_fraction, min_tumour_fraction)

    settings = {"min_brain_fraction": min_brain_fraction, "min_tumour_fraction": min_tumour_fraction}
    return _prepare(dataset_dir, work_dir, "brats", extract, False, split_fractions, labelled_fraction, seed, settings)


def prepare_lits(
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    labelled_fraction: float = 0.01,
    seed: int = 0,
    size: int = 256,
    min_liver_fraction: float = 0.06,
    min_lesion_width: int = 6,
) -> Path:
    """Prepares MSD Task03_Liver (LiTS) as liver-cropped slices with position-matched A sampling (module
    docstring); returns the folder. Arguments as :func:`prepare_brats` and :func:`lits_slices`."""

    def extract(image: np.ndarray, label: np.ndarray) -> Slices:
        return lits_slices(image, label, size, min_liver_fraction, min_lesion_width)

    settings = {"size": size, "min_liver_fraction": min_liver_fraction, "min_lesion_width": min_lesion_width}
    return _prepare(dataset_dir, work_dir, "lits", extract, True, split_fractions, labelled_fraction, seed, settings)
