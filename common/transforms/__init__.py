"""MONAI-style transforms shared by the bundles."""

from .intensity import NormaliseOverForeground, NormaliseOverForegroundd
from .io import LoadImageLabeld
from .missing_label import MISSING_LABEL, AddMissingLabeld
from .percentiles import ScalePercentilesd, scale_percentiles
from .pseudo_label_cleaning import CleanPseudoLabel
from .translation_augment import RandSplineWarpd, translation_augmentation
from .validation import ValidateImageLabeld, check_image, check_label, source_name

__all__ = [
    "MISSING_LABEL",
    "AddMissingLabeld",
    "CleanPseudoLabel",
    "LoadImageLabeld",
    "NormaliseOverForeground",
    "NormaliseOverForegroundd",
    "RandSplineWarpd",
    "ScalePercentilesd",
    "ValidateImageLabeld",
    "check_image",
    "check_label",
    "scale_percentiles",
    "source_name",
    "translation_augmentation",
]
