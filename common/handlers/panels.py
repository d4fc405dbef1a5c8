"""Write a PNG panel of the first samples an evaluator sees: image | label | prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from common.visualize import save_panel


def _as_class_map(t: torch.Tensor) -> torch.Tensor:
    """(C, H, W) one-hot/probabilities -> (H, W) argmax; (1, H, W) class map -> (H, W)."""
    t = torch.as_tensor(t).detach().cpu().float()
    return t.argmax(0) if t.shape[0] > 1 else t[0]


def _middle_slice(t: torch.Tensor, axis: int) -> torch.Tensor:
    """A (C, H, W, D) volume's middle slice along spatial ``axis``; 2D inputs pass through."""
    if t.ndim == 4:
        return t.select(axis + 1, t.shape[axis + 1] // 2)
    return t


class PanelSaver:
    """Collect up to ``num_samples`` items from ``engine.state.output`` and write ``<output_dir>/<filename>``.

    Items whose label holds foreground are drawn first (the first ones seen), then others, so that a test set
    that starts with empty slices still gives an informative picture.

    Args:
        output_dir: folder of the PNG.
        filename: PNG file name.
        image_key, label_key, pred_key: keys of the decollated items; a missing label column is left out.
        num_samples: rows of the panel.
        num_classes: classes including background (colour scale of the class maps).
        slice_axis: for 3D items, the middle slice along this spatial axis is drawn.
        columns: column titles for image, label and prediction.
    """

    def __init__(
        self,
        output_dir: str,
        filename: str = "panel.png",
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        num_samples: int = 4,
        num_classes: int = 2,
        slice_axis: int = 2,
        columns: Sequence[str] = ("image", "label", "prediction"),
    ) -> None:
        self.path = Path(output_dir) / filename
        self.keys = (image_key, label_key, pred_key)
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.slice_axis = slice_axis
        self.columns = tuple(columns)
        self.rows: list[dict] = []
        self.empty_rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows.clear()
        self.empty_rows.clear()

    def collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            if len(self.rows) >= self.num_samples:
                return
            row = {}
            for title, key in zip(self.columns, self.keys):
                if key not in item:
                    continue
                value = _middle_slice(torch.as_tensor(item[key]).detach().cpu(), self.slice_axis)
                row[title] = value.numpy() if key == self.keys[0] else _as_class_map(value).numpy()
            label_title = self.columns[1]
            if label_title in row and not row[label_title].any():
                if len(self.empty_rows) < self.num_samples:
                    self.empty_rows.append(row)
            else:
                self.rows.append(row)

    def write(self, engine: Engine) -> None:
        rows = (self.rows + self.empty_rows)[: self.num_samples]
        if rows:
            save_panel(rows, self.path, label_keys=self.columns[1:], num_classes=self.num_classes)
