"""Checks of loaded image/label pairs that turn bad input into errors naming the file and what was expected."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import torch
from monai.transforms import MapTransform

logger = logging.getLogger(__name__)
_told_binary_255 = False


def source_name(data: torch.Tensor) -> str:
    """The file a loaded (Meta)tensor came from, or ``"<in-memory array>"``."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in-memory array>"))


def check_image(image: torch.Tensor, num_channels: int | None = None, name: str | None = None) -> None:
    """Raise ``ValueError`` if ``image`` (C, *spatial) has the wrong channel count or holds NaN/Inf."""
    name = name or source_name(image)
    if num_channels is not None and image.shape[0] != num_channels:
        raise ValueError(
            f"{name}: expected {num_channels} channel(s), got {image.shape[0]} (image shape {tuple(image.shape)})."
        )
    if image.is_floating_point() and not torch.isfinite(image).all():
        count = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name}: image holds {count} NaN/Inf value(s); expected finite intensities.")


def check_label(label: torch.Tensor, image: torch.Tensor, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` if ``label`` (1, *spatial) does not match ``image`` or holds unknown class values."""
    name = source_name(label)
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"{name}: label spatial shape {tuple(label.shape[1:])} does not match image {source_name(image)} "
            f"spatial shape {tuple(image.shape[1:])}."
        )
    if label.shape[0] != 1:
        raise ValueError(f"{name}: expected a single-channel class map, got {label.shape[0]} channels.")
    if num_classes is not None:
        values = torch.unique(label)
        bad = [v for v in values.tolist() if v != int(v) or not 0 <= v < num_classes]
        bad = [int(v) if v == int(v) else v for v in bad]
        if bad:
            raise ValueError(f"{name}: label values {bad[:5]} are not class indices in [0, {num_classes - 1}].")


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
