"""Robust min-max normalisation: intensities scaled between two percentiles, per channel and per 2D slice (or volume).

Chen & Frey (MIDL 2020) min-max normalise each image to [0, 1] (``percentiles = (0, 100)`` here). A few saturated
pixels then decide where the two Chan-Vese phases split; the percentile clip (default 0.5 and 99.5) ignores them.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["ScalePercentilesd", "scale_percentiles"]


def scale_percentiles(image: torch.Tensor, percentiles: Sequence[float], slice_axis: int | None = None) -> torch.Tensor:
    """``clip((x - q_lo) / (q_hi - q_lo), 0, 1)`` with the percentiles ``q`` of each channel (and 2D slice).

    Args:
        image: ``(C, H, W)`` image or ``(C, H, W, D)`` volume.
        percentiles: ``(lower, upper)`` in [0, 100]; ``(0, 100)`` is plain min-max.
        slice_axis: spatial axis (0-2) of a volume's 2D slices, each scaled by its own percentiles, as the training
            slices were; ignored for 2D images; ``None``: the whole volume at once.

    Returns:
        a float tensor of the same shape (and type, MetaTensor metadata kept) in [0, 1].
    """
    lower, upper = (float(p) for p in percentiles)
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(
            f"intensity_percentiles must be (lower, upper) with 0 <= lower < upper <= 100, got {percentiles}."
        )
    x = image.float()
    per_slice = x.ndim == 4 and slice_axis is not None
    moved = x.movedim(slice_axis + 1, 1) if per_slice else x  # (C, S, h, w) per slice
    groups = moved.shape[:2] if per_slice else (moved.shape[0], 1)
    flat = moved.detach().reshape(*groups, -1).cpu().numpy()
    q = torch.as_tensor(np.percentile(flat, [lower, upper], axis=-1), dtype=x.dtype, device=x.device)  # (2, *groups)
    lo, hi = (v.reshape(*v.shape, *(1,) * (moved.ndim - v.ndim)) for v in q)
    scaled = ((moved - lo) / (hi - lo).clamp_min(1e-8)).clamp(0.0, 1.0)
    return scaled.movedim(1, slice_axis + 1) if per_slice else scaled


class ScalePercentilesd(MapTransform):
    """Dictionary version of :func:`scale_percentiles`, optionally with the percentiles of a slice's whole volume.

    Args:
        keys: image keys.
        percentiles: ``(lower, upper)`` percentiles (``intensity_percentiles`` in the configs).
        slice_axis: of :func:`scale_percentiles`.
        volumes: prepared 2D datalist items (``image`` a ``.npy`` slice ``(C, H, W)``, ``source`` its volume, as
            written by :func:`common.data.slices.write_samples`), or ``None`` (default: every image by its own
            percentiles). Given, a slice whose ``source`` has more than one slice among ``volumes`` is scaled by
            the percentiles of all those slices together (per channel), i.e. as the whole volume would be: an
            object-free slice keeps its low intensities instead of being stretched to [0, 1]. Images of a
            one-slice source (2D images) or without a source are scaled by their own percentiles, as before.
        source_key: the key naming the volume of an item.
    """

    def __init__(
        self,
        keys: KeysCollection,
        percentiles: Sequence[float] = (0.5, 99.5),
        slice_axis: int | None = None,
        volumes: Sequence[Mapping] | None = None,
        source_key: str = "source",
    ) -> None:
        super().__init__(keys)
        self.percentiles = tuple(percentiles)
        self.slice_axis = slice_axis
        self.source_key = source_key
        self._slices: dict[str, list[str]] = {}
        for item in volumes or ():
            if item.get(source_key) and str(item.get("image", "")).endswith(".npy"):
                paths = self._slices.setdefault(str(item[source_key]), [])
                if str(item["image"]) not in paths:
                    paths.append(str(item["image"]))
        self._bounds: dict[str, np.ndarray] = {}

    def volume_bounds(self, source: str) -> np.ndarray | None:
        """``(2, C)`` lower and upper percentiles over all slices of ``source``; ``None`` for a one-slice source."""
        paths = self._slices.get(str(source), [])
        if len(paths) < 2:
            return None
        if source not in self._bounds:
            stack = np.stack([np.load(path).astype(np.float32) for path in sorted(paths)], axis=1)  # (C, S, H, W)
            flat = stack.reshape(stack.shape[0], -1)
            self._bounds[source] = np.percentile(flat, list(self.percentiles), axis=-1)
        return self._bounds[source]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        bounds = self.volume_bounds(str(d[self.source_key])) if d.get(self.source_key) else None
        for key in self.key_iterator(d):
            if bounds is None:
                d[key] = scale_percentiles(d[key], self.percentiles, self.slice_axis)
                continue
            x = d[key].float()
            lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
            shape = (-1,) + (1,) * (x.ndim - 1)
            d[key] = ((x - lo.reshape(shape)) / (hi - lo).clamp_min(1e-8).reshape(shape)).clamp(0.0, 1.0)
        return d
