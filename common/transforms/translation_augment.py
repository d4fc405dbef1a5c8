"""Training augmentation of Vorontsov et al. (MedIA 2022) for the real data sets (BraTS, LiTS).

The authors' settings (``brats_segmentation.py`` / ``lits_segmentation.py`` of their code): rotation up to 3 degrees,
zoom +-10 %, additive intensity shift +-0.1, horizontal and vertical flips, a smooth spline warp from random
control-point displacements (normal, std 5 px, 3 x 3 control points over the image), reflect fill. Flips, rotation
and zoom, and the intensity shift are MONAI's ``RandFlipd``, ``RandAffined`` and ``RandShiftIntensityd``. The warp is
:class:`RandSplineWarpd` on MONAI's ``Resample``: MONAI's ``Rand2DElasticd`` is not the identity at zero magnitude
when its control points are as far apart as here (with spacing = half the image it scales a square's area by 1.37,
measured with MONAI 1.6), so it cannot express a 3 x 3 grid.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    MapTransform,
    RandAffined,
    RandFlipd,
    RandomizableTransform,
    RandShiftIntensityd,
    Resample,
)
from monai.transforms.utils import create_grid
from monai.utils import ensure_tuple_rep


class RandSplineWarpd(RandomizableTransform, MapTransform):
    """Smooth random warp of 2D ``(C, H, W)`` arrays: displacements drawn from N(0, ``std``^2) pixels at
    ``grid_size`` x ``grid_size`` control points spanning the image (corners included), interpolated bicubically
    through them to a dense field, and every key resampled with the same field.

    Args:
        keys: keys of the arrays to warp (all of the same ``H, W``).
        std: standard deviation of the control-point displacements, in pixels.
        grid_size: control points per axis (at least 2).
        mode: interpolation per key (``"bilinear"`` for images, ``"nearest"`` for masks).
        padding_mode: how samples outside the image are filled (``"reflection"``: reflect fill).
        prob: probability of warping.
    """

    def __init__(
        self,
        keys: KeysCollection,
        std: float = 5.0,
        grid_size: int = 3,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str = "reflection",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if grid_size < 2:
            raise ValueError(f"grid_size must be at least 2 control points per axis, got {grid_size}")
        self.std = std
        self.grid_size = grid_size
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = padding_mode
        self._offsets = np.zeros((2, grid_size, grid_size), np.float32)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._offsets = self.R.normal(0.0, self.std, size=(2, self.grid_size, self.grid_size)).astype(np.float32)

    def displacement(self, height: int, width: int) -> torch.Tensor:
        """The dense ``(2, H, W)`` displacement field of the current draw, in pixels."""
        offsets = torch.as_tensor(self._offsets)[None]
        return F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True)[0]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        height, width = d[self.first_key(d)].shape[-2:]
        grid = create_grid((height, width), backend="torch")  # (3, H, W) homogeneous pixel coordinates
        grid[:2] += self.displacement(height, width)
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = Resample(mode=mode, padding_mode=self.padding_mode)(d[key], grid=grid)
        return d


def translation_augmentation(
    image_keys: Sequence[str] = ("image",),
    label_keys: Sequence[str] = (),
    rotation_degrees: float = 3.0,
    zoom: float = 0.1,
    intensity_shift: float = 0.1,
    flips: bool = True,
    warp_std: float = 5.0,
    warp_grid_size: int = 3,
) -> list[MapTransform]:
    """The random transforms, in order, for ``(C, H, W)`` images (bilinear) and masks (nearest) of one item.

    Args:
        image_keys: keys of the images (interpolated bilinearly, shifted in intensity).
        label_keys: keys of the masks (same geometric transforms, nearest neighbour, no shift).
        rotation_degrees: rotation drawn uniformly in +-this many degrees (3).
        zoom: scale drawn uniformly in 1 +- ``zoom`` per axis (0.1).
        intensity_shift: offset drawn uniformly in +-this, added to the whole image (0.1; images in [-1, 1]).
        flips: flip each axis with probability 0.5.
        warp_std: standard deviation of the warp's control-point displacements in pixels (5; 0 turns it off).
        warp_grid_size: the warp's control points per axis over the image (3).
    """
    keys = [*image_keys, *label_keys]
    modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(label_keys)
    transforms: list[MapTransform] = []
    if flips:
        transforms += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in (0, 1)]
    transforms.append(
        RandAffined(
            keys,
            prob=1.0,
            rotate_range=math.radians(rotation_degrees),
            scale_range=(zoom, zoom),
            mode=modes,
            padding_mode="reflection",
        )
    )
    if warp_std > 0:
        transforms.append(RandSplineWarpd(keys, warp_std, warp_grid_size, modes, "reflection"))
    transforms.append(RandShiftIntensityd(list(image_keys), offsets=intensity_shift, prob=1.0))
    return transforms
