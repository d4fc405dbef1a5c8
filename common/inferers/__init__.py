"""Inferers shared by the bundles."""

from .resized import ResizedInferer
from .slice_or_image import SliceOrImageInferer

__all__ = ["ResizedInferer", "SliceOrImageInferer"]
