"""Ignite handlers shared by the bundles."""

from .af_seg_panel import save_pipeline_panel
from .atomic_checkpoint import AtomicCheckpointSaver, AtomicDiskSaver
from .final_model import FinalModelSaver
from .foreground_phase import ForegroundPhaseHandler
from .nonfinite import StopOnNonFiniteLoss
from .panels import PanelSaver
from .pseudo_label_quality import PseudoLabelQualityHandler
from .resume import ResumableCheckpoint, epoch_checkpoints, latest_checkpoint
from .segmentation_report import SegmentationReportHandler
from .tensorboard import OptionalTensorBoardStatsHandler
from .translation_panel import TranslationPanelSaver

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "FinalModelSaver",
    "ForegroundPhaseHandler",
    "OptionalTensorBoardStatsHandler",
    "PanelSaver",
    "PseudoLabelQualityHandler",
    "StopOnNonFiniteLoss",
    "TranslationPanelSaver",
    "ResumableCheckpoint",
    "SegmentationReportHandler",
    "epoch_checkpoints",
    "latest_checkpoint",
    "save_pipeline_panel",
]
