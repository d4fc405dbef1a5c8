"""The classical segmentations a user would try first, as the comparison rows of every label-free result.

* ``"otsu"``: Otsu's threshold per image (multi-Otsu for more than two classes: classes by increasing intensity);
* ``"chan_vese"``: the morphological Chan-Vese level set per image, brighter phase = object, **no erosion** (the
  coarse mask of AF-Seg's stage 1 before its erosion, :func:`common.classical.coarse_masks.coarse_mask`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from skimage.filters import threshold_multiotsu, threshold_otsu

from common.classical.coarse_masks import coarse_mask
from common.metrics import SegmentationReport

__all__ = ["CLASSICAL_METHODS", "classical_segmentation", "report_on_items"]

CLASSICAL_METHODS = ("otsu", "chan_vese")


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


def report_on_items(
    items: Sequence[Mapping],
    segment: Callable[[np.ndarray], np.ndarray],
    num_classes: int = 2,
    class_names: Sequence[str] | None = None,
) -> SegmentationReport:
    """The metrics of a per-image method on prepared 2D items, against their labels (evaluation only).

    Args:
        items: prepared samples ``{"image": <(C, H, W) .npy>, "label": <(1, H, W) .npy>}``.
        segment: channel 0 of an image ``(H, W)`` -> class map ``(H, W)``, e.g.
            ``lambda image: classical_segmentation(image, "otsu")``.
        num_classes, class_names: of :class:`common.metrics.SegmentationReport`.
    """
    report = SegmentationReport(num_classes, class_names)
    for item in items:
        pred = torch.as_tensor(segment(np.load(item["image"])[0]))[None, None]
        report.add(pred, torch.as_tensor(np.load(item["label"]))[None].long(), names=[item["image"]])
    return report
