"""Residual wrapper of an image-to-image generator: ``G(x) = x + m * tanh(net(x))``.

Used for the AF-Seg generator (Yu, Dong et al., ISBI 2020, Sec. 2.3): the synthetic image must equal the real one
inside the weak label (shape loss) and differ only where objects the weak label missed are removed. Predicting that
difference instead of the whole image makes ``G`` start close to the identity, which the small demo schedules need
(a plain U-Net spends most of a short CPU schedule learning to copy its input, and the segmenter trained on its
blurry outputs then fails on real images). The residual is bounded by ``m`` (pix2pix bounds its output with a
tanh): unbounded, the adversarial loss drove isolated pixels to 15x the image range on the demo data, which
swamped the instance normalisation of the segmenter.
"""

from __future__ import annotations

import torch

__all__ = ["ResidualGenerator"]


class ResidualGenerator(torch.nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: ``x + max_residual * tanh(net(x))``.

    Args:
        net: keeps the shape and channels (e.g. a U-Net).
        max_residual: bound of the change (2: the width of images normalised to [-1, 1]).
    """

    def __init__(self, net: torch.nn.Module, max_residual: float = 2.0) -> None:
        super().__init__()
        self.net = net
        self.max_residual = max_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.max_residual * torch.tanh(self.net(x))
