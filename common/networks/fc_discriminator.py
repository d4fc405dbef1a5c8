"""Fully convolutional discriminator that outputs a per-pixel confidence map (Hung et al., BMVC 2018).

Tan et al. (Journal of New Media 4(3), 2022, Sec. 2.3 and Fig. 3) follow Hung et al.: a DCGAN-style discriminator of 4x4
convolutions with stride 2, each followed by LeakyReLU(0.2), without pooling and without batch normalisation, whose
single-channel logit map is upsampled (bilinear) back to the input size. Its input is a C-channel class probability
map (the softmax output of the segmenter) or a one-hot ground-truth map; ``sigmoid`` of its output is the confidence
map that selects the pixels used as pseudo-labels in the semi-supervised phase.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FCDiscriminator"]


class FCDiscriminator(nn.Module):
    """Fully convolutional discriminator: ``len(channels) + 1`` strided 4x4 convolutions, upsampled logit map.

    Tan et al. use 6 convolution layers (the default: five hidden layers and the 1-channel classifier); Hung et al.
    use ``channels=(64, 128, 256, 512)``. Every layer halves the spatial size (kernel 4, stride 2, padding 1), so
    the input needs at least ``2 ** num_layers`` pixels per side.

    Args:
        in_channels: classes C of the probability / one-hot maps it judges.
        channels: output channels of the hidden convolutions (each followed by LeakyReLU).
        spatial_dims: 2 (images) or 3 (volumes).
        negative_slope: LeakyReLU slope (0.2 in both papers).
        upsample: bilinear (trilinear in 3D) upsampling of the logits to the input size; ``False`` returns the
            coarse map.

    Shapes:
        input ``(B, C, H, W)`` probabilities or one-hot labels; output ``(B, 1, H, W)`` logits (``sigmoid`` gives the
        per-pixel confidence that the input is a ground-truth map).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        spatial_dims: int = 2,
        negative_slope: float = 0.2,
        upsample: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [conv(previous, width, 4, stride=2, padding=1), nn.LeakyReLU(negative_slope, inplace=True)]
            previous = width
        layers.append(conv(previous, 1, 4, stride=2, padding=1))
        self.model = nn.Sequential(*layers)
        self.num_layers = len(channels) + 1
        self.spatial_dims = spatial_dims
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, C, *spatial)`` -> ``(B, 1, *spatial)`` logits (coarse ``spatial / 2**num_layers`` if not
        upsampling)."""
        size = x.shape[2:]
        minimum = 2**self.num_layers
        if min(size) < minimum:
            raise ValueError(
                f"FCDiscriminator with {self.num_layers} stride-2 layers needs inputs of at least {minimum} pixels per "
                f"side, got {tuple(size)}; use fewer channels entries or larger patches."
            )
        logits = self.model(x)
        if not self.upsample:
            return logits
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return F.interpolate(logits, size=size, mode=mode, align_corners=False)
