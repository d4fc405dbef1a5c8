"""metrics: per-image segmentation metrics (``segmentation``) and their report (``report``), reading reports back and
paired comparisons (``results``), the label-free ACWE energy (``acwe_energy``). The evaluator handler that writes
the report is :class:`common.handlers.SegmentationReportHandler`."""

from common.metrics.acwe_energy import ActiveContourEnergy
from common.metrics.report import SegmentationReport
from common.metrics.results import MetricsFile, PairedDifference, paired_difference, read_metrics
from common.metrics.segmentation import METRIC_NAMES, segmentation_metrics, soft_dice_accumulated

__all__ = [
    "ActiveContourEnergy",
    "METRIC_NAMES",
    "MetricsFile",
    "PairedDifference",
    "SegmentationReport",
    "paired_difference",
    "read_metrics",
    "segmentation_metrics",
    "soft_dice_accumulated",
]
