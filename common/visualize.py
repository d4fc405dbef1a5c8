"""PNG picture panels (input | label | prediction | ...) written with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.atomic_write import atomic_path  # noqa: E402


def to_display(array: np.ndarray) -> np.ndarray:
    """A (C, H, W), (H, W) or (H, W, 3) array as (H, W) or (H, W, 3) for ``imshow``; RGB scaled to [0, 1]."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] > 3:
        a = a[..., 0]
    if a.ndim == 3:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo + 1e-8)
    return a


def save_panel(
    rows: Sequence[Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    label_keys: Sequence[str] = (),
    num_classes: int = 2,
    title: str | None = None,
) -> Path:
    """Write a grid: one row per sample, one column per key of the first row (dict order).

    Args:
        rows: per sample, column title -> 2D array ((C, H, W) channel-first, (H, W) or (H, W, 3)).
        path: PNG file to write (written atomically: temporary file, then rename).
        label_keys: columns that hold class maps (drawn with a fixed colour map from 0 to num_classes - 1).
        num_classes: classes including background, for the class-map colour scale.
        title: figure title.
    """
    if not rows:
        raise ValueError("save_panel needs at least one row.")
    columns = list(rows[0])
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.2 * len(columns), 2.2 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, key in enumerate(columns):
            ax = axes[r][c]
            image = to_display(row[key])
            if key in label_keys:
                ax.imshow(image, cmap="viridis", vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")
            else:
                ax.imshow(image, cmap="gray")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(key, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path
