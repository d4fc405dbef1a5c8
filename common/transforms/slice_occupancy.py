"""Per-volume report of which slices a label-free segmentation leaves empty (issue 34).

A two-phase model segments every slice it is given into two phases unless its statistics come from the whole
volume. :class:`SliceOccupancyd` logs, for each segmented volume, how many slices along the slice axis hold
foreground, their range, the foreground share, and the two region means ``c1`` (inside) and ``c2`` (outside) of the
predicted partition over the whole volume (the Chan-Vese statistics the volume-level energy uses), so a user sees
without any label whether object-free slices stayed empty. It changes nothing in the data.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .validation import source_name

__all__ = ["SliceOccupancyd", "slice_occupancy"]

logger = logging.getLogger(__name__)


def slice_occupancy(
    pred: torch.Tensor, image: torch.Tensor | None, slice_axis: int, min_fraction: float = 0.0
) -> dict[str, object]:
    """Summary of a binary volume ``pred`` ``(1, H, W, D)`` (foreground ``> 0``) along ``slice_axis`` (0-2).

    Returns ``slices`` (count), ``occupied`` (indices of slices whose foreground share exceeds ``min_fraction``),
    ``max_unoccupied_share`` (the largest share among the others), ``foreground_share`` and, when the ``image``
    ``(C, H, W, D)`` is given, ``c1``/``c2`` (its channel-mean intensity inside/outside over the volume).
    """
    fg = pred.detach().reshape(-1, *pred.shape[-3:])[0] > 0
    share = fg.movedim(slice_axis, 0).flatten(1).float().mean(1)
    occupied = share > min_fraction
    summary: dict[str, object] = {
        "slices": int(share.numel()),
        "occupied": occupied.nonzero().flatten().tolist(),
        "max_unoccupied_share": float(share[~occupied].max()) if bool((~occupied).any()) else 0.0,
        "foreground_share": float(fg.float().mean()),
    }
    if image is not None:
        grey = image.detach().float().reshape(-1, *image.shape[-3:]).mean(0)
        inside = int(fg.sum())
        summary["c1"] = float(grey[fg].mean()) if inside else float("nan")
        summary["c2"] = float(grey[~fg].mean()) if inside < fg.numel() else float("nan")
    return summary


class SliceOccupancyd(MapTransform):
    """Log :func:`slice_occupancy` for each 3D prediction (2D predictions pass silently); data unchanged.

    Args:
        keys: prediction keys (``(1, H, W, D)`` after thresholding).
        image_key: the scaled input image, for ``c1``/``c2`` (``None``: not reported).
        slice_axis: spatial axis (0-2) of the slices.
        min_fraction: a slice counts as holding foreground when more than this share of it is foreground (0: any
            pixel); the largest share among the other slices is logged too.
    """

    def __init__(
        self, keys: KeysCollection, image_key: str | None = "image", slice_axis: int = 2, min_fraction: float = 0.0
    ) -> None:
        super().__init__(keys)
        self.image_key = image_key
        self.slice_axis = slice_axis
        self.min_fraction = min_fraction
        self.last: dict[str, dict[str, object]] = {}  # volume name -> summary, for tests and callers

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            if pred.ndim != 4:
                continue
            image = d.get(self.image_key) if self.image_key else None
            image = image if image is not None and image.shape[-3:] == pred.shape[-3:] else None
            s = slice_occupancy(pred, image, self.slice_axis, self.min_fraction)
            name = source_name(pred) if source_name(pred) != "<in-memory array>" else source_name(image)
            self.last[name] = s
            occupied = s["occupied"]
            span = f" (first {occupied[0]}, last {occupied[-1]})" if occupied else ""
            means = f", c1 {s['c1']:.3f}, c2 {s['c2']:.3f}" if "c1" in s else ""
            logger.info(
                f"{name}: {len(occupied)} of {s['slices']} slices hold more than {100 * self.min_fraction:g} % "
                f"foreground{span} (the others at most {100 * s['max_unoccupied_share']:.2f} %), "
                f"foreground {100 * s['foreground_share']:.1f} % of the volume{means}."
            )
        return d
