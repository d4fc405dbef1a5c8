"""The labels a benchmark hides from a method, for diagnostics only: how good are the pseudo-labels it makes?

A semi-supervised bundle sees its unlabelled images without labels (``select_labelled`` drops them). A benchmark
that knows them can hand the bundle a :class:`HiddenTruth` (a config key that is ``null`` by default) so that the
method's pseudo-labels are scored against the truth and logged (MIPR's accepted pairs, the adversarial method's
confident pixels). Nothing in training reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize

from common.transforms.validation import binary_255_to_indices

from .datalist import load_datalist, read_json
from .slices import load_array

__all__ = ["HiddenTruth"]


class HiddenTruth:
    """Item of a prepared datalist -> the ``(1, H, W)`` label of its source image (its ``slice`` for a volume).

    Args:
        datalist_file: the data set's MSD-style ``dataset.json`` (its ``label_scale`` honoured, as the bundles do).
        splits: lists of the datalist whose labelled items are looked up (by resolved image path).
        axis: slicing axis of 3D sources (the bundles' ``slicing#axis``).
        num_classes: classes including background (a 0/255 binary mask becomes 0/1, as in the bundles).
    """

    def __init__(
        self,
        datalist_file: str | os.PathLike,
        splits: Sequence[str] = ("training",),
        axis: int = 2,
        num_classes: int | None = 2,
    ) -> None:
        self.label_scale = float(read_json(datalist_file).get("label_scale", 1.0))
        self.labels = {
            str(Path(item["image"]).resolve()): item["label"]
            for split in splits
            for item in load_datalist(datalist_file, split)
            if "label" in item
        }
        if not self.labels:
            raise ValueError(f"{datalist_file}: no labelled item in {list(splits)}; a hidden truth needs labels.")
        self.axis = axis
        self.num_classes = num_classes
        self._cache: dict[str, torch.Tensor] = {}

    def _volume(self, path: str) -> torch.Tensor:
        if path not in self._cache:
            label = torch.as_tensor(np.asarray(load_array(path, "label")))
            if self.label_scale != 1.0:
                label = torch.round(label / self.label_scale)
            self._cache[path] = binary_255_to_indices(label, self.num_classes).long()
        return self._cache[path]

    def __call__(self, item: Mapping, spatial_shape: Sequence[int] | None = None) -> torch.Tensor | None:
        """The truth of ``item`` (``source`` or ``image`` path, ``slice``), resized (nearest) to ``spatial_shape``
        when given; ``None`` when the source is not in the datalist."""
        source = str(Path(item.get("source", item["image"])).resolve())
        path = self.labels.get(source)
        if path is None:
            return None
        label = self._volume(path)
        if label.ndim == 4:
            label = label.select(self.axis + 1, int(item.get("slice", 0)))
        if spatial_shape is not None and tuple(label.shape[1:]) != tuple(spatial_shape):
            label = torch.as_tensor(np.asarray(Resize(tuple(spatial_shape), mode="nearest")(label))).long()
        return label
