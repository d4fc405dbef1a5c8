"""Shared code of the label-efficient segmentation bundles: data, transforms, networks, losses, engines, metrics."""

__version__ = "0.1.0"
