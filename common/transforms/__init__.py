"""MONAI-style transforms shared by the bundles."""

from .intensity import NormaliseOverForeground, NormaliseOverForegroundd
from .io import LoadImageLabeld
from .validation import ValidateImageLabeld, check_image, check_label, source_name

__all__ = [
    "LoadImageLabeld",
    "NormaliseOverForeground",
    "NormaliseOverForegroundd",
    "ValidateImageLabeld",
    "check_image",
    "check_label",
    "source_name",
]
