"""Weak and strong views of UniMatch (Yang et al., CVPR 2023), from MONAI transforms.

The authors' medical code (``more-scenarios/medical/dataset/acdc.py``, ``transform.py``):

- weak (labelled images and the unlabelled weak view): with probability 0.5 a rotation by k x 90 degrees
  (k uniform in 0-3) and a flip along a random axis; otherwise with probability 0.5 (0.25 in all) a rotation by up to
  +-20 degrees (nearest-neighbour, zero fill); otherwise nothing;
- strong (each of the two strong views, drawn independently from the weak view): with probability 0.8 a colour
  jitter (torchvision ``ColorJitter``: brightness and contrast factors uniform in 0.5-1.5; its saturation and hue do
  nothing to a grey image), then with probability 0.5 a Gaussian blur with sigma uniform in 0.1-2.0, then the CutMix
  box (:mod:`common.transforms.cutmix`).

Here: the rotations and flip are MONAI's ``RandRotate90d`` (probability 0.75 of k in 1-3, so k uniform in 0-3),
``RandAxisFlipd`` and ``RandRotated`` chosen by ``OneOf``; brightness is ``RandScaleIntensityd`` about the low end of
the intensity range (black, as torchvision scales about 0 of a [0, 1] image) and contrast
``RandScaleIntensityFixedMeand`` (about the image mean, as torchvision), both clipped back to the range as
torchvision clips; the blur is ``RandGaussianSmoothd`` (MONAI draws the two axes' sigmas independently; the authors'
blur is isotropic). The jitter applies brightness then contrast (torchvision shuffles their order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    Identityd,
    OneOf,
    RandAxisFlipd,
    RandGaussianSmoothd,
    RandRotate90d,
    RandRotated,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    ScaleIntensityRanged,
    ShiftIntensityd,
)

__all__ = ["strong_augmentation", "weak_augmentation"]


def weak_augmentation(
    keys: KeysCollection,
    rot90_flip_prob: float = 0.5,
    rotate_prob: float = 0.25,
    rotate_degrees: float = 20.0,
    mode: str | Sequence[str] = "nearest",
) -> OneOf:
    """UniMatch's weak view of ``(C, H, W)`` arrays ``keys`` (images and labels transformed alike).

    Args:
        keys: the arrays to transform together.
        rot90_flip_prob: probability of a k x 90 degree rotation (k uniform in 0-3) and a flip along a random axis.
        rotate_prob: probability of a rotation by an angle uniform in +-``rotate_degrees`` (authors: 0.5 x 0.5).
        rotate_degrees: largest angle of that rotation.
        mode: interpolation of the rotation per key (the authors use nearest for image and label).
    """
    if rot90_flip_prob + rotate_prob > 1.0:
        raise ValueError(f"rot90_flip_prob + rotate_prob must be at most 1, got {rot90_flip_prob + rotate_prob}.")
    rot90_flip = Compose([RandRotate90d(keys, prob=0.75, max_k=3), RandAxisFlipd(keys, prob=1.0)])
    rotate = RandRotated(
        keys, range_x=math.radians(rotate_degrees), prob=1.0, keep_size=True, mode=mode, padding_mode="zeros"
    )
    return OneOf(
        [rot90_flip, rotate, Identityd(keys)], weights=[rot90_flip_prob, rotate_prob, 1 - rot90_flip_prob - rotate_prob]
    )


def strong_augmentation(
    key: str,
    jitter_prob: float = 0.8,
    brightness: float = 0.5,
    contrast: float = 0.5,
    blur_prob: float = 0.5,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    intensity_range: Sequence[float] | None = (-1.0, 1.0),
) -> Compose:
    """UniMatch's strong view (without the CutMix paste) of the ``(C, H, W)`` image ``key``.

    Args:
        key: the image to transform (a copy of the weak view, e.g. ``"image_strong1"``).
        jitter_prob: probability of the brightness and contrast jitter.
        brightness: brightness factor range ``1 +- brightness`` (scaling about the low end of ``intensity_range``).
        contrast: contrast factor range ``1 +- contrast`` (scaling about the image mean).
        blur_prob: probability of the Gaussian blur.
        blur_sigma: range of the blur's sigma in pixels.
        intensity_range: the images' value range after normalisation (black first), to which the jitter clips;
            ``None``: brightness scales about 0 and nothing is clipped.
    """
    low = 0.0 if intensity_range is None else float(intensity_range[0])
    jitter: list = [
        ShiftIntensityd(key, offset=-low),
        RandScaleIntensityd(key, factors=brightness, prob=1.0),
        ShiftIntensityd(key, offset=low),
        RandScaleIntensityFixedMeand(key, factors=contrast, fixed_mean=True, prob=1.0),
    ]
    if intensity_range is not None:
        high = float(intensity_range[1])
        jitter.append(ScaleIntensityRanged(key, a_min=low, a_max=high, b_min=low, b_max=high, clip=True))
    return Compose(
        [
            OneOf([Compose(jitter), Identityd(key)], weights=[jitter_prob, 1.0 - jitter_prob]),
            RandGaussianSmoothd(key, sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma), prob=blur_prob),
        ]
    )
