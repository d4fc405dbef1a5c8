"""Per-image segmentation metrics shared by all bundles (their report: :mod:`common.metrics.report`; the evaluator
handler that writes it: :class:`common.handlers.SegmentationReportHandler`).

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

import math
import warnings

import numpy as np
import torch
from monai.metrics import ConfusionMatrixMetric, DiceMetric, HausdorffDistanceMetric, MeanIoU
from monai.networks.utils import one_hot

__all__ = ["METRIC_NAMES", "segmentation_metrics", "soft_dice_accumulated"]

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
