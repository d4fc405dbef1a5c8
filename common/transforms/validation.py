"""Checks of loaded image/label pairs that turn bad input into errors naming the file and what was expected."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

logger = logging.getLogger(__name__)
_told_binary_255 = False
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # grey, RGB or RGBA pictures
NO_GEOMETRY_SUFFIXES = (".npy", *PICTURE_SUFFIXES)  # formats without a position in the world
GRID_TOLERANCE_VOXELS = 0.1  # image and label grids may differ by this share of a voxel (header rounding)


def source_name(data: torch.Tensor) -> str:
    """The file a loaded (Meta)tensor came from, or ``"<in-memory array>"``."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in-memory array>"))


def check_image(image: torch.Tensor, num_channels: int | None = None, name: str | None = None) -> None:
    """Raise ``ValueError`` if ``image`` (C, *spatial) has the wrong channel count or holds NaN/Inf.

    Images are never converted: an RGB or RGBA image given to a one-channel bundle (or a grey or RGBA one to an RGB
    bundle) is refused with a message that says how to convert it and which ``num_channels`` would take it as it is.
    """
    name = name or source_name(image)
    channels = image.shape[0]
    if num_channels is not None and channels != num_channels:
        hint = f"give images with {num_channels} channel(s) or use a bundle trained with num_channels {channels}"
        picture = name.lower().endswith(PICTURE_SUFFIXES)  # a 4-channel NIfTI is 4 modalities, not RGBA
        if picture and num_channels == 1 and channels in (3, 4):
            hint = (
                f"an {'RGB' if channels == 3 else 'RGBA'} image given to a one-channel (grey) bundle; convert it to "
                f"grey (e.g. PIL Image.convert('L')) or use a bundle trained with num_channels {channels}"
            )
        elif picture and num_channels == 3 and channels in (1, 4):
            hint = (
                f"{'a grey' if channels == 1 else 'an RGBA'} image given to an RGB bundle; convert it to RGB (e.g. PIL "
                f"Image.convert('RGB')) or use a bundle trained with num_channels {channels}"
            )
        raise ValueError(
            f"{name}: expected {num_channels} channel(s), got {channels} (image shape {tuple(image.shape)}): {hint}."
        )
    if image.is_floating_point() and not torch.isfinite(image).all():
        nan, inf = int(torch.isnan(image).sum()), int(torch.isinf(image).sum())
        raise ValueError(
            f"{name}: image holds {nan + inf} NaN/Inf value(s) ({nan} NaN, {inf} Inf); expected finite intensities "
            "(replace or mask them before running the bundle)."
        )


def check_label(label: torch.Tensor, image: torch.Tensor, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` if ``label`` (1, *spatial) does not match ``image`` or holds values that are not class
    indices: a different spatial shape, or an equal shape on a different grid in the world (affine; checked when both
    files carry one, as NIfTI, NRRD, MHA and DICOM do), several channels (an RGB mask), non-integer or negative values,
    or values of ``num_classes`` and above."""
    name = source_name(label)
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"{name}: label spatial shape {tuple(label.shape[1:])} does not match image {source_name(image)} "
            f"spatial shape {tuple(image.shape[1:])}."
        )
    apart = grid_distance_mm(label, image)
    if apart is not None and apart[0] > GRID_TOLERANCE_VOXELS * apart[1]:
        raise ValueError(
            f"{name}: label has the shape of image {source_name(image)} but lies elsewhere in the world (a different "
            f"affine: voxels up to {apart[0]:.3g} mm apart; label affine {_affine_text(label)}, image affine "
            f"{_affine_text(image)}); expected the image's grid: resample the label onto the image (e.g. MONAI "
            "ResampleToMatch, nearest) or fix its header."
        )
    if label.shape[0] != 1:
        raise ValueError(
            f"{name}: expected a single-channel class map, got {label.shape[0]} channels (an RGB/RGBA mask?); save "
            "the label as one channel of class indices (grey or palette PNG, or NIfTI)."
        )
    if label.is_floating_point() and not torch.isfinite(label).all():
        raise ValueError(f"{name}: label holds NaN/Inf value(s); expected class indices (non-negative integers).")
    values = torch.unique(label).tolist()
    upper = num_classes if num_classes is not None else float("inf")
    bad = [v for v in values if v != int(v) or not 0 <= v < upper]
    if bad:
        bad = [int(v) if v == int(v) else v for v in bad]
        expected = f"in [0, {num_classes - 1}]" if num_classes is not None else "(non-negative integers)"
        raise ValueError(f"{name}: label values {bad[:5]} are not class indices {expected}.")


def _affine(data: torch.Tensor) -> np.ndarray | None:
    """The affine of a loaded MetaTensor whose file format carries a world position, else ``None``."""
    meta = getattr(data, "meta", None) or {}
    affine = meta.get("affine")
    if affine is None or source_name(data).lower().endswith(NO_GEOMETRY_SUFFIXES):
        return None
    return np.asarray(affine, dtype=np.float64)


def _affine_text(data: torch.Tensor) -> str:
    return np.array2string(_affine(data), precision=3, suppress_small=True, separator=",").replace("\n", "")


def grid_distance_mm(label: torch.Tensor, image: torch.Tensor) -> tuple[float, float] | None:
    """How far apart (mm) the corners of two equal-shape grids lie in the world, and the image's smallest voxel
    spacing (mm); ``None`` when either has no world position (PNG, JPEG, TIFF, ``.npy``, plain tensors)."""
    label_affine, image_affine = _affine(label), _affine(image)
    if label_affine is None or image_affine is None or label_affine.shape != image_affine.shape:
        return None
    dims = image_affine.shape[0] - 1
    shape = list(image.shape[1:])[:dims] + [1] * max(dims - (image.ndim - 1), 0)
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)
    corners = np.concatenate([corners, np.ones((len(corners), 1))], axis=1)
    apart = np.linalg.norm((corners @ (label_affine - image_affine).T)[:, :dims], axis=1).max()
    spacing = np.linalg.norm(image_affine[:dims, :dims], axis=0).min()
    return float(apart), float(max(spacing, 1e-6))


def binary_255_to_indices(label: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """A binary mask saved as 0/255 (the usual 8-bit PNG mask, e.g. ISIC) as class indices 0/1 when the task is binary
    (``num_classes`` 2); any other label is returned unchanged (and :func:`check_label` judges it). The first
    conversion in a process is logged once, naming the file.

    Args:
        label: ``(1, *spatial)`` label as loaded.
        num_classes: classes including the background, or ``None`` (then nothing is converted).
    """
    global _told_binary_255
    if num_classes != 2:
        return label
    values = set(torch.unique(label).tolist())
    if 255 not in values or not values <= {0, 255}:
        return label
    if not _told_binary_255:
        logger.info(f"{source_name(label)}: label values 0/255 read as classes 0/1 (binary masks; said once)")
        _told_binary_255 = True
    return (label > 0).to(label.dtype)


class ValidateImageLabeld(MapTransform):
    """Validate a loaded pair: channel count, finite intensities, label shape and class values.

    Args:
        keys: ``(image_key, label_key)``; the label key may be missing in a sample (unlabelled data).
        num_channels: expected image channels, or ``None`` to accept any.
        num_classes: number of classes including background, or ``None`` to skip the value check.
    """

    def __init__(
        self,
        keys: tuple[str, str] = ("image", "label"),
        num_channels: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.label_key = keys
        self.num_channels = num_channels
        self.num_classes = num_classes

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        image = data[self.image_key]
        check_image(image, self.num_channels)
        if self.label_key in data:
            check_label(data[self.label_key], image, self.num_classes)
        return data
