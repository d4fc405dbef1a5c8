"""MONAI-style transforms shared by the bundles."""

from .intensity import NormaliseOverForeground, NormaliseOverForegroundd
from .io import LoadImageLabeld
from .translation_augment import RandSplineWarpd, translation_augmentation
from .validation import ValidateImageLabeld, check_image, check_label, source_name

__all__ = [
    "LoadImageLabeld",
    "NormaliseOverForeground",
    "NormaliseOverForegroundd",
    "RandSplineWarpd",
    "ValidateImageLabeld",
    "check_image",
    "check_label",
    "source_name",
    "translation_augmentation",
]
