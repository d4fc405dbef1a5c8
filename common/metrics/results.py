"""Reading the ``metrics.json`` a bundle's evaluation writes (:class:`~common.metrics.SegmentationReport`), and the
paired comparison of two methods over repeated runs, the statistics every benchmark table of this collection uses.

``metrics.json`` holds ``{"summary": {metric: {class: {"mean", "std", "n"}, "mean": {...}}}, "per_image": [{"name",
metric: {class: value}}], "class_names", "num_images", "notes"}`` with undefined values as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricsFile", "PairedDifference", "paired_difference", "read_metrics"]


@dataclass(frozen=True)
class MetricsFile:
    """The content of one ``metrics.json``.

    Attributes:
        path: where it was read from.
        summary: per metric, per class (and ``"mean"`` over classes): ``{"mean", "std", "n"}`` over images.
        per_image: one record per test image: ``{"name": ..., metric: {class: value or None}}``.
        class_names: the foreground classes.
        soft_dice_accumulated: soft Dice accumulated over all images per class and ``"mean"`` (when the evaluation
            had probabilities), else None.
    """

    path: Path
    summary: Mapping[str, Any]
    per_image: Sequence[Mapping[str, Any]]
    class_names: Sequence[str]
    soft_dice_accumulated: Mapping[str, float] | None = None

    def mean(self, metric: str = "dice") -> float:
        """Mean over images of each image's mean over its foreground classes."""
        return float(self.summary[metric]["mean"]["mean"])

    def std(self, metric: str = "dice") -> float:
        """Standard deviation over images (ddof 0) of the same per-image means."""
        return float(self.summary[metric]["mean"]["std"])

    def by_image(self, metric: str = "dice") -> dict[str, float]:
        """Image file name -> that image's mean of ``metric`` over the classes where it is defined; images where it
        is undefined for every class are left out."""
        out = {}
        for record in self.per_image:
            values = [v for v in record.get(metric, {}).values() if v is not None and not math.isnan(v)]
            if values:
                out[Path(record["name"]).name] = float(np.mean(values))
        return out


def read_metrics(path: str | os.PathLike) -> MetricsFile:
    """Read ``path`` (a ``metrics.json`` or the folder holding one), with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (the evaluation did not finish?).")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        return MetricsFile(
            path, content["summary"], content["per_image"], content["class_names"], content.get("soft_dice_accumulated")
        )
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{path}: not a metrics.json of common.metrics.SegmentationReport ({e!r}).") from e


@dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences ``a_i - b_i`` and its two-sided confidence interval (Student's t over the ``n``
    pairs; ``lo``/``hi`` are NaN when ``n < 2``).

    ``excludes_zero`` is the reading the tables use: a difference whose interval contains 0 is "no difference",
    whatever its sign.
    """

    mean: float
    lo: float
    hi: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)

    def interval_text(self, digits: int = 3) -> str:
        """``[lo, hi]`` with signs, e.g. ``[+0.012, +0.048]``; ``-`` when undefined."""
        if math.isnan(self.lo):
            return "-"
        return f"[{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Paired comparison of ``a`` with ``b`` (same length, pair ``i`` from the same seed, split or image).

    The interval is ``mean(d) ± t_{(1 + confidence) / 2, n - 1} * sd(d) / sqrt(n)`` with ``d = a - b`` and ``sd``
    the sample standard deviation (ddof 1). With 3 seeds ``t`` is 4.30, so only consistent differences exclude 0.
    """
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired_difference needs as many values in a as in b, got {len(a)} and {len(b)}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, confidence)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half, mean + half, n, confidence)
