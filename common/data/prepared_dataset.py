"""A MONAI ``CacheDataset`` that accepts raw datalist items next to prepared 2D samples.

A bundle's own configs hand its datasets prepared samples (:func:`common.data.prepare_datalists`). MONAI Label
instead overrides ``train#dataset#data`` and ``validate#dataset#data`` with its own list of labelled images, which may
be 3D volumes in their original intensities; this dataset puts such items through the bundle's slice pipeline and
intensity normalisation first, so that training through MONAI Label sees the same 2D, normalised samples as the
command line (and as the inference config's normalisation expects).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.data import CacheDataset

from .prepare import prepare_items

__all__ = ["PreparedCacheDataset"]


class PreparedCacheDataset(CacheDataset):
    """``CacheDataset`` over :func:`common.data.prepare.prepare_items` of ``data``.

    Args:
        data: prepared 2D samples and/or raw ``{"image", "label"}`` items (2D images or 3D volumes, absolute paths).
        transform: the bundle's preprocessing of a prepared sample.
        work_dir: the bundle's output folder (raw items are prepared under ``work_dir/prepared_items``).
        slicing, intensity, num_channels, num_classes: the bundle's settings, as in
            :func:`common.data.prepare_datalists`.
        cache_kwargs: the other arguments of ``monai.data.CacheDataset`` (``cache_rate``, ``num_workers``, ...).
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Callable | None,
        work_dir: str,
        slicing: Mapping[str, Any] | None = None,
        intensity: Mapping[str, Any] | None = None,
        num_channels: int | None = None,
        num_classes: int | None = None,
        **cache_kwargs: Any,
    ) -> None:
        samples = prepare_items(data, work_dir, slicing, intensity, num_channels, num_classes)
        if data and not samples:
            raise ValueError(
                f"none of the {len(data)} datalist items (first: {data[0].get('image')}) left a 2D sample after the "
                f"slice filters ({dict(slicing or {})}); lower the filters or add data."
            )
        super().__init__(data=samples, transform=transform, **cache_kwargs)
