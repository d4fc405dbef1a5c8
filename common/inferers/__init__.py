"""Inferers shared by the bundles."""

from .autocast import AutocastInferer, cpu_bf16_supported
from .resized import ResizedInferer
from .slice_or_image import SliceOrImageInferer

__all__ = ["AutocastInferer", "ResizedInferer", "SliceOrImageInferer", "cpu_bf16_supported"]
