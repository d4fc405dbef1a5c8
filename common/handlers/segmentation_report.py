"""Ignite handler that builds a :class:`common.metrics.SegmentationReport` over each run of a MONAI evaluator."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from common.metrics.report import SegmentationReport
from common.metrics.segmentation import _plain

__all__ = ["SegmentationReportHandler"]

logger = logging.getLogger(__name__)


class SegmentationReportHandler:
    """Ignite handler that builds a :class:`SegmentationReport` over each run of a MONAI evaluator.

    ``engine.state.output`` must be the decollated list of per-image dicts that MONAI evaluators produce
    (``decollate=True``, the default), each with

    * ``item[pred_key]``: with ``argmax_pred=True`` ``(C, *spatial)`` probabilities/one-hot, argmax'ed over channels,
      or ``(1, *spatial)`` sigmoid foreground probability (binary tasks), thresholded at 0.5; with
      ``argmax_pred=False`` ``(1, *spatial)`` class indices or ``(C, *spatial)`` one-hot.
    * ``item[label_key]``: ``(1, *spatial)`` class indices or ``(C, *spatial)`` one-hot.
    * ``item[prob_key]`` (when ``prob_key`` is set): ``(C, *spatial)`` or, binary, ``(1, *spatial)`` probabilities
      for soft Dice. Post-transforms usually discretise ``pred``; keep the probabilities under another key first
      (e.g. ``CopyItemsd(keys="pred", names="prob")`` after the activation).
    * the image id: ``item[image_key].meta["filename_or_obj"]`` when that is a ``MetaTensor`` (else ``image_<i>``).

    Events: EPOCH_STARTED resets the report; ITERATION_COMPLETED adds the images; EPOCH_COMPLETED writes
    ``<output_dir>/<prefix>.json`` and ``.md``, logs the Markdown table and sets
    ``engine.state.metrics["report_<metric>"]`` to the summary mean over classes (plus
    ``report_soft_dice_accumulated`` with probabilities). Each rank of a distributed run only sees its own images;
    gather the reports yourself in that case.
    """

    def __init__(
        self,
        num_classes: int,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        prob_key: str | None = None,
        image_key: str = "image",
        prefix: str = "metrics",
        include_hd95: bool = False,
        argmax_pred: bool = True,
        ignore_empty: bool = False,
    ) -> None:
        self.report = SegmentationReport(num_classes, class_names, include_hd95, ignore_empty)
        self.num_classes = num_classes
        self.output_dir = Path(output_dir)
        self.pred_key, self.label_key, self.prob_key, self.image_key = pred_key, label_key, prob_key, image_key
        self.prefix = prefix
        self.argmax_pred = argmax_pred
        self.paths: tuple[Path, Path] | None = None

    def attach(self, engine: Engine) -> None:
        """Registers the handler's EPOCH_STARTED, ITERATION_COMPLETED and EPOCH_COMPLETED callbacks."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        """Resets the report."""
        self.report.reset()

    def _pred_indices(self, pred: torch.Tensor) -> torch.Tensor:
        """One item's ``(C, *spatial)`` / ``(1, *spatial)`` prediction -> ``(1, *spatial)`` class indices."""
        pred = _plain(pred)
        if pred.ndim < 2:
            raise ValueError(f"{self.pred_key!r} must be channel-first (C, *spatial), got shape {tuple(pred.shape)}.")
        if pred.shape[0] == 1:
            if self.num_classes != 2:
                raise ValueError(
                    f"single-channel {self.pred_key!r} {tuple(pred.shape)} with argmax_pred=True is read as a sigmoid "
                    f"probability, which needs num_classes=2 (got {self.num_classes}); use argmax_pred=False for "
                    "class indices."
                )
            return (pred > 0.5).long()
        return torch.argmax(pred, dim=0, keepdim=True)

    def _name(self, item: dict) -> str | None:
        """The image id from the meta data of ``item[image_key]``, or None."""
        image = item.get(self.image_key)
        if isinstance(image, MetaTensor):
            name = image.meta.get("filename_or_obj")
            if name is not None and name != "":
                return str(name)
        return None

    def iteration_completed(self, engine: Engine) -> None:
        """Adds the images of ``engine.state.output`` (list of per-image dicts) to the report."""
        output = engine.state.output
        if not isinstance(output, (list, tuple)):
            raise TypeError(
                f"SegmentationReportHandler expects a decollated engine output (list of per-image dicts), got "
                f"{type(output).__name__}; run the evaluator with decollate=True."
            )
        for item in output:
            pred = item[self.pred_key]
            pred = self._pred_indices(pred) if self.argmax_pred else _plain(pred)
            prob = item[self.prob_key][None] if self.prob_key is not None else None
            self.report.add(pred[None], item[self.label_key][None], prob, names=[self._name(item)])

    def epoch_completed(self, engine: Engine) -> None:
        """Writes the report files, logs the Markdown table and publishes the means in ``engine.state.metrics``."""
        if len(self.report) == 0:
            logger.warning("SegmentationReportHandler: no images were evaluated, nothing written.")
            return
        self.paths = self.report.write(self.output_dir, self.prefix)
        logger.info("Segmentation report (%s):\n%s", self.paths[0], self.report.to_markdown(title=self.prefix))
        for metric, entry in self.report.summary().items():
            engine.state.metrics[f"report_{metric}"] = entry["mean"]["mean"]
        accumulated = self.report.accumulated_soft_dice()
        if accumulated is not None:
            engine.state.metrics["report_soft_dice_accumulated"] = accumulated["mean"]
