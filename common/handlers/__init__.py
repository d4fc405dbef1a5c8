"""Ignite handlers shared by the bundles."""

from .atomic_checkpoint import AtomicCheckpointSaver, AtomicDiskSaver
from .foreground_phase import ForegroundPhaseHandler
from .nonfinite import StopOnNonFiniteLoss
from .panels import PanelSaver
from .resume import ResumableCheckpoint, epoch_checkpoints, latest_checkpoint
from .tensorboard import OptionalTensorBoardStatsHandler

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "ForegroundPhaseHandler",
    "OptionalTensorBoardStatsHandler",
    "PanelSaver",
    "StopOnNonFiniteLoss",
    "ResumableCheckpoint",
    "epoch_checkpoints",
    "latest_checkpoint",
]
