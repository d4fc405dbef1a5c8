"""Grey / white matter segmentation of axial slices of a real T1 MRI brain template, prepared offline as a
label-scarce 2D task in the MSD ``dataset.json`` layout that :func:`common.data.prepare_datalists` reads.

Source: the MNI ICBM152 2009a nonlinear symmetric template (Fonov et al., NeuroImage 47 (2009) S102 and 54 (2011)
313-327) as shipped in the nilearn 0.14.1 wheel (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_
converted.nii.gz``: the T1 image and the grey- and white-matter probability maps, 197 x 233 x 189 voxels of 1 mm,
uint8). Only the data files are used; nilearn itself is never imported (``pip install --no-deps nilearn==0.14.1``
provides them), or pass a ``source_dir`` holding the three files.

Preparation (:func:`prepare_mni_tissue`):

* the three volumes (same shape and affine, checked) are reoriented to the closest canonical RAS+ orientation with
  nibabel, so array axis 2 (inferior -> superior) is the axial axis whatever the files' voxel order; each axial slice
  is written as ``(H, W)`` with rows anterior -> posterior and columns the subject's left -> right (neurological
  display);
* the probability maps are scaled to [0, 1] by their maximum (255 in the converted files, as nilearn's
  ``load_mni152_gm_template`` does);
* every slice is cropped to one box: the bounding box of the tissue (below) over the whole volume, widened by
  ``BOX_MARGIN`` voxels and padded (zeros) to a centred square, then resampled to ``image_size x image_size``: the
  T1 image by area interpolation (bilinear when upsampling), the probability maps bilinearly (anti-aliased when
  downsampling) *before* thresholding, so the labels follow the smooth maps instead of a blocky nearest-neighbour
  label;
* label rule, per resampled pixel: tissue when ``max(gm, wm) >= tissue_threshold`` (0.5), and then class
  ``1 + argmax(gm, wm)`` (1 grey matter, 2 white matter; a tie goes to grey matter); otherwise 0 (background,
  which includes CSF);
* slices whose tissue covers at least ``min_brain_fraction`` (0.05) of the slice are kept;
* the kept slices, bottom to top, are cut into slabs of ``slab_thickness`` (8) consecutive slices with ``gap`` (1)
  slice dropped between consecutive slabs, so no slice of one slab is adjacent to a slice of another (a last,
  shorter slab keeps the remainder); slab ``k`` (0 = lowest) goes to "test" if ``k % 5 == 1``, to "validation" if
  ``k % 10 == 3``, else to "training": a fixed interleaving (no randomness) under which every split spans the
  brain from bottom to top, with about 20 % of the slabs for test and 10 % for validation.

At the defaults the real template (189 axial slices, cropped to a 184 x 184 mm square, resampled to 64 x 64,
2.9 mm pixels) gives 136 kept slices (z = 12 to 147) in 16 slabs (the last one a single slice), 15 dropped as gaps,
121 written: training 81 slices (11 slabs), validation 16 (2 slabs: 13 %), test 24 (3 slabs: 20 %). Pixels over
the written slices: 63.2 % background, 23.6 % grey matter, 13.3 % white matter (training 61.8 / 24.0 / 14.3 %,
validation 72.0 / 20.9 / 7.1 %, test 61.9 / 24.0 / 14.1 %). Preparation takes about a second.

Files: ``images/slice_<z>.npy`` ``(1, H, W)`` float32 raw T1 intensities (the bundles normalise them) and
``labels/slice_<z>.npy`` ``(1, H, W)`` uint8 classes, ``z`` the axial index in the canonical volume: the
channel-first layout the slice pipeline itself writes and reads back exactly (:func:`common.data.load_array`).
``dataset.json`` lists ``"training"``, ``"validation"`` and ``"test"`` items with ``"slice"`` (``z``) and
``"slab"``; validation and test items carry ``"group": "slab<k>"``, training items no group, so every training
slice is its own group and ``prepare_datalists(..., labelled_fraction=labelled_fraction_for(n, folder))`` keeps
the labels of exactly ``n`` training slices (the others become unlabelled images).

Limits: this is one brain (one averaged template); the splits are slabs of the same volume, so they measure
generalisation to other axial levels of that brain, not to other subjects, scanners or pathology, and the template's
averaged, noise-free contrast is easier than a single subject's scan.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from common.atomic_write import publish_folder, write_text_atomic

from .datalist import group_of, load_datalist

__all__ = [
    "SOURCE_FILES",
    "find_source_dir",
    "labelled_fraction_for",
    "prepare_mni_tissue",
    "slab_split",
    "split_summary",
    "split_of_slab",
    "tissue_labels",
]

# role -> file name in nilearn/datasets/data
SOURCE_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
INSTALL_HINT = "pip install --no-deps nilearn==0.14.1"
BOX_MARGIN = 2  # voxels added on every side of the tissue bounding box before squaring
LABELS = {"0": "background", "1": "grey matter", "2": "white matter"}
# part of the cache key: raised whenever the written data change for the same arguments
PREPARATION_VERSION = 1
MARKER = "dataset.json"


def find_source_dir(source_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the three template files: ``source_dir`` if given, else nilearn's ``datasets/data``
    (located with :func:`importlib.util.find_spec`, which does not import nilearn).

    Raises:
        FileNotFoundError: naming the first missing file and the install hint.
    """
    if source_dir is not None:
        folder = Path(source_dir).expanduser()
    else:
        spec = importlib.util.find_spec("nilearn")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise FileNotFoundError(
                f"{SOURCE_FILES['t1']}: the MNI152 2009a template was not found because nilearn is not installed; "
                f"`{INSTALL_HINT}` provides it (or pass source_dir holding {sorted(SOURCE_FILES.values())})."
            )
        folder = Path(locations[0]) / "datasets" / "data"
    for name in SOURCE_FILES.values():
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name}: MNI152 2009a template file not found; `{INSTALL_HINT}` provides it "
                "(or pass source_dir holding the t1, gm and wm files)."
            )
    return folder


def tissue_labels(gm: np.ndarray, wm: np.ndarray, tissue_threshold: float = 0.5) -> np.ndarray:
    """Class map of probability maps ``gm``, ``wm`` (same shape, values in [0, 1]): 0 where
    ``max(gm, wm) < tissue_threshold``, else ``1 + argmax(gm, wm)`` (1 grey, 2 white; a tie is grey). Returns uint8
    of the same shape."""
    tissue = np.maximum(gm, wm) >= tissue_threshold
    return np.where(tissue, 1 + (wm > gm), 0).astype(np.uint8)


def split_of_slab(k: int) -> str:
    """Split of slab ``k`` (0 = lowest): "test" if ``k % 5 == 1``, "validation" if ``k % 10 == 3``, else
    "training"."""
    if k % 5 == 1:
        return "test"
    if k % 10 == 3:
        return "validation"
    return "training"


def slab_split(num_slices: int, slab_thickness: int = 8, gap: int = 1) -> list[int | None]:
    """Slab index of each of ``num_slices`` consecutive slices, ``None`` for the ``gap`` slices dropped between
    consecutive slabs; the last slab may be shorter. Returns a list of length ``num_slices``."""
    if slab_thickness < 1 or gap < 1:
        raise ValueError(f"slab_thickness and gap must be >= 1, got {slab_thickness} and {gap}.")
    period = slab_thickness + gap
    return [i // period if i % period < slab_thickness else None for i in range(num_slices)]


def labelled_fraction_for(num_slices: int, dataset_dir: str | os.PathLike) -> float:
    """The ``labelled_fraction`` under which :func:`common.data.select_labelled` (``ceil(f * n_groups)`` groups)
    keeps the labels of exactly ``num_slices`` of the training slices of ``dataset_dir/dataset.json``.

    Raises:
        ValueError: ``num_slices`` is not in ``[0, number of training slices]``.
    """
    items = load_datalist(Path(dataset_dir) / MARKER, "training")
    n = len({group_of(i) for i in items})
    if not 0 <= num_slices <= n:
        raise ValueError(f"{dataset_dir}: cannot label {num_slices} of {n} training slices.")
    if num_slices in (0, n):
        return float(num_slices > 0)
    fraction = (num_slices - 0.5) / n  # mid-way, so ceil(fraction * n) is exact despite rounding
    assert math.ceil(fraction * n) == num_slices
    return fraction


def _load_canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y, Z)`` float32 data in the closest canonical (RAS+) orientation and its affine ``(4, 4)``."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}.")
    return data, np.asarray(image.affine)


def _load_source(folder: Path) -> dict[str, np.ndarray]:
    """The three volumes as ``(Z, H, W)`` float32 arrays (Z inferior -> superior, H anterior -> posterior, W left ->
    right), probability maps scaled to [0, 1]."""
    volumes, affines, shapes = {}, {}, {}
    for role, name in SOURCE_FILES.items():
        data, affines[role] = _load_canonical(folder / name)
        shapes[role] = data.shape
        if shapes[role] != shapes["t1"] or not np.allclose(affines[role], affines["t1"], atol=1e-4):
            raise ValueError(
                f"{folder / name}: shape or affine differs from the T1 image {folder / SOURCE_FILES['t1']}."
            )
        if role != "t1":
            peak = float(data.max())
            if peak <= 0:
                raise ValueError(f"{folder / name}: probability map is empty.")
            data = data / peak
        volumes[role] = np.ascontiguousarray(data[:, ::-1, :].transpose(2, 1, 0))
    if nib.aff2axcodes(affines["t1"]) != ("R", "A", "S"):
        raise ValueError(f"{folder}: could not reorient the template to RAS ({nib.aff2axcodes(affines['t1'])}).")
    return volumes


def _square_box(tissue: np.ndarray, margin: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the centred square around the in-plane bounding box of ``tissue`` ``(Z, H, W)``
    over all slices, widened by ``margin``."""
    if not tissue.any():
        raise ValueError("no voxel reaches the tissue threshold; lower tissue_threshold.")
    rows = np.flatnonzero(tissue.any(axis=(0, 2)))
    cols = np.flatnonzero(tissue.any(axis=(0, 1)))
    r0, r1 = rows[0] - margin, rows[-1] + 1 + margin
    c0, c1 = cols[0] - margin, cols[-1] + 1 + margin
    side = max(r1 - r0, c1 - c0)
    return int(r0 - (side - (r1 - r0)) // 2), int(c0 - (side - (c1 - c0)) // 2), int(side)


def _crop(volume: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``volume[:, top:top+side, left:left+side]`` ``(Z, side, side)``, zero where the square leaves the volume."""
    out = np.zeros((volume.shape[0], side, side), np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, volume.shape[1]), min(left + side, volume.shape[2])
    out[:, r0 - top : r1 - top, c0 - left : c1 - left] = volume[:, r0:r1, c0:c1]
    return out


def _resample(stack: np.ndarray, size: int, probability: bool) -> np.ndarray:
    """``(Z, S, S)`` -> ``(Z, size, size)`` float32: probability maps bilinear (anti-aliased when shrinking), images
    by area (bilinear when enlarging)."""
    t = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
    shrink = stack.shape[1] > size
    if probability or not shrink:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    else:
        out = F.interpolate(t, size=(size, size), mode="area")
    return out[:, 0].numpy().astype(np.float32)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _is_complete(folder: Path, settings: Mapping[str, Any]) -> bool:
    """Whether ``folder`` holds a published preparation with these ``settings`` and all its files."""
    try:
        content = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if content.get("preparation") != settings:
        return False
    items = [i for split in ("training", "validation", "test") for i in content.get(split, [])]
    return bool(items) and all((folder / i[key]).is_file() for i in items for key in ("image", "label"))


def prepare_mni_tissue(
    out_dir: str | os.PathLike,
    image_size: int = 64,
    slab_thickness: int = 8,
    gap: int = 1,
    tissue_threshold: float = 0.5,
    min_brain_fraction: float = 0.05,
    source_dir: str | os.PathLike | None = None,
) -> Path:
    """Prepare the MNI152 grey / white matter slice task (module docstring) once; return its folder.

    Args:
        out_dir: parent of the dataset folder ``mni_tissue_<image_size>_<hash of the settings and source files>``.
        image_size: side of the written slices (pixels).
        slab_thickness: consecutive kept slices per slab.
        gap: slices dropped between consecutive slabs (>= 1, so slabs are never adjacent).
        tissue_threshold: ``max(gm, wm)`` a pixel needs to be tissue.
        min_brain_fraction: tissue share of the slice a slice needs to be kept.
        source_dir: folder holding the three template files; ``None``: nilearn's package data.

    Returns:
        the dataset folder holding ``dataset.json``, ``images/`` and ``labels/``. A complete folder made with the
        same settings from the same source files is returned as is; otherwise it is written to a temporary sibling
        and published in one rename (a stale or incomplete folder under the same name is replaced).

    Raises:
        FileNotFoundError: a template file is missing (the message gives the install hint).
        ValueError: invalid settings, or inconsistent source volumes.
    """
    if image_size < 4:
        raise ValueError(f"image_size must be >= 4, got {image_size}.")
    if not 0.0 < tissue_threshold <= 1.0 or not 0.0 <= min_brain_fraction < 1.0:
        raise ValueError(
            f"tissue_threshold must be in (0, 1] and min_brain_fraction in [0, 1), got {tissue_threshold} and "
            f"{min_brain_fraction}."
        )
    slab_split(0, slab_thickness, gap)  # validates the slab settings
    folder = find_source_dir(source_dir)
    settings = {
        "image_size": int(image_size),
        "slab_thickness": int(slab_thickness),
        "gap": int(gap),
        "tissue_threshold": float(tissue_threshold),
        "min_brain_fraction": float(min_brain_fraction),
        "box_margin": BOX_MARGIN,
        "preparation_version": PREPARATION_VERSION,
        "source_sha256": {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in SOURCE_FILES.values()
        },
    }
    final = Path(out_dir) / f"mni_tissue_{image_size}_{_digest(settings)[:10]}"
    if _is_complete(final, settings):
        return final

    volumes = _load_source(folder)
    top, left, side = _square_box(tissue_labels(volumes["gm"], volumes["wm"], tissue_threshold) > 0, BOX_MARGIN)
    image = _resample(_crop(volumes["t1"], top, left, side), image_size, probability=False)
    label = tissue_labels(
        _resample(_crop(volumes["gm"], top, left, side), image_size, probability=True),
        _resample(_crop(volumes["wm"], top, left, side), image_size, probability=True),
        tissue_threshold,
    )
    kept = [z for z in range(label.shape[0]) if (label[z] > 0).mean() >= min_brain_fraction]
    if not kept:
        raise ValueError(f"no slice has tissue covering {min_brain_fraction} of it; lower min_brain_fraction.")
    slabs = slab_split(len(kept), slab_thickness, gap)

    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "images").mkdir(parents=True)
        (tmp / "labels").mkdir()
        splits: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
        for z, k in zip(kept, slabs):
            if k is None:
                continue
            item: dict[str, Any] = {"image": f"./images/slice_{z:03d}.npy", "label": f"./labels/slice_{z:03d}.npy"}
            np.save(tmp / item["image"], image[z][None])
            np.save(tmp / item["label"], label[z][None])
            item.update(slice=z, slab=k)
            split = split_of_slab(k)
            if split != "training":
                item["group"] = f"slab{k}"
            splits[split].append(item)
        content = {
            "name": "MNI152_2009a_tissue",
            "description": "Grey / white matter of axial slices of the MNI ICBM152 2009a symmetric T1 template "
            "(one brain; splits are interleaved slabs), see common/data/mni_tissue.py.",
            "reference": "Fonov et al., NeuroImage 47 (2009) S102; NeuroImage 54 (2011) 313-327; files from nilearn.",
            "tensorImageSize": "2D",
            "modality": {"0": "T1"},
            "labels": LABELS,
            "numTraining": len(splits["training"]),
            "numValidation": len(splits["validation"]),
            "numTest": len(splits["test"]),
            "crop": {"top": top, "left": left, "side": side, "num_slices": int(label.shape[0]), "kept": len(kept)},
            "preparation": settings,
            **splits,
        }
        write_text_atomic(tmp / MARKER, json.dumps(content, indent=1))
        if _is_complete(final, settings):  # another process published it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        if final.exists():  # stale or incomplete: move it aside, then publish in one rename
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        publish_folder(tmp, final, MARKER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def split_summary(
    dataset_dir: str | os.PathLike, splits: Sequence[str] = ("training", "validation", "test")
) -> dict[str, tuple[int, list[float]]]:
    """Per split of a prepared folder: ``(number of slices, [background, grey, white] pixel fractions)``."""
    result = {}
    for split in splits:
        items = load_datalist(Path(dataset_dir) / MARKER, split)
        counts = np.zeros(3)
        for item in items:
            counts += np.bincount(np.load(item["label"]).ravel(), minlength=3)[:3]
        result[split] = (len(items), (counts / max(counts.sum(), 1)).round(4).tolist())
    return result
