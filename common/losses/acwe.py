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

from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from common.transforms.missing_label import MISSING_LABEL

__all__ = ["REGION_STATISTICS", "ACWELoss", "ActiveContourCombinedLoss", "ActiveContourLabelLoss"]

REGION_STATISTICS = ("image", "volume")


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
        region_statistics: ``"image"`` (default here; the paper's per-image form) or ``"volume"``: ``c1, c2`` of
            the slices of one volume are the means over **all slices of that volume** (Chan & Vese's energy on the
            3D domain, with ``mu = 0`` so that slices couple only through ``c1, c2``). Then ``forward`` needs the
            ``sources`` (volume id per image) and ``slices`` (slice index per image); the sums of the slices not in
            the batch are the detached values of the last time each was seen (running statistics, at most one
            epoch old), the batch's own slices enter with their gradient. Images without a source id (2D images)
            keep per-image statistics. ``batch_statistics=True`` takes precedence (batch means, no volume means).
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
        region_statistics: str = "image",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if region_statistics not in REGION_STATISTICS:
            raise ValueError(f"region_statistics must be one of {REGION_STATISTICS}, got {region_statistics!r}.")
        self.nu = nu
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.batch_statistics = batch_statistics
        self.region_statistics = region_statistics
        self.eps = eps
        self._slice_sums: dict[str, dict[int, torch.Tensor]] = {}  # volume -> slice -> (4, C) detached sums

    @property
    def uses_volumes(self) -> bool:
        """Whether ``forward`` wants the volume id and slice index of each image (``region_statistics="volume"``;
        ``batch_statistics`` takes precedence)."""
        return self.region_statistics == "volume" and not self.batch_statistics

    def get_extra_state(self) -> dict:
        """The running per-slice sums (``state_dict`` entry ``_extra_state``), so a resumed training continues with
        them: ``{"slice_sums": {volume: {slice: (4, C) tensor}}}``."""
        sums = self._slice_sums
        return {
            "slice_sums": {
                v: {int(k): t.as_subclass(torch.Tensor).clone() for k, t in d.items()} for v, d in sums.items()
            }
        }

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` returned."""
        sums = state.get("slice_sums", {}) if isinstance(state, dict) else {}
        self._slice_sums = {str(v): {int(k): t.clone() for k, t in d.items()} for v, d in sums.items()}

    def reset_volume_statistics(self) -> None:
        """Forget the running per-slice sums (e.g. before training on other volumes)."""
        self._slice_sums.clear()

    def _volume_means(
        self, pred: torch.Tensor, image: torch.Tensor, sources: Sequence[str], slices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``c1, c2`` ``(B, C, 1, 1)`` over all slices of each image's volume (see ``region_statistics``).

        pred: ``(B, 1, H, W)``; image: ``(B, C, H, W)``; sources: ``B`` volume ids (``None``/``""``: the image alone);
        slices: ``B`` slice indices.
        """
        own_c1, own_c2 = self.region_means(pred, image)  # (B, C, 1, 1): per image, for one-slice sources
        p = pred.clamp(0.0, 1.0)
        sums = torch.stack(
            [
                (p * image).sum(dim=(2, 3)),
                p.sum(dim=(2, 3)).expand(-1, image.shape[1]),
                ((1 - p) * image).sum(dim=(2, 3)),
                (1 - p).sum(dim=(2, 3)).expand(-1, image.shape[1]),
            ],
            dim=1,
        )  # (B, 4, C)
        c1, c2 = list(own_c1.unbind(0)), list(own_c2.unbind(0))
        keys = [str(s) if s else None for s in sources]
        for volume in dict.fromkeys(k for k in keys if k is not None):
            members = [i for i, k in enumerate(keys) if k == volume]
            stored = self._slice_sums.setdefault(volume, {})
            in_batch = {int(slices[i]) for i in members}
            rest = [v for k, v in stored.items() if k not in in_batch]
            for i in members:
                stored[int(slices[i])] = sums[i].detach().cpu().as_subclass(torch.Tensor)  # no MetaTensor
            if len(stored) < 2:  # a 2D image (or a volume's first slice seen alone): its own statistics
                continue
            total = sums[members].sum(0)
            if rest:
                total = total + torch.stack(rest).sum(0).to(total)
            for i in members:
                c1[i] = (total[0] / (total[1] + self.eps))[:, None, None]
                c2[i] = (total[2] / (total[3] + self.eps))[:, None, None]
        return torch.stack(c1), torch.stack(c2)

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

    def forward(
        self,
        pred: torch.Tensor,
        image: torch.Tensor,
        sources: Sequence[str] | None = None,
        slices: Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pred: ``(B, 1, H, W)`` real-valued output; image: ``(B, C, H, W)`` intensities (min-max to [0, 1]).

        ``sources``/``slices`` (``B`` volume ids / slice indices) are read with ``region_statistics="volume"`` only;
        without them each image keeps its own ``c1, c2``. Returns the reduced energy (scalar), or ``(B,)`` with
        ``reduction="none"``.
        """
        _check_pair(pred, image, "image")
        p = pred.clamp(0.0, 1.0)
        if self.uses_volumes and sources is not None and slices is not None:
            slices = slices.tolist() if isinstance(slices, torch.Tensor) else list(slices)
            c1, c2 = self._volume_means(pred, image, list(sources), slices)
        else:
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
        nu, batch_statistics, region_statistics: of :class:`ACWELoss`.
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
        region_statistics: str = "image",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if acwe_weight == 0 and label_weight == 0:
            raise ValueError("at least one of acwe_weight and label_weight must be non-zero.")
        self.acwe_weight = acwe_weight
        self.label_weight = label_weight
        self.acwe = ACWELoss(
            nu=nu, batch_statistics=batch_statistics, reduction=reduction, region_statistics=region_statistics
        )
        self.label_loss = ActiveContourLabelLoss(length_weight=length_weight, reduction=reduction)

    @property
    def uses_volumes(self) -> bool:
        """Whether ``forward`` wants ``sources``/``slices`` (the ACWE term with ``region_statistics="volume"``)."""
        return self.acwe_weight != 0 and self.acwe.uses_volumes

    def forward(
        self,
        pred: torch.Tensor,
        image: torch.Tensor,
        label: torch.Tensor | None = None,
        sources: Sequence[str] | None = None,
        slices: Sequence[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pred: ``(B, 1, H, W)``; image: ``(B, C, H, W)``; label: ``(B, 1, H, W)`` or ``None`` (label-free);
        sources, slices: ``B`` volume ids and slice indices, for :class:`ACWELoss` with ``region_statistics="volume"``.

        Raises:
            ValueError: when ``label_weight`` is non-zero and no label is given.
        """
        loss = pred.new_zeros(()) if self.reduction != LossReduction.NONE.value else pred.new_zeros(pred.shape[0])
        if self.acwe_weight != 0:
            loss = loss + self.acwe_weight * self.acwe(pred, image, sources, slices)
        if self.label_weight != 0:
            if label is None:
                raise ValueError("label_weight is non-zero but the batch has no label.")
            loss = loss + self.label_weight * self.label_loss(pred, label)
        return loss
