"""A placeholder label for the unlabelled images of a batch that mixes labelled and unlabelled ones."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["MISSING_LABEL", "AddMissingLabeld"]

MISSING_LABEL = -1
"""Value of every pixel of a placeholder label; losses skip the images whose label is all ``MISSING_LABEL``."""


class AddMissingLabeld(MapTransform):
    """Give an item without ``label`` a ``(1, *spatial)`` label filled with :data:`MISSING_LABEL`, so that it can
    be batched with labelled items (Chen & Frey's mode 4 trains the ACWE term on every image and the label term on
    the labelled ones: :class:`common.losses.acwe.ActiveContourLabelLoss` skips the placeholders).

    Args:
        keys: the label key(s).
        reference_key: the image key whose spatial shape the placeholder takes.
    """

    def __init__(self, keys: KeysCollection = "label", reference_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.reference_key = reference_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                reference = d[self.reference_key]
                d[key] = torch.full((1, *reference.shape[1:]), float(MISSING_LABEL), dtype=torch.float32)
        return d
