"""Building blocks of the translation-segmentation networks of Vorontsov et al. (MedIA 2022, arXiv 1904.01636).

Every convolution here pads by reflection (as the authors' code) and can be wrapped in spectral norm; weights start
Kaiming-normal (:func:`kaiming_init`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dReflect", "LayerNorm2d", "crop_or_pad", "kaiming_init"]


class Conv2dReflect(nn.Module):
    """2D convolution with reflection padding to keep ``ceil(size / stride)``, optionally spectrally normalised.

    Inputs smaller than the padding (the coarsest discriminator scale of 48x48 images) are padded by replication,
    and inputs still smaller than the kernel are replicated up to it, so every layer yields at least one pixel.

    Args:
        in_channels, out_channels, kernel_size, stride: as ``nn.Conv2d``.
        spectral_norm: wrap the convolution in ``torch.nn.utils.parametrizations.spectral_norm``.
        bias: learn a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        spectral_norm: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)
        self.conv = nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, Cout, ceil(H / stride), ceil(W / stride))`` (for kernel >= stride)."""
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        if not any(pads):
            return self.conv(x)
        mode = "reflect" if max(pads) < min(x.shape[-2:]) else "replicate"
        return self.conv(F.pad(x, pads, mode=mode))


class LayerNorm2d(nn.Module):
    """Layer norm of the decoders and discriminator: per sample over ``(C, H, W)``, then a per-channel gain and
    bias (Vorontsov et al., Sec. 3.4 / appendix). ``num_sets`` independent (gain, bias) pairs share the statistics:
    the residual decoder keeps one set for translation and one for segmentation.

    Args:
        num_channels: C.
        num_sets: parameter sets; ``forward`` picks one by index.
        eps: added to the standard deviation.
    """

    def __init__(self, num_channels: int, num_sets: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_sets, num_channels))
        self.bias = nn.Parameter(torch.zeros(num_sets, num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, index: int = 0) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)`` normalised with parameter set ``index``."""
        flat = x.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1).view(-1, 1, 1, 1)
        x = (x - mean) / (std + self.eps)
        return x * self.weight[index].view(1, -1, 1, 1) + self.bias[index].view(1, -1, 1, 1)


def crop_or_pad(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Centre-crops or zero-pads ``(B, C, H, W)`` to ``(B, C, *size)`` (odd sizes such as 240x120 halve unevenly)."""
    pads = []
    for have, want in ((x.shape[-1], size[-1]), (x.shape[-2], size[-2])):
        diff = want - have
        pads += [diff // 2, diff - diff // 2]
    return F.pad(x, pads) if any(pads) else x


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights and zero biases for every convolution of ``module`` (spectral norm included: its
    ``original`` parameter is initialised)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.kaiming_normal_(weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
