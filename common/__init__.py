"""Shared code of the label-efficient segmentation bundles: data, transforms, networks, losses, engines, metrics."""

from common.console import log_once

__version__ = "0.1.0"

log_once()  # third-party messages logged on every call are shown once per process
