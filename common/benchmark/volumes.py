"""Dice per test volume on 3D data: the unit every row of a volume task is scored on.

The bundles train and evaluate on the 2D slices of the slice pipeline (:func:`common.data.prepare_datalists`): their
``evaluate.json`` reports one entry per test *slice* (``<index>_<stem>_<slice>_image.npy``). A slice where the truth
is empty and a method marks a single voxel scores 0 there, as much as a slice it fills with false positives, so a
mean over slices and a mean over volumes can rank two methods differently (on the ``sparse_stack`` task a few stray
voxels of one Otsu threshold per volume, in object-free slices, cost it far more over slices than over volumes). On
3D data the benchmark therefore scores every row per test volume, a test case as the labelled amounts count them:

* :class:`VolumeReport` restacks a volume's slice class maps (consecutive, in slice order) and scores the volume as
  one image with :class:`common.metrics.SegmentationReport`, so a volume's Dice is ``2 |P & T| / (|P| + |T|)`` over
  all its voxels;
* :class:`VolumeReportHandler` is the bundles' report handler that also writes ``volumes.json`` and ``volumes.md``
  beside ``metrics.json``; :func:`report_per_volume` puts it in place of the ``SegmentationReportHandler`` of a
  bundle's evaluation workflow before it is initialised (same arguments, nothing else changed);
* the classical arms hand their slice masks to a :class:`VolumeReport` (:func:`slice_observer`, the ``on_slice`` of
  :func:`common.classical.baselines.report_on_items` and ``report_on_volumes``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from common.handlers.segmentation_report import SegmentationReportHandler
from common.metrics.report import SegmentationReport
from common.metrics.segmentation import _plain

__all__ = ["VOLUME_PREFIX", "VolumeReport", "VolumeReportHandler", "report_per_volume", "slice_observer", "volume_of"]

VOLUME_PREFIX = "volumes"  # <eval_dir>/volumes.json and volumes.md
_SLICE_NAME = re.compile(r"^(?P<volume>.+)_(?P<slice>\d{4,})_image\.npy$")
_REPORT_TARGETS = (
    "common.handlers.SegmentationReportHandler",
    "common.handlers.segmentation_report.SegmentationReportHandler",
)


def volume_of(name: str) -> tuple[str, int]:
    """The volume id and slice index of a prepared slice file, ``<index>_<stem>_<slice>_image.npy`` as
    :func:`common.data.slices.write_samples` names them (``"0001_stack_008_0012_image.npy"`` -> ``("0001_stack_008",
    12)``); any other name is a volume of its own, slice 0."""
    base = Path(name).name
    match = _SLICE_NAME.match(base)
    return (match["volume"], int(match["slice"])) if match else (base, 0)


def _indices(x: Any) -> torch.Tensor:
    """``(1, H, W)`` class indices or ``(C, H, W)`` per-class maps (argmax over channels) -> ``(1, H, W)`` uint8."""
    x = _plain(torch.as_tensor(x))
    if x.ndim != 3:
        raise ValueError(f"expected a (C, H, W) slice, got shape {tuple(x.shape)}.")
    if x.shape[0] > 1:
        x = torch.argmax(x, dim=0, keepdim=True)
    return torch.round(x.float()).to(torch.uint8) if x.is_floating_point() else x.to(torch.uint8)


class VolumeReport:
    """Metrics per volume from the class maps of its slices.

    Slices are added in the order an evaluation sees them; those of one volume (:func:`volume_of`) must come one after
    another (the slice pipeline lists a volume's slices together). When the volume changes, the previous one's slices
    are stacked in slice order along a last axis, ``(1, H, W, S)``, and added to :attr:`report` as one image named by
    the volume (slices the pipeline dropped are missing from it, for every method alike).

    Args:
        num_classes, class_names: of :class:`common.metrics.SegmentationReport`.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if num_classes > 256:
            raise ValueError(f"VolumeReport keeps class maps as uint8; got num_classes={num_classes}.")
        self.report = SegmentationReport(num_classes, class_names)
        self._volume: str | None = None
        self._slices: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._done: set[str] = set()

    def add_slice(self, name: str, pred: Any, label: Any) -> None:
        """Add one slice: ``name`` its file, ``pred`` and ``label`` ``(1, H, W)`` class indices (or ``(C, H, W)``
        per-class maps)."""
        if not name:
            raise ValueError("a slice without a name cannot be placed in its volume.")
        volume, index = volume_of(name)
        if volume != self._volume:
            self._flush()
            if volume in self._done:
                raise ValueError(f"the slices of volume {volume} do not come one after another ({name}).")
            self._volume = volume
        if index in self._slices:
            raise ValueError(f"slice {index} of volume {volume} was added twice ({name}).")
        self._slices[index] = (_indices(pred), _indices(label))

    def _flush(self) -> None:
        if self._slices:
            order = sorted(self._slices)
            pred = torch.stack([self._slices[k][0] for k in order], dim=-1)  # (1, H, W, S)
            label = torch.stack([self._slices[k][1] for k in order], dim=-1)
            self.report.add(pred[None], label[None], names=[self._volume])
            self._done.add(str(self._volume))
        self._volume, self._slices = None, {}

    def finish(self) -> SegmentationReport:
        """Score the last volume and return the report (one image per volume)."""
        self._flush()
        return self.report


class VolumeReportHandler(SegmentationReportHandler):
    """:class:`common.handlers.SegmentationReportHandler` (its per-slice ``metrics.json``, unchanged) that also writes
    the metrics per test volume, ``<output_dir>/volumes.json`` and ``.md`` (:class:`VolumeReport`).

    Args:
        args, kwargs: those of :class:`~common.handlers.SegmentationReportHandler`.
        volume_prefix: file name of the per-volume report.
    """

    def __init__(self, *args: Any, volume_prefix: str = VOLUME_PREFIX, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.volume_prefix = volume_prefix
        self.volumes = VolumeReport(self.num_classes, self.report.class_names)

    def epoch_started(self, engine: Engine) -> None:
        super().epoch_started(engine)
        self.volumes = VolumeReport(self.num_classes, self.report.class_names)

    def iteration_completed(self, engine: Engine) -> None:
        super().iteration_completed(engine)
        for item in engine.state.output:
            pred = item[self.pred_key]
            pred = self._pred_indices(pred) if self.argmax_pred else _plain(pred)
            self.volumes.add_slice(self._name(item) or "", pred, item[self.label_key])

    def epoch_completed(self, engine: Engine) -> None:
        super().epoch_completed(engine)
        report = self.volumes.finish()
        if len(report):
            report.write(self.output_dir, self.volume_prefix)


def report_per_volume(workflow: Any) -> None:
    """Make a bundle's evaluation workflow (a ``monai.bundle.ConfigWorkflow`` of ``evaluate.json``, not yet
    initialised) also write its metrics per test volume: the ``SegmentationReportHandler`` of ``validate#handlers``
    becomes a :class:`VolumeReportHandler` with the same arguments.

    Raises:
        ValueError: when ``validate#handlers`` holds no ``SegmentationReportHandler``.
    """
    handlers = workflow.parser["validate#handlers"]
    for i, handler in enumerate(handlers):
        if isinstance(handler, dict) and handler.get("_target_") in _REPORT_TARGETS:
            workflow.parser[f"validate#handlers#{i}#_target_"] = f"{__name__}.VolumeReportHandler"
            return
    targets = [h.get("_target_") for h in handlers if isinstance(h, dict)]
    raise ValueError(f"validate#handlers holds no SegmentationReportHandler to report per volume (got {targets}).")


def slice_observer(report: VolumeReport) -> Any:
    """``on_slice`` of :func:`common.classical.baselines.report_on_items` / ``report_on_volumes``: ``(item, pred
    (H, W), label (1, H, W)) -> None``, adding the slice to ``report``."""

    def on_slice(item: dict, pred: np.ndarray, label: np.ndarray) -> None:
        report.add_slice(str(item["image"]), np.asarray(pred)[None], label)

    return on_slice
