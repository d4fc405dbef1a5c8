"""Stage 1 of AF-Seg (Yu, Dong et al., ISBI 2020, Sec. 2.1): coarse masks from a classical method, then erosion.

The weak labels of AF-Seg come from no annotation at all: a level set for blob-like objects (cells; the paper uses
the level set of Li et al. 2011, here Chan-Vese through scikit-image's morphological solver) and a Hessian
vesselness filter plus a threshold for tubular ones (vessels; :func:`skimage.filters.frangi`). A morphological
erosion then removes false positives at the object borders, so the weak label is "under-segmented but clean":
the false negatives are dealt with later by the background generation (stage 2) and the synthesis (stage 3).

A fixed erosion radius does not follow the objects' size: 1 px takes a third of the area of
objects of 4-5 px radius, and next to nothing from objects of 30 px. ``erosion_radius="auto"`` decides it once per
data set, from the un-eroded coarse masks of the training images: ``floor(erosion_size_fraction x median equivalent
radius)`` of their connected components, the equivalent radius of a component being ``sqrt(area / pi)``
(:func:`auto_erosion_radius`); 0 (no erosion) for small objects. Masks of other images (validation, test) take the
radius chosen on the training images (:func:`erosion_radius_used`).

Multi-channel images (e.g. RGB) are reduced to one channel first (:func:`select_channel`): one channel by index
(e.g. 0 for nuclei in the red channel) or ``"grey"``, the mean over channels.

:func:`write_coarse_masks` runs this over a datalist of prepared 2D samples (labels are dropped first, so no
manual label can leak in) and writes the weak labels and a datalist atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from skimage.filters import frangi, threshold_otsu
from skimage.measure import label as connected_components
from skimage.morphology import disk, erosion, remove_small_objects
from skimage.segmentation import morphological_chan_vese

from common.atomic_write import save_npy_atomic, write_json_atomic
from common.data import drop_labels, read_json

__all__ = [
    "METHODS",
    "auto_erosion_radius",
    "coarse_mask",
    "coarse_masks_volume",
    "equivalent_radii",
    "erosion_radius_used",
    "fingerprint",
    "select_channel",
    "write_coarse_masks",
]

METHODS = ("level_set", "vesselness")

logger = logging.getLogger(__name__)


def select_channel(image: np.ndarray, channel: int | str = "grey") -> np.ndarray:
    """``(H, W)`` or ``(C, H, W)`` image -> ``(H, W)``: channel ``channel`` (an index), or ``"grey"``, the mean over
    channels. A ``(H, W)`` image is returned as it is."""
    img = np.asarray(image)
    if img.ndim == 2:
        return img
    if img.ndim != 3:
        raise ValueError(f"expected a (H, W) or (C, H, W) image, got shape {img.shape}.")
    if channel == "grey":
        return img.mean(axis=0, dtype=np.float64).astype(img.dtype) if img.shape[0] > 1 else img[0]
    if isinstance(channel, str) or not -img.shape[0] <= int(channel) < img.shape[0]:
        raise ValueError(f"channel must be 'grey' or an index below {img.shape[0]}, got {channel!r}.")
    return img[int(channel)]


def equivalent_radii(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``sqrt(area / pi)`` (pixels) of every connected component (8-connected) of every ``(H, W)`` mask."""
    radii = [np.sqrt(np.bincount(connected_components(np.asarray(m) > 0).ravel())[1:] / np.pi) for m in masks]
    return np.concatenate(radii) if radii else np.zeros(0)


def auto_erosion_radius(masks: Sequence[np.ndarray], erosion_size_fraction: float = 0.15) -> int:
    """Erosion radius that follows the objects' size: ``floor(erosion_size_fraction x median equivalent radius)``
    of the connected components of ``masks`` (:func:`equivalent_radii`); 0 when there is no component.

    Args:
        masks: ``(H, W)`` un-eroded coarse masks (of the training images).
        erosion_size_fraction: the radius as a fraction of the median object's equivalent radius (0.15: no erosion
            below 6.7 px, 1 px up to 13.3 px, ...).
    """
    return _radius_from(equivalent_radii(masks), erosion_size_fraction)


def _radius_from(radii: np.ndarray, erosion_size_fraction: float) -> int:
    """``floor(erosion_size_fraction x median(radii))``, 0 for no radii."""
    return int(math.floor(erosion_size_fraction * float(np.median(radii)))) if radii.size else 0


def _minmax(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` image -> ``(H, W)`` float64 in [0, 1]."""
    img = np.asarray(image, dtype=np.float64)
    span = img.max() - img.min()
    return (img - img.min()) / span if span > 0 else np.zeros_like(img)


def coarse_mask(
    image: np.ndarray,
    method: str = "level_set",
    erosion_radius: int | str = 1,
    bright_foreground: bool = True,
    level_set_iterations: int = 100,
    level_set_smoothing: int = 1,
    vesselness_sigmas: Sequence[float] = (1.0, 1.5, 2.0, 3.0),
    vesselness_threshold: float | None = None,
    min_size: int = 4,
    channel: int | str = "grey",
    erosion_size_fraction: float = 0.15,
) -> np.ndarray:
    """Coarse (weak) label of one 2D image, AF-Seg stage 1.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` intensities (any range; min-max normalised here).
        method: ``"level_set"`` (Chan-Vese, morphological solver: cells) or ``"vesselness"`` (Frangi: vessels).
        erosion_radius: radius of the disk of the final erosion (0: none); the paper erodes to cut false positives.
            ``"auto"``: :func:`auto_erosion_radius` of this image's own mask (:func:`write_coarse_masks` decides it
            once for a data set instead).
        bright_foreground: level set: the brighter phase is the object; vesselness: ``False`` looks for dark
            ridges (vessels in angiograms are dark), ``True`` for bright ones.
        level_set_iterations, level_set_smoothing: of :func:`skimage.segmentation.morphological_chan_vese`.
        vesselness_sigmas: scales of the Hessian (pixels).
        vesselness_threshold: threshold on the vesselness normalised to [0, 1]; ``None``: Otsu's threshold.
        min_size: connected components smaller than this (pixels) are removed after thresholding.
        channel: channel of a ``(C, H, W)`` image (index), or ``"grey"`` (mean over channels); see
            :func:`select_channel`.
        erosion_size_fraction: of :func:`auto_erosion_radius`, for ``erosion_radius="auto"``.

    Returns:
        ``(H, W)`` uint8 mask, 1 = object.
    """
    img = _minmax(select_channel(image, channel))
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
    if erosion_radius == "auto":
        erosion_radius = auto_erosion_radius([mask], erosion_size_fraction)
    return _erode(mask, int(erosion_radius))


def coarse_masks_volume(
    slices: Sequence[np.ndarray],
    method: str = "level_set",
    bright_foreground: bool = True,
    level_set_iterations: int = 100,
    level_set_smoothing: int = 1,
    vesselness_sigmas: Sequence[float] = (1.0, 1.5, 2.0, 3.0),
    vesselness_threshold: float | None = None,
    min_size: int = 4,
    channel: int | str = "grey",
) -> list[np.ndarray]:
    """Un-eroded coarse masks of the slices of **one volume**, from statistics of the whole volume (issue 34).

    A two-phase method run on each slice alone finds two phases in every slice, including the (often many) slices
    that hold no object. Here the volume is min-max normalised once, and ``"level_set"`` runs the morphological
    Chan-Vese solver on the 3D stack (its two region means are those of the whole volume, and its smoothing acts in
    3D), started from the volume's Otsu split (the global optimum of the Chan-Vese energy without length term: the
    checkerboard start of the 2D path stalls in 3D, where a slow drift across a mostly object-free stack offers a
    second two-phase split of similar energy); ``"vesselness"`` computes the Frangi response per slice, normalises
    it by the volume's maximum and takes one threshold (Otsu over the volume, or ``vesselness_threshold``). A slice
    without object comes out empty.
    The brighter phase is the object (``bright_foreground``), decided over the volume; components smaller than
    ``min_size`` pixels are removed per slice, as for 2D images.

    Args:
        slices: the volume's 2D samples in slice order, each ``(H, W)`` or ``(C, H, W)``.
        method, bright_foreground, level_set_iterations, level_set_smoothing, vesselness_sigmas,
            vesselness_threshold, min_size, channel: as in :func:`coarse_mask`.

    Returns:
        one ``(H, W)`` bool mask per slice (not eroded).
    """
    volume = _minmax(np.stack([select_channel(s, channel) for s in slices]))  # (S, H, W) in [0, 1]
    if method == "level_set":
        start = (volume > threshold_otsu(volume)).astype(np.int8)  # the mu = 0 Chan-Vese optimum of the volume
        mask = morphological_chan_vese(
            volume, num_iter=level_set_iterations, init_level_set=start, smoothing=level_set_smoothing
        ).astype(bool)
        if mask.any() and (~mask).any() and (volume[mask].mean() < volume[~mask].mean()) == bright_foreground:
            mask = ~mask
    elif method == "vesselness":
        response = np.stack(
            [frangi(s, sigmas=list(vesselness_sigmas), black_ridges=not bright_foreground) for s in volume]
        )
        response = response / response.max() if response.max() > 0 else response
        threshold = threshold_otsu(response) if vesselness_threshold is None else vesselness_threshold
        mask = response > threshold
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if min_size > 1:
        mask = np.stack([remove_small_objects(m, max_size=min_size - 1) for m in mask])
    return list(mask)


def _source_slices(items: Sequence[Mapping], samples: Sequence[np.ndarray], slice_axis: int) -> list[np.ndarray]:
    """The slices of the items' common source volume at their ``"slice"`` indices, ``(C, H, W)`` float32 each, read
    with the slice pipeline's loader (:func:`common.data.slices.load_array`); ``samples`` when the source cannot be
    read or its slices do not have the samples' shapes."""
    from common.data.slices import load_array

    source = str(items[0].get("source") or "")
    try:
        volume = np.asarray(load_array(source, "image"), dtype=np.float32)  # (C, *spatial)
        if volume.ndim != 4:
            raise ValueError(f"expected a 3D volume (C, H, W, D), got shape {volume.shape}")
        out = [np.take(volume, int(item["slice"]), axis=slice_axis + 1) for item in items]
        if any(o.shape != np.shape(s) for o, s in zip(out, samples)):
            raise ValueError(f"its slices {out[0].shape} differ from the samples {np.shape(samples[0])}")
        return out
    except (OSError, ValueError, KeyError, IndexError) as e:
        logger.warning("stage 1: volume %s: its own intensities not used (%s); the samples are.", source, e)
        return list(samples)


def _volume_groups(items: Sequence[Mapping]) -> list[list[int]]:
    """Indices of ``items`` grouped by volume (``"source"``), each group in slice order; an item without a source, or
    the only item of its source (a 2D image), is a group of its own."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(str(item.get("source") or f"#{index}"), []).append(index)
    return [sorted(g, key=lambda i: int(items[i].get("slice", 0))) for g in groups.values()]


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """``(H, W)`` mask eroded by a disk of ``radius`` (0: unchanged) -> ``(H, W)`` uint8."""
    mask = np.asarray(mask) > 0
    return (erosion(mask, disk(radius)) if radius > 0 else mask).astype(np.uint8)


def fingerprint(items: Sequence[Mapping], settings: Mapping) -> str:
    """Short hash of the image paths of ``items`` and of ``settings``: names a stage's output folder, so that
    outputs computed for other data or settings are never reused."""
    content = json.dumps([[str(item["image"]) for item in items], dict(settings)], sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:10]


def write_coarse_masks(
    items: Sequence[Mapping],
    out_dir: str | os.PathLike,
    key: str = "weak",
    erosion_radius: int | str = 1,
    erosion_size_fraction: float = 0.15,
    region_statistics: str = "image",
    volume_intensities: str = "samples",
    slice_axis: int = 2,
    volume_smoothing: int | None = None,
    **kwargs: object,
) -> list[dict]:
    """Stage 1 over a datalist: one weak label per item, written as ``(1, H, W)`` uint8 ``.npy``.

    Weak labels use the channel-first ``.npy`` layout of the prepared samples (loaded by
    :class:`common.transforms.LoadImageLabeld`). ``out_dir/datalist.json`` is written last and atomically; when it
    exists the stage is skipped and its list returned (delete the folder to recompute). Its ``settings`` hold the
    arguments, and ``erosion_radius_used``, the radius applied (read it back with :func:`erosion_radius_used`).

    Args:
        items: prepared 2D samples ``{"image": <(C, H, W) .npy>, ...}``; any ``"label"`` key is dropped.
        out_dir: folder of the weak labels and of ``datalist.json``.
        key: item key of the weak label.
        erosion_radius: disk radius of the erosion (0: none), or ``"auto"``: :func:`auto_erosion_radius` of the
            un-eroded masks of all ``items``, decided once for them (pass the training images; give other images
            the radius chosen there, :func:`erosion_radius_used`).
        erosion_size_fraction: of :func:`auto_erosion_radius`.
        region_statistics: ``"image"`` (default here: each 2D sample on its own, as AF-Seg does for 2D images) or
            ``"volume"``: the slices of one volume (items sharing a ``"source"``) get :func:`coarse_masks_volume`,
            one level set (or threshold) over the volume, so object-free slices stay empty; 2D images (one-slice
            sources) are segmented alone either way.
        volume_intensities: with ``region_statistics="volume"``, what the volume's level set sees: ``"samples"``
            (default: the written 2D samples, as the slice pipeline normalised them) or ``"source"``: the volume's
            own intensities, read from the items' ``"source"`` file (its own range, min-max over the volume; no
            clipping) and cut along ``slice_axis`` at the items' ``"slice"`` indices. A pipeline that clips (AF-Seg:
            z-score / 5 clipped to [-1, 1]) flattens the brightest objects, and on a volume with few object voxels
            the background's slow drift then becomes the better two-phase split (issue 34). A volume whose source
            cannot be read, or whose slices do not have the samples' shape (resized samples), falls back to the
            samples, with a warning.
        slice_axis: spatial axis of the source volumes along which the samples were cut (the bundle's
            ``slicing#axis``), for ``volume_intensities="source"``.
        volume_smoothing: ``level_set_smoothing`` of the 3D level set of a volume (``None``: the same as for 2D
            images). The morphological smoothing acts in 3D there, and on objects a few slices thick it removes
            their first and last slices.
        kwargs: the other arguments of :func:`coarse_mask` (``method``, ``channel``, ...).

    Returns:
        the items (labels dropped) with ``item[key]`` the weak-label path.
    """
    out = Path(out_dir)
    datalist = out / "datalist.json"
    if datalist.is_file():
        return read_json(datalist)["items"]
    if erosion_radius != "auto" and (isinstance(erosion_radius, (str, bool)) or int(erosion_radius) < 0):
        raise ValueError(f"erosion_radius must be a radius >= 0 or 'auto', got {erosion_radius!r}.")
    out.mkdir(parents=True, exist_ok=True)
    items = drop_labels(items)
    # un-eroded masks first: the "auto" radius needs all of them before any is eroded
    if region_statistics not in ("image", "volume"):
        raise ValueError(f"region_statistics must be 'image' or 'volume', got {region_statistics!r}.")
    if volume_intensities not in ("samples", "source"):
        raise ValueError(f"volume_intensities must be 'samples' or 'source', got {volume_intensities!r}.")
    volume_kwargs = dict(kwargs)
    if volume_smoothing is not None:
        volume_kwargs["level_set_smoothing"] = int(volume_smoothing)
    masks: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(items)
    groups = _volume_groups(items) if region_statistics == "volume" else [[i] for i in range(len(items))]
    for group in groups:
        if len(group) > 1:
            slices = [np.load(items[i]["image"]) for i in group]
            if volume_intensities == "source":
                slices = _source_slices([items[i] for i in group], slices, slice_axis)
            volume_masks = coarse_masks_volume(slices, **volume_kwargs)
            for i, mask in zip(group, volume_masks):
                masks[i] = mask
            occupied = sum(bool(m.any()) for m in volume_masks)
            logger.info(
                "stage 1: volume %s: %d of %d slices hold foreground (one %s over the volume)",
                items[group[0]].get("source"),
                occupied,
                len(group),
                kwargs.get("method", "level_set"),
            )
        else:
            masks[group[0]] = coarse_mask(np.load(items[group[0]]["image"]), erosion_radius=0, **kwargs).astype(bool)
    settings = {"erosion_radius": erosion_radius, "erosion_size_fraction": erosion_size_fraction, **kwargs}
    if region_statistics != "image":
        settings["region_statistics"] = region_statistics
    if any(len(g) > 1 for g in groups):  # settings of the volume path, recorded where a volume was segmented
        if volume_intensities != "samples":
            settings.update(volume_intensities=volume_intensities, slice_axis=slice_axis)
        if volume_smoothing is not None:
            settings["volume_smoothing"] = volume_smoothing
    if erosion_radius == "auto":
        radii = equivalent_radii(masks)
        radius = _radius_from(radii, erosion_size_fraction)
        median = float(np.median(radii)) if radii.size else 0.0
        settings["median_equivalent_radius"] = median
        logger.info(
            "stage 1 (%s): erosion radius %d px (auto: floor(%g x median equivalent radius %.2f px of %d objects))",
            out,
            radius,
            erosion_size_fraction,
            median,
            radii.size,
        )
    else:
        radius = int(erosion_radius)
        logger.info("stage 1 (%s): erosion radius %d px", out, radius)
    settings["erosion_radius_used"] = radius
    result = []
    for index, (item, mask) in enumerate(zip(items, masks)):
        path = out / f"{index:05d}_{Path(item['image']).stem}_weak.npy"
        save_npy_atomic(path, _erode(mask, radius)[None])
        result.append({**item, key: str(path)})
    write_json_atomic(datalist, {"items": result, "settings": settings})
    return result


def erosion_radius_used(items: Sequence[Mapping], key: str = "weak") -> int:
    """The erosion radius that :func:`write_coarse_masks` applied to ``items`` (its returned list), read from the
    ``datalist.json`` beside their weak labels: the radius to give the coarse masks of other images (validation,
    test) so that they are eroded as the training ones were."""
    if not items:
        raise ValueError("erosion_radius_used needs the (non-empty) items returned by write_coarse_masks.")
    settings = read_json(Path(items[0][key]).parent / "datalist.json")["settings"]
    return int(settings["erosion_radius_used"])
