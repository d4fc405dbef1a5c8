"""Stage 1 of AF-Seg (Yu, Dong et al., ISBI 2020, Sec. 2.1): coarse masks from a classical method, then erosion.

The weak labels of AF-Seg come from no annotation at all: a level set for blob-like objects (cells; the paper uses
the level set of Li et al. 2011, here Chan-Vese through scikit-image's morphological solver) and a Hessian
vesselness filter plus a threshold for tubular ones (vessels; :func:`skimage.filters.frangi`). A morphological
erosion then removes false positives at the object borders, so the weak label is "under-segmented but clean":
the false negatives are dealt with later by the background generation (stage 2) and the synthesis (stage 3).

:func:`write_coarse_masks` runs this over a datalist of prepared 2D samples (labels are dropped first, so no
manual label can leak in) and writes the weak labels and a datalist atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from skimage.filters import frangi, threshold_otsu
from skimage.morphology import disk, erosion, remove_small_objects
from skimage.segmentation import morphological_chan_vese

from common.atomic_write import atomic_path
from common.data import read_json, write_json_atomic

__all__ = ["METHODS", "coarse_mask", "drop_labels", "fingerprint", "save_npy_atomic", "write_coarse_masks"]

METHODS = ("level_set", "vesselness")


def _minmax(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` image -> ``(H, W)`` float64 in [0, 1]."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) image, got shape {np.shape(image)}.")
    span = img.max() - img.min()
    return (img - img.min()) / span if span > 0 else np.zeros_like(img)


def coarse_mask(
    image: np.ndarray,
    method: str = "level_set",
    erosion_radius: int = 1,
    bright_foreground: bool = True,
    level_set_iterations: int = 100,
    level_set_smoothing: int = 1,
    vesselness_sigmas: Sequence[float] = (1.0, 1.5, 2.0, 3.0),
    vesselness_threshold: float | None = None,
    min_size: int = 4,
) -> np.ndarray:
    """Coarse (weak) label of one 2D image, AF-Seg stage 1.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` intensities (any range; min-max normalised here).
        method: ``"level_set"`` (Chan-Vese, morphological solver: cells) or ``"vesselness"`` (Frangi: vessels).
        erosion_radius: radius of the disk of the final erosion (0: none); the paper erodes to cut false positives.
        bright_foreground: level set: the brighter phase is the object; vesselness: ``False`` looks for dark
            ridges (vessels in angiograms are dark), ``True`` for bright ones.
        level_set_iterations, level_set_smoothing: of :func:`skimage.segmentation.morphological_chan_vese`.
        vesselness_sigmas: scales of the Hessian (pixels).
        vesselness_threshold: threshold on the vesselness normalised to [0, 1]; ``None``: Otsu's threshold.
        min_size: connected components smaller than this (pixels) are removed after thresholding.

    Returns:
        ``(H, W)`` uint8 mask, 1 = object.
    """
    img = _minmax(image)
    if method == "level_set":
        mask = morphological_chan_vese(
            img, num_iter=level_set_iterations, init_level_set="checkerboard", smoothing=level_set_smoothing
        ).astype(bool)
        if mask.any() and (~mask).any() and (img[mask].mean() < img[~mask].mean()) == bright_foreground:
            mask = ~mask
    elif method == "vesselness":
        response = frangi(img, sigmas=list(vesselness_sigmas), black_ridges=not bright_foreground)
        response = response / response.max() if response.max() > 0 else response
        threshold = threshold_otsu(response) if vesselness_threshold is None else vesselness_threshold
        mask = response > threshold
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if min_size > 1:
        mask = remove_small_objects(mask, max_size=min_size - 1)
    if erosion_radius > 0:
        mask = erosion(mask, disk(erosion_radius))
    return mask.astype(np.uint8)


def drop_labels(items: Sequence[Mapping], label_keys: Sequence[str] = ("label",)) -> list[dict]:
    """Copies of ``items`` without their label keys: AF-Seg uses no manual label before evaluation."""
    return [{k: v for k, v in item.items() if k not in label_keys} for item in items]


def fingerprint(items: Sequence[Mapping], settings: Mapping) -> str:
    """Short hash of the image paths of ``items`` and of ``settings``: names a stage's output folder, so that
    outputs computed for other data or settings are never reused."""
    content = json.dumps([[str(item["image"]) for item in items], dict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:10]


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file in the same folder, then rename (readers never see half a file)."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def write_coarse_masks(
    items: Sequence[Mapping], out_dir: str | os.PathLike, key: str = "weak", **kwargs: object
) -> list[dict]:
    """Stage 1 over a datalist: one weak label per item, written as ``(1, H, W)`` uint8 ``.npy``.

    Weak labels use the channel-first ``.npy`` layout of the prepared samples (loaded by
    :class:`common.transforms.LoadImageLabeld`). ``out_dir/datalist.json`` is written last and atomically; when it
    exists the stage is skipped and its list returned (delete the folder to recompute).

    Args:
        items: prepared 2D samples ``{"image": <(C, H, W) .npy>, ...}``; any ``"label"`` key is dropped.
        out_dir: folder of the weak labels and of ``datalist.json``.
        key: item key of the weak label.
        kwargs: arguments of :func:`coarse_mask`.

    Returns:
        the items (labels dropped) with ``item[key]`` the weak-label path.
    """
    out = Path(out_dir)
    datalist = out / "datalist.json"
    if datalist.is_file():
        return read_json(datalist)["items"]
    out.mkdir(parents=True, exist_ok=True)
    result = []
    for index, item in enumerate(drop_labels(items)):
        image = np.load(item["image"])
        mask = coarse_mask(image[0], **kwargs)[None]
        path = out / f"{index:05d}_{Path(item['image']).stem}_weak.npy"
        save_npy_atomic(path, mask)
        result.append({**item, key: str(path)})
    write_json_atomic(datalist, {"items": result, "settings": {k: v for k, v in kwargs.items()}})
    return result
