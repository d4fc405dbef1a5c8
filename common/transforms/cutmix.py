"""CutMix boxes of UniMatch's strong views (Yang et al., CVPR 2023; CutMix: Yun et al., ICCV 2019).

UniMatch draws, per unlabelled image and strong view, a CutMix box (with probability 0.5; area 2-40 % of the image,
aspect ratio 0.3-1/0.3, anywhere it fits) in the data pipeline, and pastes the box of another unlabelled image into
the strong view in the training step, where that image's weak prediction (its pseudo-label and confidence) also fills
the box of the view's target. MONAI's ``CutMixd`` mixes the images of one batch with one box for all of them and mixes
labels as class proportions, not per pixel, so the box is this transform (:class:`RandCutMixBoxd`) and the paste is
:func:`cutmix`, which puts the same box into the image, the pseudo-label and the confidence map.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandCutMixBoxd", "cutmix", "cutmix_box"]


def cutmix_box(
    rng: np.random.RandomState,
    spatial_size: Sequence[int],
    prob: float = 0.5,
    area: Sequence[float] = (0.02, 0.4),
    aspect_ratio: Sequence[float] = (0.3, 1 / 0.3),
    max_tries: int = 1000,
) -> torch.Tensor:
    """A random box mask, ``(1, H, W)`` bool, empty with probability ``1 - prob``.

    The box's area is ``U(area) * H * W``; its aspect ratio (height / width) ``U(aspect_ratio)``; its corner uniform
    over the image, drawn again (ratio and corner) until the box fits, as in the authors' code.
    """
    height, width = (int(s) for s in spatial_size)
    mask = torch.zeros((1, height, width), dtype=torch.bool)
    if rng.uniform() >= prob:
        return mask
    size = rng.uniform(*area) * height * width
    for _ in range(max_tries):
        ratio = rng.uniform(*aspect_ratio)
        box_w, box_h = int(math.sqrt(size / ratio)), int(math.sqrt(size * ratio))
        x, y = rng.randint(0, width), rng.randint(0, height)
        if x + box_w <= width and y + box_h <= height:
            break
    else:  # not reached for sane ranges; keep the last draw, cut to the image
        box_w, box_h = min(box_w, width - x), min(box_h, height - y)
    mask[:, y : y + box_h, x : x + box_w] = True
    return mask


class RandCutMixBoxd(Randomizable, MapTransform):
    """Add one CutMix box mask per key: ``(1, H, W)`` bool over the spatial size of ``reference_key``.

    Each key gets its own draw (UniMatch: one box per strong view). See :func:`cutmix_box` for the box.

    Args:
        keys: names of the box masks to add (e.g. ``["cutmix_box1", "cutmix_box2"]``).
        reference_key: the ``(C, H, W)`` image whose size the boxes take.
        prob: probability that a box is drawn (else the mask is empty; UniMatch: 0.5).
        area: range of the box's share of the image area (UniMatch: 0.02-0.4).
        aspect_ratio: range of the box's height / width (UniMatch: 0.3-1/0.3).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "image",
        prob: float = 0.5,
        area: Sequence[float] = (0.02, 0.4),
        aspect_ratio: Sequence[float] = (0.3, 1 / 0.3),
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        if not (0.0 < area[0] <= area[1] <= 1.0):
            raise ValueError(f"area must be a range within (0, 1], got {tuple(area)}.")
        if not (0.0 < aspect_ratio[0] <= aspect_ratio[1]):
            raise ValueError(f"aspect_ratio must be a positive range, got {tuple(aspect_ratio)}.")
        self.reference_key = reference_key
        self.prob = prob
        self.area = tuple(area)
        self.aspect_ratio = tuple(aspect_ratio)

    def randomize(self, data: Sequence[int]) -> torch.Tensor:  # type: ignore[override]
        """A box mask over the spatial size ``data`` ``(H, W)``."""
        return cutmix_box(self.R, data, self.prob, self.area, self.aspect_ratio)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        spatial_size = tuple(d[self.reference_key].shape[1:])
        if len(spatial_size) != 2:
            raise ValueError(
                f"{self.reference_key} must be a 2D (C, H, W) image, got shape {tuple(d[self.reference_key].shape)}."
            )
        for key in self.keys:
            d[key] = self.randomize(spatial_size)
        return d


def cutmix(box: torch.Tensor, *pairs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Paste, inside ``box``, each pair's ``source`` into its ``target``: the same box for images and targets.

    Args:
        box: ``(B, 1, H, W)`` (or ``(B, H, W)``) bool masks, one box per batch item.
        pairs: ``(target, source)`` tensors of one shape, ``(B, C, H, W)`` (images, probabilities) or ``(B, H, W)``
            (pseudo-labels, confidences).

    Returns:
        One tensor per pair: ``source`` inside the box, ``target`` outside (new tensors; the inputs are unchanged).
    """
    box = box.bool()
    if box.ndim == 3:
        box = box[:, None]
    mixed = []
    for target, source in pairs:
        if target.shape != source.shape:
            raise ValueError(f"target {tuple(target.shape)} and source {tuple(source.shape)} differ in shape.")
        mask = box if target.ndim == 4 else box[:, 0]
        mixed.append(torch.where(mask, source, target))
    return tuple(mixed)
