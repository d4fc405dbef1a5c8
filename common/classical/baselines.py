"""The classical segmentations a user would try first, as the comparison rows of every label-free result.

* ``"otsu"``: Otsu's threshold per image (multi-Otsu for more than two classes: classes by increasing intensity);
* ``"chan_vese"``: the morphological Chan-Vese level set per image, brighter phase = object, **no erosion** (the
  coarse mask of AF-Seg's stage 1 before its erosion, :func:`common.classical.coarse_masks.coarse_mask`).

Their volume forms (:data:`VOLUME_METHODS`, :func:`classical_segmentation_3d`) take one decision per 3D volume:

* ``"otsu_3d"``: one Otsu threshold (multi-Otsu) over the whole volume;
* ``"chan_vese_3d"``: one 3D morphological Chan-Vese level set over the volume (started from the volume's Otsu split),
  brighter phase (over the volume) = object, no erosion (AF-Seg's stage 1 with ``region_statistics="volume"``,
  :func:`common.classical.coarse_masks.coarse_masks_volume`; its 3D smoothing shrinks objects a few voxels thick).

:func:`report_on_volumes` runs a volume method on the prepared slices of each test volume (restacked) and scores it
slice by slice, the unit of the bundles' evaluations; ``on_slice`` hands each slice's mask on, so that a caller can
also score per volume (the label-efficiency benchmark on 3D data, :mod:`common.benchmark.volumes`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from skimage.filters import threshold_multiotsu, threshold_otsu

from common.classical.coarse_masks import _volume_groups, coarse_mask, coarse_masks_volume
from common.metrics import SegmentationReport

__all__ = [
    "CLASSICAL_METHODS",
    "VOLUME_INTENSITY",
    "VOLUME_METHODS",
    "classical_segmentation",
    "classical_segmentation_3d",
    "report_on_items",
    "report_on_volumes",
]

CLASSICAL_METHODS = ("otsu", "chan_vese")
VOLUME_METHODS = ("otsu_3d", "chan_vese_3d")
SliceObserver = Callable[[Mapping, np.ndarray, np.ndarray], None]  # (item, pred (H, W), label (1, H, W)) -> None
# the slice pipeline's intensity settings for the volume methods: a plain z-score of each volume, affine in the raw
# intensities, so Otsu's threshold and the min-max normalised Chan-Vese see the raw volume (the default, k 5 and a
# clip to [-1, 1], flattens a rare bright object into one bin at 1, and Otsu may then split the background instead)
VOLUME_INTENSITY = {"k": 1.0, "clip": None, "foreground_threshold": None}


def classical_segmentation(image: np.ndarray, method: str, num_classes: int = 2) -> np.ndarray:
    """Class indices ``(H, W)`` int64 of one ``(H, W)`` image by ``method`` (one of :data:`CLASSICAL_METHODS`).

    Raises:
        ValueError: for another method, or Chan-Vese with more than two classes (it is two-phase).
    """
    image = np.asarray(image, dtype=np.float64)
    if method == "otsu":
        if num_classes == 2:
            return (image > threshold_otsu(image)).astype(np.int64)
        return np.digitize(image, threshold_multiotsu(image, classes=num_classes)).astype(np.int64)
    if method == "chan_vese":
        if num_classes != 2:
            raise ValueError(f"chan_vese is two-phase; got num_classes={num_classes}.")
        return coarse_mask(image, "level_set", erosion_radius=0).astype(np.int64)
    raise ValueError(f"method must be one of {CLASSICAL_METHODS}, got {method!r}.")


def classical_segmentation_3d(volume: np.ndarray, method: str, num_classes: int = 2) -> np.ndarray:
    """Class indices ``(S, H, W)`` int64 of one volume ``(S, H, W)`` (its slices stacked) by ``method``, one of
    :data:`VOLUME_METHODS`: one decision over the whole volume, so a slice without object can stay empty.

    Raises:
        ValueError: for another method, a volume that is not 3D, or Chan-Vese with more than two classes.
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"expected a (S, H, W) volume, got shape {volume.shape}.")
    if method == "otsu_3d":
        return classical_segmentation(volume, "otsu", num_classes)  # Otsu's histogram over every voxel
    if method == "chan_vese_3d":
        if num_classes != 2:
            raise ValueError(f"chan_vese_3d is two-phase; got num_classes={num_classes}.")
        return np.stack(coarse_masks_volume(list(volume), "level_set")).astype(np.int64)
    raise ValueError(f"method must be one of {VOLUME_METHODS}, got {method!r}.")


def report_on_volumes(
    items: Sequence[Mapping],
    segment: Callable[[np.ndarray], np.ndarray],
    num_classes: int = 2,
    class_names: Sequence[str] | None = None,
    on_slice: SliceObserver | None = None,
) -> SegmentationReport:
    """The metrics of a per-volume method on prepared slices, per slice against their labels (evaluation only).

    The slices of one volume (items sharing a ``"source"``, in ``"slice"`` order) are stacked into ``(S, H, W)``
    (channel 0; the slices the slice pipeline kept, so a volume whose slices were filtered is segmented without
    them), segmented at once, and every slice's mask is added under the slice's own name: the items, names and unit
    of :func:`report_on_items` and of the bundles' evaluations. An item without a source is a volume of one slice.

    Args:
        items: prepared samples ``{"image": <(C, H, W) .npy>, "label": <(1, H, W) .npy>, "source", "slice"}``.
        segment: volume ``(S, H, W)`` -> class map ``(S, H, W)``, e.g.
            ``lambda volume: classical_segmentation_3d(volume, "otsu_3d")``.
        num_classes, class_names: of :class:`common.metrics.SegmentationReport`.
        on_slice: called with each ``(item, pred (H, W), label (1, H, W))``, a volume's slices together and in
            slice order, e.g. to score per volume (:func:`common.benchmark.volumes.slice_observer`).
    """
    report = SegmentationReport(num_classes, class_names)
    for group in _volume_groups(items):
        volume = np.stack([np.load(items[i]["image"])[0] for i in group])
        pred = np.asarray(segment(volume))
        if pred.shape != volume.shape:
            raise ValueError(f"segment returned shape {pred.shape} for a volume of shape {volume.shape}.")
        labels = np.stack([np.load(items[i]["label"]) for i in group])  # (S, 1, H, W)
        report.add(
            torch.as_tensor(pred)[:, None],
            torch.as_tensor(labels).long(),
            names=[items[i]["image"] for i in group],
        )
        if on_slice is not None:
            for j, i in enumerate(group):
                on_slice(items[i], pred[j], labels[j])
    return report


def report_on_items(
    items: Sequence[Mapping],
    segment: Callable[[np.ndarray], np.ndarray],
    num_classes: int = 2,
    class_names: Sequence[str] | None = None,
    on_slice: SliceObserver | None = None,
) -> SegmentationReport:
    """The metrics of a per-image method on prepared 2D items, against their labels (evaluation only).

    Args:
        items: prepared samples ``{"image": <(C, H, W) .npy>, "label": <(1, H, W) .npy>}``.
        segment: channel 0 of an image ``(H, W)`` -> class map ``(H, W)``, e.g.
            ``lambda image: classical_segmentation(image, "otsu")``.
        num_classes, class_names: of :class:`common.metrics.SegmentationReport`.
        on_slice: called with each ``(item, pred (H, W), label (1, H, W))`` in the items' order, e.g. to score per
            volume (:func:`common.benchmark.volumes.slice_observer`).
    """
    report = SegmentationReport(num_classes, class_names)
    for item in items:
        pred, label = segment(np.load(item["image"])[0]), np.load(item["label"])
        report.add(torch.as_tensor(pred)[None, None], torch.as_tensor(label)[None].long(), names=[item["image"]])
        if on_slice is not None:
            on_slice(item, pred, label)
    return report
