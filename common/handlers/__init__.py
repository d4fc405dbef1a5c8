"""Ignite handlers shared by the bundles."""

from .panels import PanelSaver
from .resume import ResumableCheckpoint, epoch_checkpoints, latest_checkpoint
from .tensorboard import OptionalTensorBoardStatsHandler

__all__ = [
    "OptionalTensorBoardStatsHandler",
    "PanelSaver",
    "ResumableCheckpoint",
    "epoch_checkpoints",
    "latest_checkpoint",
]
