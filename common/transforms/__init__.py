"""MONAI-style transforms shared by the bundles."""

from .cutmix import RandCutMixBoxd, cutmix
from .intensity import NormaliseOverForeground, NormaliseOverForegroundd
from .io import LoadImageLabeld
from .missing_label import MISSING_LABEL, AddMissingLabeld
from .percentiles import ScalePercentilesd, scale_percentiles
from .pseudo_label_cleaning import CleanPseudoLabel
from .slice_occupancy import SliceOccupancyd, slice_occupancy
from .translation_augment import RandSplineWarpd, translation_augmentation
from .unimatch_augment import strong_augmentation, weak_augmentation
from .validation import ValidateImageLabeld, check_image, check_label, source_name

__all__ = [
    "MISSING_LABEL",
    "AddMissingLabeld",
    "CleanPseudoLabel",
    "LoadImageLabeld",
    "NormaliseOverForeground",
    "NormaliseOverForegroundd",
    "RandCutMixBoxd",
    "RandSplineWarpd",
    "ScalePercentilesd",
    "SliceOccupancyd",
    "ValidateImageLabeld",
    "check_image",
    "check_label",
    "cutmix",
    "scale_percentiles",
    "slice_occupancy",
    "source_name",
    "strong_augmentation",
    "translation_augmentation",
    "weak_augmentation",
]
