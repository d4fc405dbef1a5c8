"""Active-contour losses of Chen & Frey, "An Unsupervised Learning Model for Medical Image Segmentation", MIDL 2020.

* :class:`ACWELoss`: the Chan-Vese "active contour without edges" energy (Chan & Vese 2001) with length weight
  ``mu = 0`` as an unsupervised loss (Chen & Frey eq. 2).
* :class:`ActiveContourLabelLoss`: the supervised active contour loss of Chen et al., "Learning Active Contour
  Models for Medical Image Segmentation", CVPR 2019 (Chen & Frey eq. 3): length + region against a label.
* :class:`ActiveContourCombinedLoss`: ``acwe_weight * L_ACWE + label_weight * L_label``; Chen & Frey's modes are
  weights ``(1, 0)`` (mode 1), ``(0, 1)`` (fine-tuning, modes 2-3) and ``(1, alpha = 0.4)`` (mode 4).

The network output ``y`` ``(B, 1, H, W)`` is a real-valued map (foreground: ``y > 0``); every loss reads it as
``p = clamp(y, 0, 1)``, as the authors' code does. All terms are **sums over pixels**, not means, as in the paper and
its code, so their size grows with the image area (and the relative weight of the area term ``nu`` depends on the
image size and intensity range).
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from common.transforms.missing_label import MISSING_LABEL

__all__ = ["ACWELoss", "ActiveContourCombinedLoss", "ActiveContourLabelLoss"]


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    """per_image: ``(B,)`` -> scalar (``"sum"``/``"mean"`` over the batch) or ``(B,)`` (``"none"``)."""
    if reduction == LossReduction.SUM.value:
        return per_image.sum()
    if reduction == LossReduction.MEAN.value:
        return per_image.mean()
    if reduction == LossReduction.NONE.value:
        return per_image
    raise ValueError(f'reduction must be "sum", "mean" or "none", got "{reduction}".')


def _check_pair(pred: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred must be (B, 1, H, W), got {tuple(pred.shape)}.")
    if other.shape[0] != pred.shape[0] or other.shape[2:] != pred.shape[2:]:
        raise ValueError(f"{name} {tuple(other.shape)} does not match pred {tuple(pred.shape)} in batch/space.")


class ACWELoss(_Loss):
    """Chan-Vese energy as an unsupervised segmentation loss (Chen & Frey 2020, eq. 2; Chan & Vese 2001, eq. 1).

    With ``p = clamp(pred, 0, 1)`` and the image ``g``, per image (or per batch, see ``batch_statistics``)::

        c1 = sum(p g) / sum(p),  c2 = sum((1 - p) g) / sum(1 - p)
        E  = lambda1 * sum p (g - c1)^2 + lambda2 * sum (1 - p) (g - c2)^2 + nu * sum p

    The sums run over all pixels and channels of one image, so ``E`` grows with the image area; the batch is then
    reduced by ``reduction`` (``"sum"``, the default, is the authors' code, which sums over the whole batch tensor).

    Args:
        nu: weight of the area term. Chen & Frey state 0.004 (default); the authors' scripts use 0.0005.
        lambda1, lambda2: weights of the inside and outside region terms (1 and 1 in the paper).
        batch_statistics: compute ``c1, c2`` over the whole batch, as the authors' code does; default ``False``:
            per image (each image is segmented by its own intensity statistics, as in Chan-Vese).
        reduction: ``"sum"`` | ``"mean"`` | ``"none"`` over the batch.
        eps: added to the denominators of ``c1, c2``.
    """

    def __init__(
        self,
        nu: float = 0.004,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
        batch_statistics: bool = False,
        reduction: LossReduction | str = LossReduction.SUM,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.nu = nu
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.batch_statistics = batch_statistics
        self.eps = eps

    def region_means(self, pred: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean intensities ``c1`` (inside, ``p``) and ``c2`` (outside, ``1 - p``) per channel.

        pred: ``(B, 1, H, W)`` network output; image: ``(B, C, H, W)``. Returns two tensors of shape
        ``(B, C, 1, 1)``, or ``(1, C, 1, 1)`` with ``batch_statistics``.
        """
        p = pred.clamp(0.0, 1.0)
        dims = (0, 2, 3) if self.batch_statistics else (2, 3)
        c1 = (p * image).sum(dim=dims, keepdim=True) / (p.sum(dim=dims, keepdim=True) + self.eps)
        c2 = ((1 - p) * image).sum(dim=dims, keepdim=True) / ((1 - p).sum(dim=dims, keepdim=True) + self.eps)
        return c1, c2

    def forward(self, pred: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """pred: ``(B, 1, H, W)`` real-valued output; image: ``(B, C, H, W)`` intensities (min-max to [0, 1]).

        Returns the reduced energy (scalar), or ``(B,)`` with ``reduction="none"``.
        """
        _check_pair(pred, image, "image")
        p = pred.clamp(0.0, 1.0)
        c1, c2 = self.region_means(pred, image)
        inside = (p * (image - c1) ** 2).sum(dim=(1, 2, 3))
        outside = ((1 - p) * (image - c2) ** 2).sum(dim=(1, 2, 3))
        area = p.sum(dim=(1, 2, 3))
        return _reduce(self.lambda1 * inside + self.lambda2 * outside + self.nu * area, self.reduction)


class ActiveContourLabelLoss(_Loss):
    """Supervised active contour loss (Chen et al., CVPR 2019; Chen & Frey 2020, eq. 3).

    With ``p = clamp(pred, 0, 1)`` and the binary label ``u``, per image::

        length = sum_{i,j} sqrt(dx_{i,j}^2 + dy_{i,j}^2 + eps)     (finite differences of p, as in the CVPR code)
        region = |sum p (1 - u)^2| + |sum (1 - p) u^2|
        L      = length_weight * length + region

    Sums run over all pixels of one image (so ``L`` grows with image size and perimeter); the batch is reduced by
    ``reduction`` (``"sum"`` as in the authors' code). An image whose label is a placeholder (all
    :data:`common.transforms.MISSING_LABEL`: an unlabelled image in a mode-4 batch) contributes 0.

    Args:
        length_weight: weight of the length term (1 in the CVPR 2019 code as used by Chen & Frey).
        reduction: ``"sum"`` | ``"mean"`` | ``"none"`` over the batch.
        eps: inside the square root of the length term.
    """

    def __init__(
        self, length_weight: float = 1.0, reduction: LossReduction | str = LossReduction.SUM, eps: float = 1e-8
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.length_weight = length_weight
        self.eps = eps

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """pred: ``(B, 1, H, W)`` real-valued output; label: ``(B, 1, H, W)`` in {0, 1}. Returns the reduced loss."""
        _check_pair(pred, label, "label")
        p = pred.clamp(0.0, 1.0)
        u = label.to(p.dtype)
        dx = p[:, :, 1:, :] - p[:, :, :-1, :]
        dy = p[:, :, :, 1:] - p[:, :, :, :-1]
        length = torch.sqrt(dx[:, :, 1:, :-2] ** 2 + dy[:, :, :-2, 1:] ** 2 + self.eps).sum(dim=(1, 2, 3))
        region_in = (p * (1 - u) ** 2).sum(dim=(1, 2, 3)).abs()
        region_out = ((1 - p) * u**2).sum(dim=(1, 2, 3)).abs()
        labelled = (label != MISSING_LABEL).flatten(1).any(dim=1).to(p.dtype)
        return _reduce((self.length_weight * length + region_in + region_out) * labelled, self.reduction)


class ActiveContourCombinedLoss(_Loss):
    """``acwe_weight * L_ACWE(pred, image) + label_weight * L_label(pred, label)`` (Chen & Frey 2020, Sec. 2).

    A term whose weight is 0 is not computed, so mode 1 (``label_weight=0``) never needs a label and fine-tuning
    (``acwe_weight=0``) ignores the image. Mode 4 is ``acwe_weight=1, label_weight=alpha=0.4``.

    Args:
        acwe_weight: weight of :class:`ACWELoss`.
        label_weight: weight of :class:`ActiveContourLabelLoss` (``alpha``, 0.4 in the paper).
        nu, batch_statistics: of :class:`ACWELoss`.
        length_weight: of :class:`ActiveContourLabelLoss`.
        reduction: ``"sum"`` | ``"mean"`` | ``"none"`` over the batch, for both terms.
    """

    def __init__(
        self,
        acwe_weight: float = 1.0,
        label_weight: float = 0.4,
        nu: float = 0.004,
        batch_statistics: bool = False,
        length_weight: float = 1.0,
        reduction: LossReduction | str = LossReduction.SUM,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if acwe_weight == 0 and label_weight == 0:
            raise ValueError("at least one of acwe_weight and label_weight must be non-zero.")
        self.acwe_weight = acwe_weight
        self.label_weight = label_weight
        self.acwe = ACWELoss(nu=nu, batch_statistics=batch_statistics, reduction=reduction)
        self.label_loss = ActiveContourLabelLoss(length_weight=length_weight, reduction=reduction)

    def forward(self, pred: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """pred: ``(B, 1, H, W)``; image: ``(B, C, H, W)``; label: ``(B, 1, H, W)`` or ``None`` (label-free).

        Raises:
            ValueError: when ``label_weight`` is non-zero and no label is given.
        """
        loss = pred.new_zeros(()) if self.reduction != LossReduction.NONE.value else pred.new_zeros(pred.shape[0])
        if self.acwe_weight != 0:
            loss = loss + self.acwe_weight * self.acwe(pred, image)
        if self.label_weight != 0:
            if label is None:
                raise ValueError("label_weight is non-zero but the batch has no label.")
            loss = loss + self.label_weight * self.label_loss(pred, label)
        return loss
