"""Per-image (or per-volume) intensity normalisation over a foreground mask.

Vorontsov et al. (MedIA 2022) normalise each BraTS volume as ``(v - mean) / (k * std)`` over the non-zero
voxels of all channels and clip to ``[-1, 1]`` (k = 5). The same transform serves the slice pipeline (applied
once per volume before slicing) and inference (applied to the whole input), so training and inference see the
same intensities.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform


class NormaliseOverForeground(Transform):
    """``(v - mean) / (k * std)`` with mean and std taken over a foreground mask, then optional clipping.

    Args:
        k: divisor of the standard deviation (5 in Vorontsov et al.).
        clip: ``(low, high)`` to clip to after normalisation, or ``None``.
        foreground_threshold: voxels whose value exceeds this in any channel form the foreground mask;
            ``None`` uses every voxel (plain z-score, for images without an empty background).
        eps: floor of the standard deviation, so constant images do not divide by zero.
    """

    def __init__(
        self,
        k: float = 5.0,
        clip: Sequence[float] | None = (-1.0, 1.0),
        foreground_threshold: float | None = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.k = k
        self.clip = tuple(clip) if clip is not None else None
        self.foreground_threshold = foreground_threshold
        self.eps = eps

    def __call__(
        self, img: torch.Tensor, mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalise ``img`` ``(C, *spatial)``; returns a float32 tensor of the same shape (a MetaTensor stays one).

        Args:
            img: the image.
            mask: boolean mask of the voxels whose mean and std are used, ``(C, *spatial)`` or ``(1, *spatial)``
                (e.g. the liver in LiTS, Vorontsov et al.); ``None``: the ``foreground_threshold`` rule.
            keep: boolean ``(1, *spatial)`` mask outside which the output is 0 (with ``mask`` given; without it, the
                thresholded foreground is kept).
        """
        data = torch.as_tensor(img, dtype=torch.float32)
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool).expand_as(data)
        elif self.foreground_threshold is None:
            mask = torch.ones_like(data, dtype=torch.bool)
        else:
            mask = (data > self.foreground_threshold).any(dim=0, keepdim=True).expand_as(data)
            keep = mask
        values = data[mask] if mask.any() else data.reshape(-1)
        mean, std = values.mean(), values.std(unbiased=False).clamp_min(self.eps)
        out = (data - mean) / (self.k * std)
        if keep is not None:
            out = torch.where(torch.as_tensor(keep, dtype=torch.bool).expand_as(out), out, torch.zeros_like(out))
        if self.clip is not None:
            out = out.clamp(self.clip[0], self.clip[1])
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
        return out


class NormaliseOverForegroundd(MapTransform):
    """Dictionary version of :class:`NormaliseOverForeground`."""

    def __init__(
        self,
        keys: KeysCollection,
        k: float = 5.0,
        clip: Sequence[float] | None = (-1.0, 1.0),
        foreground_threshold: float | None = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalise = NormaliseOverForeground(k=k, clip=clip, foreground_threshold=foreground_threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key])
        return d
