"""Segmentation evaluation shared by all bundles: per-image metrics, summaries, JSON/Markdown reports, ignite handler.

Overlap and confusion-matrix metrics come from MONAI (``DiceMetric``, ``MeanIoU``, ``ConfusionMatrixMetric`` with
``compute_sample=True``, ``HausdorffDistanceMetric(percentile=95)``); only the soft Dice on probabilities is computed
here. Every metric is reported per image and per foreground class (the background class 0 is excluded), so a binary
task (``num_classes=2``) has a single column.

Input forms (``B`` images, ``C = num_classes`` channels, ``*spatial`` of any dimensionality):

* ``pred`` / ``label``: ``(B, 1, *spatial)`` integer class indices in ``[0, C)``, or ``(B, C, *spatial)`` per-class
  maps. A ``C``-channel map is reduced with an argmax over channels, which leaves a one-hot map unchanged (and turns
  probabilities into the predicted class map).
* ``prob`` (only for soft Dice): ``(B, C, *spatial)`` class probabilities (softmax), or for a binary task
  ``(B, 1, *spatial)`` foreground probability (sigmoid). Values must lie in ``[0, 1]``; logits are rejected.

Undefined values are NaN and are left out of every mean (``n`` counts the values that are not NaN):

* With ``ignore_empty=False`` (default) Dice and IoU are NaN only where they are 0/0, i.e. when the ground
  truth and the prediction of a class are both empty; a prediction on an image whose ground truth is empty scores 0.
* Soft Dice is NaN whenever the ground truth of the class is empty (probabilities are never exactly 0, so it would
  be ~0 on every such image); Vorontsov et al. (MedIA 2022) likewise accumulate it over target-present slices.
  This is MONAI's ``ignore_empty=False`` behaviour, except that MONAI scores the both-empty case as 1.
* With ``ignore_empty=True`` MONAI's ``ignore_empty=True`` behaviour is used: NaN whenever the ground truth is
  empty, whatever was predicted (false positives on such images then show only in precision and specificity).
* precision is NaN when nothing is predicted, recall when the ground truth is empty, specificity when the class fills
  the whole image; accuracy ``(TP + TN) / all`` is always defined.
* hd95 (in voxels, unit spacing) is NaN when the prediction or the ground truth is empty.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU
from monai.networks.utils import one_hot

from common.atomic_write import write_text_atomic

__all__ = [
    "METRIC_NAMES",
    "SegmentationReport",
    "SegmentationReportHandler",
    "segmentation_metrics",
    "soft_dice_accumulated",
]

METRIC_NAMES = ("dice", "soft_dice", "iou", "precision", "recall", "specificity", "accuracy")
HD95 = "hd95"
_CONFUSION_METRICS = ("precision", "recall", "specificity", "accuracy")
_NAN_REASONS = {
    "dice": "ground truth and prediction both empty",
    "soft_dice": "empty ground truth",
    "iou": "ground truth and prediction both empty",
    "precision": "nothing predicted",
    "recall": "empty ground truth",
    "specificity": "class fills the whole image",
    "accuracy": "empty image",
    HD95: "empty prediction or empty ground truth",
}
_NAN_REASON_IGNORE_EMPTY = "empty ground truth (ignore_empty=True)"

logger = logging.getLogger(__name__)


def _plain(x: torch.Tensor) -> torch.Tensor:
    """Drops a tensor subclass such as ``MetaTensor`` (its meta data is not needed for metrics)."""
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


def _to_onehot(x: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    """``(B, 1, *spatial)`` class indices or ``(B, num_classes, *spatial)`` maps -> ``(B, num_classes, *spatial)``
    uint8 one-hot (argmax over channels for the latter; uint8 keeps large 3D volumes affordable)."""
    x = _plain(x)
    if x.dtype == torch.bool:
        x = x.long()
    if x.ndim < 3 or x.shape[1] not in (1, num_classes):
        raise ValueError(
            f"{name} must be (B, 1, *spatial) class indices or (B, {num_classes}, *spatial) per-class maps "
            f"(num_classes={num_classes}), got shape {tuple(x.shape)}."
        )
    if x.shape[1] == num_classes:
        x = torch.argmax(x, dim=1, keepdim=True)
    elif x.is_floating_point() and not torch.equal(x, torch.round(x)):
        raise ValueError(f"{name} of shape {tuple(x.shape)} is read as class indices but holds non-integer values.")
    if x.numel() and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(
            f"{name} class indices must lie in [0, {num_classes - 1}], got range [{x.min().item()}, {x.max().item()}]."
        )
    return one_hot(x.long(), num_classes=num_classes, dtype=torch.uint8, dim=1)


def _prob_onehot(prob: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, num_classes, *spatial)`` probabilities, or ``(B, 1, *spatial)`` foreground probability when
    ``num_classes == 2``, -> ``(B, num_classes, *spatial)`` float probabilities."""
    prob = _plain(prob).float()
    if prob.ndim < 3 or not (prob.shape[1] == num_classes or (prob.shape[1] == 1 and num_classes == 2)):
        raise ValueError(
            f"prob must be (B, {num_classes}, *spatial) probabilities"
            + (" or (B, 1, *spatial) foreground probability" if num_classes == 2 else "")
            + f" (num_classes={num_classes}), got shape {tuple(prob.shape)}."
        )
    if prob.numel() and (prob.min() < 0 or prob.max() > 1):
        raise ValueError(
            f"prob must hold probabilities in [0, 1] (apply softmax/sigmoid first), "
            f"got range [{prob.min().item():.4g}, {prob.max().item():.4g}]."
        )
    if prob.shape[1] == 1:
        prob = torch.cat([1.0 - prob, prob], dim=1)
    return prob


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raises a ValueError naming both shapes when the one-hot tensors ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same batch size and spatial shape, got {name_a} "
            f"{tuple(a.shape[:1]) + tuple(a.shape[2:])} and {name_b} {tuple(b.shape[:1]) + tuple(b.shape[2:])} "
            "(batch, *spatial)."
        )


def _soft_dice_terms(prob: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, per foreground class: ``sum(p * y)``, ``sum(p)``, ``sum(y)``, each ``(B, C - 1)`` float64.

    ``prob`` and ``label`` are ``(B, C, *spatial)`` probabilities and one-hot ground truth.
    """
    dims = tuple(range(2, prob.ndim))
    p, y = prob[:, 1:], label[:, 1:]
    return (p * y).sum(dims, dtype=torch.float64), p.sum(dims, dtype=torch.float64), y.sum(dims, dtype=torch.float64)


def _soft_dice_from_terms(inter: torch.Tensor, psum: torch.Tensor, ysum: torch.Tensor) -> torch.Tensor:
    """``2 * inter / (psum + ysum)``, NaN where the denominator is 0."""
    denom = psum + ysum
    return torch.where(denom > 0, 2.0 * inter / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))


def _prepare(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, prob: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validates the inputs and returns one-hot ``pred``, one-hot ``label`` and ``prob``, all ``(B, C, *spatial)``."""
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}.")
    pred_oh = _to_onehot(pred, num_classes, "pred")
    label_oh = _to_onehot(label, num_classes, "label").to(pred_oh.device)
    _check_same_shape(pred_oh, label_oh, "pred", "label")
    prob_oh = None
    if prob is not None:
        prob_oh = _prob_onehot(prob, num_classes).to(pred_oh.device)
        _check_same_shape(prob_oh, label_oh, "prob", "label")
    return pred_oh, label_oh, prob_oh


def _compute(
    pred_oh: torch.Tensor,
    label_oh: torch.Tensor,
    prob_oh: torch.Tensor | None,
    num_classes: int,
    include_hd95: bool,
    ignore_empty: bool,
) -> dict[str, torch.Tensor]:
    """:func:`segmentation_metrics` on inputs already prepared by :func:`_prepare`."""
    dims = tuple(range(2, pred_oh.ndim))
    gt_empty = label_oh[:, 1:].sum(dims) == 0
    both_empty = gt_empty & (pred_oh[:, 1:].sum(dims) == 0)

    out: dict[str, torch.Tensor] = {}
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=ignore_empty, num_classes=num_classes)
    out["dice"] = dice(pred_oh, label_oh).float()
    if prob_oh is not None:
        soft = _soft_dice_from_terms(*_soft_dice_terms(prob_oh, label_oh)).float()
        # probabilities are never exactly zero, so on an empty ground truth soft Dice would always be ~0: undefined
        out["soft_dice"] = soft.masked_fill(gt_empty, float("nan"))
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=ignore_empty)
    out["iou"] = iou(pred_oh, label_oh).float()
    if not ignore_empty:  # MONAI scores "both empty" as 1; it is 0/0, i.e. undefined
        out["dice"] = out["dice"].masked_fill(both_empty, float("nan"))
        out["iou"] = out["iou"].masked_fill(both_empty, float("nan"))

    confusion = ConfusionMatrixMetric(
        include_background=False, metric_name=_CONFUSION_METRICS, compute_sample=True, reduction="none"
    )
    confusion(pred_oh, label_oh)
    for name, value in zip(_CONFUSION_METRICS, confusion.aggregate()):
        out[name] = value.float()

    if include_hd95:
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
        with warnings.catch_warnings():  # MONAI warns for every empty mask (NaN by design here) and about its own API
            warnings.filterwarnings("ignore", message=".*may result in nan/inf distance")
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy")
            out[HD95] = hd(pred_oh, label_oh).float()
    return out


def segmentation_metrics(
    pred: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    prob: torch.Tensor | None = None,
    include_hd95: bool = False,
    ignore_empty: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-image, per-foreground-class segmentation metrics.

    Args:
        pred: ``(B, 1, *spatial)`` predicted class indices, or ``(B, C, *spatial)`` one-hot (any per-class map is
            argmax'ed over channels), ``C = num_classes``.
        label: ground truth in the same forms as ``pred``.
        num_classes: number of classes including the background (2 for a binary task).
        prob: optional ``(B, C, *spatial)`` softmax probabilities, or ``(B, 1, *spatial)`` sigmoid foreground
            probability for a binary task; enables ``soft_dice``.
        include_hd95: also compute the 95th percentile Hausdorff distance (voxel units) as ``hd95``.
        ignore_empty: MONAI's flag; see the module docstring. False: Dice/IoU/soft Dice NaN only when ground truth
            and prediction are both empty. True: NaN whenever the ground truth is empty.

    Returns:
        metric name -> ``(B, num_classes - 1)`` float tensor, in the order of ``METRIC_NAMES`` (``soft_dice`` only
        when ``prob`` is given) followed by ``hd95`` when requested.

    Raises:
        ValueError: when the shapes or values do not fit the forms above.
    """
    pred_oh, label_oh, prob_oh = _prepare(pred, label, num_classes, prob)
    return _compute(pred_oh, label_oh, prob_oh, num_classes, include_hd95, ignore_empty)


def soft_dice_accumulated(prob: torch.Tensor, label: torch.Tensor) -> float:
    """Soft Dice accumulated over all images: ``2 * sum(p * y) / (sum(p) + sum(y))`` with the sums running over the
    whole batch (images and voxels), as reported by Vorontsov et al. (MedIA 2022), instead of a mean of per-image
    values.

    Args:
        prob: ``(B, C, *spatial)`` softmax probabilities, or ``(B, 1, *spatial)`` sigmoid foreground probability
            (binary task).
        label: ``(B, 1, *spatial)`` class indices or ``(B, C, *spatial)`` one-hot ground truth.

    Returns:
        The accumulated soft Dice of the foreground class; for several foreground classes, the mean over classes of
        the per-class accumulated value (NaN if every class is empty in ``prob`` and ``label``).
    """
    num_classes = 2 if prob.shape[1] == 1 else prob.shape[1]
    prob_oh = _prob_onehot(prob, num_classes)
    label_oh = _to_onehot(label, num_classes, "label").to(prob_oh.device)
    _check_same_shape(prob_oh, label_oh, "prob", "label")
    inter, psum, ysum = (t.sum(0) for t in _soft_dice_terms(prob_oh, label_oh))
    per_class = _soft_dice_from_terms(inter, psum, ysum)
    return _nan_stats(per_class.cpu().numpy())["mean"]


def _nan_stats(values: np.ndarray) -> dict[str, float | int]:
    """Mean, population std (ddof=0) and count of the non-NaN entries of a 1-D array (NaN mean/std if none)."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """``(N, K)`` -> ``(N,)`` mean over the non-NaN entries of each row (NaN for an all-NaN row)."""
    valid = ~np.isnan(values)
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0.0).sum(axis=1)
    return np.divide(sums, counts, out=np.full(len(values), np.nan), where=counts > 0)


def _json_safe(obj: Any) -> Any:
    """Replaces NaN/inf floats by None (JSON has no NaN) in nested dicts/lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt(stats: dict[str, float | int]) -> str:
    """``"0.912 ± 0.034"``, or ``"n/a"`` without values."""
    if stats["n"] == 0:
        return "n/a"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


class SegmentationReport:
    """Accumulates per-image metrics over batches (see :func:`segmentation_metrics`) and summarises them.

    Args:
        num_classes: number of classes including the background.
        class_names: names of the foreground classes (``num_classes - 1`` names), or of all classes (``num_classes``
            names, the first, background, is dropped). Default ``class_1``, ``class_2``, ...
        include_hd95: also compute hd95.
        ignore_empty: MONAI's flag, see the module docstring.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        include_hd95: bool = False,
        ignore_empty: bool = False,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}.")
        if class_names is None:
            class_names = [f"class_{i}" for i in range(1, num_classes)]
        elif len(class_names) == num_classes:
            class_names = list(class_names)[1:]
        elif len(class_names) != num_classes - 1:
            raise ValueError(
                f"class_names needs {num_classes - 1} foreground names (or {num_classes} with the background), "
                f"got {len(class_names)}: {list(class_names)}."
            )
        class_names = [str(c) for c in class_names]
        if "mean" in class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct and not 'mean', got {class_names}.")
        self.num_classes = num_classes
        self.class_names = class_names
        self.include_hd95 = include_hd95
        self.ignore_empty = ignore_empty
        self.reset()

    def reset(self) -> None:
        """Forgets every image added so far."""
        self._names: list[str] = []
        self._values: dict[str, list[np.ndarray]] = {}
        self._with_prob: bool | None = None
        self._soft_sums = np.zeros((3, self.num_classes - 1), dtype=np.float64)

    def __len__(self) -> int:
        return len(self._names)

    def add(
        self,
        pred: torch.Tensor,
        label: torch.Tensor,
        prob: torch.Tensor | None = None,
        names: Sequence[str | None] | None = None,
    ) -> None:
        """Adds a batch; ``pred``, ``label``, ``prob`` as in :func:`segmentation_metrics`.

        Args:
            names: one image id (e.g. file name) per image; missing ones become ``image_<index>``.

        Raises:
            ValueError: on malformed inputs, a wrong number of names, or ``prob`` given for some batches only.
        """
        with_prob = prob is not None
        if self._with_prob is not None and with_prob != self._with_prob:
            raise ValueError("prob must be given for every batch or for none (soft Dice would cover some images).")
        pred_oh, label_oh, prob_oh = _prepare(pred, label, self.num_classes, prob)
        batch = pred_oh.shape[0]
        if names is not None and len(names) != batch:
            raise ValueError(f"got {len(names)} names for a batch of {batch} images.")
        values = _compute(pred_oh, label_oh, prob_oh, self.num_classes, self.include_hd95, self.ignore_empty)
        if prob_oh is not None:
            terms = _soft_dice_terms(prob_oh, label_oh)
            self._soft_sums += torch.stack([t.sum(0) for t in terms]).cpu().numpy()
        self._with_prob = with_prob
        for name, value in values.items():
            self._values.setdefault(name, []).append(value.detach().cpu().double().numpy())
        start = len(self._names)
        names = names if names is not None else [None] * batch
        self._names.extend(str(n) if n is not None else f"image_{start + i}" for i, n in enumerate(names))

    def _array(self, metric: str) -> np.ndarray:
        """``(N, num_classes - 1)`` values of one metric over all images added."""
        return np.concatenate(self._values[metric], axis=0)

    def per_image(self) -> list[dict]:
        """One record per image: ``{"name": ..., "<metric>": {"<class>": value, ...}, ...}`` (NaN = undefined)."""
        arrays = {m: self._array(m) for m in self._values}
        return [
            {"name": name, **{m: dict(zip(self.class_names, map(float, a[i]))) for m, a in arrays.items()}}
            for i, name in enumerate(self._names)
        ]

    def summary(self) -> dict:
        """Per metric: ``{"<class>": {"mean", "std", "n"}, ..., "mean": {"mean", "std", "n"}}``.

        Statistics are over images, NaN-aware (``n`` counts the non-NaN values, std has ddof=0). ``"mean"`` is the
        mean/std over images of each image's mean over its non-NaN classes (equal to the class entry when binary).
        """
        out = {}
        for metric in self._values:
            a = self._array(metric)
            entry = {c: _nan_stats(a[:, k]) for k, c in enumerate(self.class_names)}
            entry["mean"] = _nan_stats(_row_nanmean(a))
            out[metric] = entry
        return out

    def accumulated_soft_dice(self) -> dict[str, float] | None:
        """Soft Dice accumulated over all images (see :func:`soft_dice_accumulated`) per class plus ``"mean"`` over
        classes; None when no probabilities were given."""
        if not self._with_prob:
            return None
        per_class = _soft_dice_from_terms(*torch.from_numpy(self._soft_sums)).numpy()
        out = {c: float(v) for c, v in zip(self.class_names, per_class)}
        out["mean"] = _nan_stats(per_class)["mean"]
        return out

    def notes(self) -> list[str]:
        """Human-readable counts of the NaN (excluded) values per metric, with their reason."""
        notes = []
        for metric in self._values:
            a = self._array(metric)
            n_nan = int(np.isnan(a).sum())
            if n_nan:
                reason = _NAN_REASONS[metric]
                if self.ignore_empty and metric in ("dice", "soft_dice", "iou"):
                    reason = _NAN_REASON_IGNORE_EMPTY
                notes.append(f"{metric}: {n_nan} of {a.size} image-class values undefined ({reason}), excluded.")
        return notes

    def to_dict(self) -> dict:
        """``{"summary", "per_image", "num_images", "class_names", "notes"}`` plus ``"soft_dice_accumulated"`` when
        probabilities were given; NaN stays NaN here."""
        out = {
            "summary": self.summary(),
            "per_image": self.per_image(),
            "num_images": len(self),
            "class_names": self.class_names,
            "notes": self.notes(),
        }
        accumulated = self.accumulated_soft_dice()
        if accumulated is not None:
            out["soft_dice_accumulated"] = accumulated
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes :meth:`to_dict` as JSON (NaN/inf written as null), atomically."""
        write_text_atomic(Path(path), json.dumps(_json_safe(self.to_dict()), indent=2) + "\n")

    def to_markdown(self, title: str | None = None) -> str:
        """Markdown table: rows = classes (+ ``mean`` when several), columns = metrics, cells ``mean ± std``."""
        summary = self.summary()
        metrics = list(summary)
        rows = self.class_names + (["mean"] if len(self.class_names) > 1 else [])
        lines = [f"## {title}", ""] if title else []
        lines += ["| class | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        lines += [f"| {r} | " + " | ".join(_fmt(summary[m][r]) for m in metrics) + " |" for r in rows]
        lines += ["", f"{len(self)} images; mean ± std (ddof=0) over images, NaN values excluded."]
        accumulated = self.accumulated_soft_dice()
        if accumulated is not None:
            cells = ", ".join(f"{k} {v:.3f}" for k, v in accumulated.items() if k in rows)
            lines.append(f"Soft Dice accumulated over all images: {cells}.")
        lines += [f"- {n}" for n in self.notes()]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike, prefix: str = "metrics") -> tuple[Path, Path]:
        """Writes ``<out_dir>/<prefix>.json`` and ``<out_dir>/<prefix>.md`` atomically; returns both paths."""
        out_dir = Path(out_dir)
        json_path, md_path = out_dir / f"{prefix}.json", out_dir / f"{prefix}.md"
        self.to_json(json_path)
        write_text_atomic(md_path, self.to_markdown(title=prefix))
        return json_path, md_path


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
