"""Losses of UniMatch (Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023), as in the authors' medical code (``more-scenarios/medical/unimatch.py``, ``util/utils.py``).

- supervised: ``(CE + Dice) / 2`` on the labelled batch (:func:`supervised_loss`, MONAI's ``DiceCELoss``);
- unlabelled: **Dice alone** (no cross-entropy) of each prediction against the weak view's pseudo-label, over the
  pixels whose weak confidence (max softmax) is at least the threshold (0.95); the others are ignored
  (:class:`ConfidentDiceLoss`, MONAI's ``MaskedDiceLoss``);
- total: ``(L_s + mu / 2 * (L_s1 + L_s2) + lambda * L_fp) / 2`` with mu = lambda = 0.5 (:func:`unimatch_loss`).

The authors' Dice is a per-class soft Dice over the whole batch (all classes, background included), squared
denominators, smoothing 1e-5 in numerator and denominator, averaged over the classes: MONAI's Dice with
``include_background=True, squared_pred=True, batch=True, smooth_nr=smooth_dr=1e-5``. An ignored pixel leaves the
sums, so a batch without a confident pixel has a Dice loss of exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, MaskedDiceLoss
from torch import nn

__all__ = ["ConfidentDiceLoss", "confident_pseudo_labels", "supervised_loss", "unimatch_loss"]

SMOOTH = 1e-5


def supervised_loss(smooth: float = SMOOTH) -> DiceCELoss:
    """``(CE + Dice) / 2`` of logits ``(B, C, H, W)`` against labels ``(B, 1, H, W)``, as the authors'."""
    return DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        batch=True,
        smooth_nr=smooth,
        smooth_dr=smooth,
        lambda_dice=0.5,
        lambda_ce=0.5,
    )


def confident_pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels and confidences of a weak-view prediction.

    Args:
        logits: ``(B, C, H, W)`` logits (detached by the caller).

    Returns:
        ``(B, H, W)`` long argmax classes and ``(B, H, W)`` float max softmax probabilities.
    """
    confidence, labels = torch.softmax(logits.float(), dim=1).max(dim=1)
    return labels, confidence


class ConfidentDiceLoss(nn.Module):
    """Soft Dice of a prediction against pseudo-labels over the confident pixels only (UniMatch's unlabelled loss).

    Args:
        num_classes: C.
        threshold: confidence at or above which a pixel counts (UniMatch medical: 0.95; ``conf >= threshold``).
        smooth: smoothing of numerator and denominator (authors: 1e-5).
    """

    def __init__(self, num_classes: int, threshold: float = 0.95, smooth: float = SMOOTH) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.threshold = threshold
        self.dice = MaskedDiceLoss(
            include_background=True, squared_pred=True, batch=True, smooth_nr=smooth, smooth_dr=smooth
        )

    def forward(self, logits: torch.Tensor, pseudo_labels: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Args:
            logits: ``(B, C, H, W)`` prediction logits (softmax is taken here).
            pseudo_labels: ``(B, H, W)`` long class indices.
            confidence: ``(B, H, W)`` confidence of each pseudo-label.

        Returns:
            The scalar loss (0 when no pixel is confident).
        """
        probs = torch.softmax(logits.float(), dim=1)
        target = F.one_hot(pseudo_labels.long(), self.num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        mask = (confidence >= self.threshold)[:, None].to(probs.dtype)
        return self.dice(probs, target, mask)


def unimatch_loss(
    supervised: torch.Tensor,
    strong: Sequence[torch.Tensor] = (),
    feature: torch.Tensor | None = None,
    strong_weight: float = 0.5,
    feature_weight: float = 0.5,
) -> torch.Tensor:
    """UniMatch's total loss ``(L_s + L_u) / 2`` with ``L_u = strong_weight * mean(strong) + feature_weight * L_fp``.

    With both strong views and the feature term this is the authors' ``(L_s + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2``;
    with one strong view of weight 1 and no feature term FixMatch's ``(L_s + L_s1) / 2``. Without any unlabelled term
    (the supervised control) it is ``L_s``, the authors' supervised-only loss.

    Args:
        supervised: L_s, scalar.
        strong: the strong views' losses (scalars), averaged.
        feature: L_fp, the feature-perturbed prediction's loss (scalar), or ``None``.
        strong_weight: mu, weight of the strong views' mean (UniMatch: 0.5).
        feature_weight: lambda, weight of L_fp (UniMatch: 0.5).
    """
    terms = []
    if strong:
        terms.append(strong_weight * torch.stack(list(strong)).mean())
    if feature is not None:
        terms.append(feature_weight * feature)
    if not terms:
        return supervised
    return (supervised + sum(terms)) / 2.0
