"""MONAI ``CacheDataset`` s for training: one whose samples are plain tensors (no metadata tracking), and one that
accepts raw datalist items next to prepared 2D samples.

A bundle's own configs hand its datasets prepared samples (:func:`common.data.prepare_datalists`). MONAI Label
instead overrides ``train#dataset#data`` and ``validate#dataset#data`` with its own list of labelled images, which may
be 3D volumes in their original intensities; this dataset puts such items through the bundle's slice pipeline and
intensity normalisation first, so that training through MONAI Label sees the same 2D, normalised samples as the
command line (and as the inference config's normalisation expects).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.data import CacheDataset, MetaTensor, get_track_meta, set_track_meta

from .prepare import prepare_items

__all__ = ["PlainCacheDataset", "PreparedCacheDataset", "plain_tensors"]


def plain_tensors(item: Any) -> Any:
    """``item`` with every ``MetaTensor`` (in dicts, lists and tuples) as a plain ``torch.Tensor`` sharing its storage,
    and without the ``*_meta_dict`` / ``*_transforms`` entries of MONAI's dictionary transforms."""
    if isinstance(item, MetaTensor):
        return item.as_tensor()
    if isinstance(item, Mapping):
        return {
            k: plain_tensors(v)
            for k, v in item.items()
            if not (isinstance(k, str) and (k.endswith("_meta_dict") or k.endswith("_transforms")))
        }
    if isinstance(item, (list, tuple)):
        return type(item)(plain_tensors(v) for v in item)
    return item


class PlainCacheDataset(CacheDataset):
    """``monai.data.CacheDataset`` whose samples can be plain tensors, for training loops that read no metadata.

    With ``track_meta`` false, each cached sample (the deterministic transforms' output) is stored as plain tensors
    (:func:`plain_tensors`), and the random transforms run with MONAI's metadata tracking off
    (``monai.data.set_track_meta(False)`` for the call, restored after it): the samples hold the same values, drawn
    with the same random numbers, as with tracking on, but no ``MetaTensor``, so the transforms, the collation and the
    network's forward and backward passes skip MONAI's per-operation metadata bookkeeping (``__torch_function__``).
    Use it where nothing reads the samples' metadata (file names, affines, applied operations): training loaders,
    not evaluation that writes masks.

    Args:
        data, transform: as ``monai.data.CacheDataset``.
        track_meta: keep MONAI's ``MetaTensor`` samples (``True``, ``CacheDataset`` as is) or plain tensors.
        cache_kwargs: the other arguments of ``monai.data.CacheDataset`` (``cache_rate``, ``num_workers``, ...).
    """

    def __init__(
        self, data: Sequence, transform: Callable | None = None, track_meta: bool = False, **cache_kwargs: Any
    ) -> None:
        self.track_meta = track_meta
        super().__init__(data=data, transform=transform, **cache_kwargs)

    def _load_cache_item(self, idx: int) -> Any:
        item = super()._load_cache_item(idx)
        return item if self.track_meta else plain_tensors(item)

    def _transform(self, index: int) -> Any:
        if self.track_meta:
            return super()._transform(index)
        previous = get_track_meta()
        set_track_meta(False)
        try:
            return plain_tensors(super()._transform(index))
        finally:
            set_track_meta(previous)


class PreparedCacheDataset(PlainCacheDataset):
    """``CacheDataset`` over :func:`common.data.prepare.prepare_items` of ``data``.

    Args:
        data: prepared 2D samples and/or raw ``{"image", "label"}`` items (2D images or 3D volumes, absolute paths).
        transform: the bundle's preprocessing of a prepared sample.
        work_dir: the bundle's output folder (raw items are prepared under ``work_dir/prepared_items``).
        slicing, intensity, num_channels, num_classes: the bundle's settings, as in
            :func:`common.data.prepare_datalists`.
        track_meta: ``MetaTensor`` samples (default) or plain tensors, as in :class:`PlainCacheDataset`.
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
        track_meta: bool = True,
        **cache_kwargs: Any,
    ) -> None:
        samples = prepare_items(data, work_dir, slicing, intensity, num_channels, num_classes)
        if data and not samples:
            raise ValueError(
                f"none of the {len(data)} datalist items (first: {data[0].get('image')}) left a 2D sample after the "
                f"slice filters ({dict(slicing or {})}); lower the filters or add data."
            )
        super().__init__(data=samples, transform=transform, track_meta=track_meta, **cache_kwargs)
