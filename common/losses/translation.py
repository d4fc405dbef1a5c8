"""Loss terms of Vorontsov et al., "Towards annotation-efficient segmentation via image-to-image translation",
MedIA 2022 (arXiv 1904.01636), as in the authors' code (github.com/veugene/genseg)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["hinge_discriminator_loss", "hinge_generator_loss", "soft_dice_loss"]


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


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` of ``(B,)`` discriminator scores."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-mean(D(fake))`` of ``(B,)`` discriminator scores on generated images."""
    return -fake_scores.mean()
