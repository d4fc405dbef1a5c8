"""A label-free validation metric: the Chan-Vese energy of the predicted partition on held-out images.

Label-free training (``acwe_unsup_seg`` mode 1) cannot be monitored by Dice; it is monitored on the ``monitor``
split (unlabelled images held out from training) by the quantity it minimises, the ACWE energy of Chen & Frey
(MIDL 2020, eq. 2), here of the hard (thresholded) partition and per pixel, so that images of any size weigh alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from common.losses.acwe import ACWELoss

__all__ = ["ActiveContourEnergy"]


class ActiveContourEnergy(Metric):
    """Mean over images of the per-pixel ACWE energy of the predicted foreground (lower is a better partition).

    ``update((preds, images))`` takes the decollated evaluator output (``from_engine(["pred", "image"])``): each
    ``pred`` a ``(1, H, W)`` binary mask or a ``(K, H, W)`` one-hot mask (its last channel is the foreground), each
    ``image`` ``(C, H, W)``. Reduced over ranks under ``torch.distributed``.

    Args:
        nu: the area weight of the energy (as in training).
        output_transform: maps the engine's output to ``(preds, images)``.
        device: where the running sums live.
    """

    def __init__(
        self, nu: float = 0.004, output_transform: Callable[[Any], Any] = lambda x: x, device: str = "cpu"
    ) -> None:
        self.energy = ACWELoss(nu=nu, reduction="none")
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> None:
        preds, images = output
        for pred, image in zip(preds, images):
            fg = pred[-1:].float()
            per_pixel = self.energy(fg[None], image[None].float()) / fg[0].numel()
            self._sum += per_pixel.sum().double().to(self._device)
            self._count += 1

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise ValueError("ActiveContourEnergy needs at least one image before compute().")
        return float(self._sum / self._count)
