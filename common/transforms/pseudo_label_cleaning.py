"""MIPR's pseudo-label cleaning (Dai, Zhu et al., arXiv 2204.10513, Sec. 2.2), for any number of objects and classes.

The paper cleans each pseudo-label by image processing before the generator rearranges the image to fit it: fill
holes, keep the lesion, smooth the boundary. Written for one lesion per image (ISIC), that recipe keeps only the
largest component, which drops all but one object on multi-object images (nuclei), and a smoothing thresholded at
0.5 turns every class above 1 into class 1 (on the MNI tissue task: all white matter becomes grey matter, so no pair
can pass the acceptance check). :class:`CleanPseudoLabel` keeps every object of at least ``min_object_size`` pixels
by default (``keep_largest_component`` for one-object data) and smooths the classes' one-hot maps, taking the
argmax, so a binary label is smoothed exactly as before (``smooth(fg) > 0.5``) and a multi-class label keeps its
classes.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import GaussianSmooth, KeepLargestConnectedComponent, Transform
from monai.transforms.utils import fill_holes
from skimage.morphology import remove_small_objects

__all__ = ["CleanPseudoLabel"]


class CleanPseudoLabel(Transform):
    """``(1, H, W)`` class map -> cleaned ``(1, H, W)`` class map (float, integer values in ``[0, num_classes)``).

    Steps: fill the background holes enclosed by each class (MONAI's ``fill_holes`` per class, writing only into
    background pixels: MONAI ``FillHoles`` on a class map also fills a class enclosed by another); per foreground
    class, keep its largest connected component (``keep_largest_component``) or remove its components below
    ``min_object_size`` pixels; Gaussian-smooth the one-hot maps (``smoothing_sigma``; 0: none) and take the
    argmax; fill holes again.

    Args:
        num_classes: classes including the background.
        keep_largest_component: one object per image (the paper's ISIC setting); default: keep every object.
        min_object_size: components of a class smaller than this (pixels) are removed (0: none).
        smoothing_sigma: of the boundary smoothing (1 in the bundle).
    """

    def __init__(
        self,
        num_classes: int = 2,
        keep_largest_component: bool = False,
        min_object_size: int = 10,
        smoothing_sigma: float = 1.0,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.keep_largest_component = keep_largest_component
        self.min_object_size = min_object_size
        self.smoothing_sigma = smoothing_sigma
        foreground = list(range(1, num_classes))
        self.largest = KeepLargestConnectedComponent(applied_labels=foreground, independent=True)
        self.smooth = GaussianSmooth(sigma=smoothing_sigma) if smoothing_sigma > 0 else None

    def _fill_holes(self, x: torch.Tensor) -> torch.Tensor:
        """Background holes enclosed by a class get that class; other classes are never overwritten."""
        classes = x[0].round().long().numpy()
        out = classes.copy()
        for c in range(1, self.num_classes):
            filled = fill_holes((classes == c)[None].astype(np.uint8))[0].astype(bool)
            out[filled & (classes == 0)] = c
        return torch.as_tensor(out[None].astype(np.float32))

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(label).float().clone()
        if x.ndim != 3 or x.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) class map, got shape {tuple(x.shape)}.")
        x = self._fill_holes(x)
        if self.keep_largest_component:
            x = torch.as_tensor(self.largest(x)).float()
        elif self.min_object_size > 1:
            classes = x[0].round().long().numpy()
            for c in range(1, self.num_classes):
                mask = classes == c
                kept = remove_small_objects(mask, max_size=self.min_object_size - 1)
                classes[mask & ~kept] = 0
            x = torch.as_tensor(classes[None].astype(np.float32))
        if self.smooth is not None:
            onehot = torch.cat([(x == c).float() for c in range(self.num_classes)])
            x = torch.as_tensor(self.smooth(onehot)).argmax(0, keepdim=True).float()
        return self._fill_holes(x)
