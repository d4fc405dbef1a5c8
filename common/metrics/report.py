"""The per-image segmentation report of every evaluation: metrics per image and class, summaries, JSON and Markdown."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic_write import write_text_atomic
from common.metrics.segmentation import (
    _NAN_REASON_IGNORE_EMPTY,
    _NAN_REASONS,
    _compute,
    _nan_stats,
    _prepare,
    _soft_dice_from_terms,
    _soft_dice_terms,
)

__all__ = ["SegmentationReport"]


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
