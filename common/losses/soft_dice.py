"""Soft Dice loss pooled over the whole batch, as in the translation authors' code (Vorontsov et al., MedIA 2022;
github.com/veugene/genseg), which MONAI's ``DiceLoss`` (per image and class) does not reproduce exactly."""

from __future__ import annotations

import torch

__all__ = ["soft_dice_loss"]


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Negative soft Dice pooled over the whole batch: ``-(2 sum(t p) + smooth) / (sum t + sum p + smooth)``.

    Args:
        prob: ``(B, 1, H, W)`` sigmoid foreground probabilities (only the labelled images).
        target: ``(B, 1, H, W)`` binary masks.
        smooth: added to numerator and denominator (1 in the authors' code).

    Returns:
        scalar in ``[-1, 0)``.
    """
    target = target.to(prob.dtype)
    return -(2.0 * (prob * target).sum() + smooth) / (target.sum() + prob.sum() + smooth)
