"""Ignite handlers shared by the bundles."""

from .nonfinite import StopOnNonFiniteLoss
from .panels import PanelSaver
from .resume import ResumableCheckpoint, epoch_checkpoints, latest_checkpoint
from .tensorboard import OptionalTensorBoardStatsHandler

__all__ = [
    "OptionalTensorBoardStatsHandler",
    "PanelSaver",
    "StopOnNonFiniteLoss",
    "ResumableCheckpoint",
    "epoch_checkpoints",
    "latest_checkpoint",
]
