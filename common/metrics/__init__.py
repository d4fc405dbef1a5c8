"""metrics"""

from common.metrics.segmentation import (
    METRIC_NAMES,
    SegmentationReport,
    SegmentationReportHandler,
    segmentation_metrics,
    soft_dice_accumulated,
)

__all__ = [
    "METRIC_NAMES",
    "SegmentationReport",
    "SegmentationReportHandler",
    "segmentation_metrics",
    "soft_dice_accumulated",
]
