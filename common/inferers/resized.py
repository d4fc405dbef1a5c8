"""Inference at a fixed network resolution: resize the input, run the network, resize its output back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer


class ResizedInferer(Inferer):
    """Run a 2D network at ``spatial_size`` on images of any size (MIPR trains on ISIC images resized to 256 x 256).

    The ``(B, C, H, W)`` input is resized to ``spatial_size`` by area interpolation (anti-aliased, like the training
    preparation), the network's ``(B, K, h, w)`` output is resized back to ``(H, W)`` bilinearly, so a softmax and
    argmax afterwards give a mask on the input's pixel grid and the saved file keeps the input's geometry.

    Args:
        spatial_size: ``(h, w)`` the network was trained at.
    """

    def __init__(self, spatial_size: Sequence[int]) -> None:
        super().__init__()
        if len(spatial_size) != 2:
            raise ValueError(f"spatial_size must be 2D (h, w), got {tuple(spatial_size)}.")
        self.spatial_size = tuple(int(n) for n in spatial_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """inputs: (B, C, H, W). Returns the network output resized to (B, K, H, W)."""
        if inputs.ndim != 4:
            raise ValueError(f"ResizedInferer expects (B, C, H, W) images, got shape {tuple(inputs.shape)}.")
        size = tuple(inputs.shape[2:])
        resized = F.interpolate(torch.as_tensor(inputs), size=self.spatial_size, mode="area")
        outputs = network(resized, *args, **kwargs)
        return F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)
