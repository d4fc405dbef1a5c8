"""Inferers shared by the bundles."""

from .slice_or_image import SliceOrImageInferer

__all__ = ["SliceOrImageInferer"]
