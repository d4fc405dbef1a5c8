"""How well a translation model's residual separates the target from the rest of the image (a diagnostic of
Vorontsov et al., MedIA 2022: the residual decoder ``G_res(c, u)`` is meant to draw exactly what makes a
target-present image differ from a target-absent one, i.e. the target, and the segmentation shares that decoder).

Scored against the target's hidden truth, so for benchmarks only; nothing here trains or selects a model.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.filters import threshold_otsu

__all__ = ["SEPARATION_KEYS", "residual_separation"]

SEPARATION_KEYS = ("target_share", "mass_share", "enrichment", "otsu_dice")


def residual_separation(residual: torch.Tensor, label: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, where the residual's magnitude lies with respect to the target.

    Args:
        residual: ``(B, C, H, W)`` residuals ``G_res(c, u)`` of target-present images (their magnitude, the mean of
            ``|r|`` over channels, is scored).
        label: ``(B, 1, H, W)`` target masks (non-zero = target).

    Returns:
        ``(B,)`` float arrays: ``target_share`` (the target's share of the pixels: what ``mass_share`` is when the
        residual ignores the target), ``mass_share`` (the share of the residual's magnitude on the target),
        ``enrichment`` (``mass_share / target_share``: 1 = no separation; NaN for an image without target) and
        ``otsu_dice`` (Dice between the target and Otsu's threshold of the magnitude, the label-free mask the residual
        alone gives; 0 for a constant residual, 1 when both are empty).

    Raises:
        ValueError: when the shapes do not match as above.
    """
    if residual.ndim != 4 or label.ndim != 4 or label.shape[1] != 1 or residual.shape[0] != label.shape[0]:
        raise ValueError(
            f"expected residual (B, C, H, W) and label (B, 1, H, W), got {tuple(residual.shape)} and "
            f"{tuple(label.shape)}"
        )
    if residual.shape[2:] != label.shape[2:]:
        raise ValueError(f"residual and label sizes differ: {tuple(residual.shape[2:])} vs {tuple(label.shape[2:])}")
    magnitude = residual.detach().abs().mean(dim=1).double().cpu().numpy()  # (B, H, W)
    target = (label[:, 0] != 0).cpu().numpy()
    out = {key: np.empty(len(magnitude)) for key in SEPARATION_KEYS}
    for i, (m, t) in enumerate(zip(magnitude, target)):
        share = t.mean()
        total = m.sum()
        mass = (m * t).sum() / total if total > 0 else share  # a zero residual puts its (no) mass nowhere: chance
        mask = m > threshold_otsu(m) if m.max() > m.min() else np.zeros_like(t)
        overlap = 2.0 * np.logical_and(mask, t).sum()
        size = mask.sum() + t.sum()
        out["target_share"][i] = share
        out["mass_share"][i] = mass
        out["enrichment"][i] = mass / share if share > 0 else np.nan
        out["otsu_dice"][i] = overlap / size if size > 0 else 1.0
    return out
