"""Run a 2D network on 2D images and, slice by slice, on 3D volumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer


class SliceOrImageInferer(Inferer):
    """2D sliding-window inference on ``(B, C, H, W)`` inputs; MONAI ``SliceInferer`` on ``(B, C, H, W, D)`` ones.

    One inference config then serves PNG images and NIfTI volumes alike (MONAI Label sends either).

    Args:
        roi_size: 2D window ``(h, w)``; inputs smaller than it are padded and cropped back.
        spatial_dim: axis of 3D volumes to slice along (0, 1 or 2), the axis the network was trained on.
        sw_batch_size: windows (slices) per forward pass.
        overlap: window overlap of the sliding window.
        mode: blending of overlapping windows ("constant" or "gaussian").
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        spatial_dim: int = 2,
        sw_batch_size: int = 8,
        overlap: float = 0.25,
        mode: str = "gaussian",
    ) -> None:
        super().__init__()
        if len(roi_size) != 2:
            raise ValueError(f"roi_size must be 2D (h, w) for a 2D network, got {tuple(roi_size)}.")
        kwargs = {"roi_size": tuple(roi_size), "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
        self.image_inferer = SlidingWindowInferer(**kwargs)
        self.volume_inferer = SliceInferer(spatial_dim=spatial_dim, **kwargs)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """inputs: (B, C, H, W) or (B, C, H, W, D). Returns the network output at the input's spatial size."""
        if inputs.ndim == 4:
            return self.image_inferer(inputs, network, *args, **kwargs)
        if inputs.ndim == 5:
            return self.volume_inferer(inputs, network, *args, **kwargs)
        raise ValueError(f"expected a (B, C, H, W) image or a (B, C, H, W, D) volume, got shape {tuple(inputs.shape)}.")
