"""metrics: per-image segmentation metrics and their report (``segmentation``), reading reports back and paired
comparisons (``results``), the label-free ACWE energy (``acwe_energy``)."""

from common.metrics.acwe_energy import ActiveContourEnergy
from common.metrics.results import MetricsFile, PairedDifference, paired_difference, read_metrics
from common.metrics.segmentation import (
    METRIC_NAMES,
    SegmentationReport,
    SegmentationReportHandler,
    segmentation_metrics,
    soft_dice_accumulated,
)

__all__ = [
    "ActiveContourEnergy",
    "METRIC_NAMES",
    "MetricsFile",
    "PairedDifference",
    "SegmentationReport",
    "SegmentationReportHandler",
    "paired_difference",
    "read_metrics",
    "segmentation_metrics",
    "soft_dice_accumulated",
]
