"""Recurrent convolutional network (RCNN) of Chen & Frey, "An Unsupervised Learning Model for Medical Image
Segmentation", MIDL 2020, built on the recurrent convolutional layer of Liang & Hu, CVPR 2015.

A recurrent convolutional block unfolds ``T`` time steps of a recurrent 3x3 convolution over a feed-forward
input ``f = conv_in(x)``::

    h(0) = PReLU(BN_0(f))
    h(t) = PReLU(BN_t(f + conv_rec(h(t - 1))))      t = 1..T

which is a feed-forward sub-network of depth ``T + 1`` (the paper: ``T = 3``, depth 4). Liang & Hu share
``conv_rec`` over the time steps (default here); the authors' Keras code uses a separate convolution per step
(``shared=False``). The network keeps full resolution (no pooling); a 1x1 convolution to one channel followed by a
PReLU (no sigmoid/softmax) is the head, and a pixel is foreground where the output is > 0.

The ACWE energy of a partition and of its inverse differ only by ``nu`` x area, so which phase an untrained
network calls foreground depends on its initialisation. The network therefore carries its foreground phase as a
buffer (saved in every checkpoint, so inference, MONAI Label and fine-tuning inherit it): with ``phase_sign = -1``
its output is ``-head(x)``, whose foreground ``output > 0`` is the complement of the head's. (``1 - head(x)`` would
complement the soft partition ``clamp(output, 0, 1)`` exactly, but then every pixel still in the clamp's open
interval (0, 1), half of them on the ``cells`` demo after one epoch, stays foreground either way.)
:class:`common.handlers.ForegroundPhaseHandler` sets it once, from unlabelled training images, early in training.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RecurrentConvBlock", "RecurrentConvNet"]


class RecurrentConvBlock(nn.Module):
    """One recurrent convolutional layer unfolded over ``steps`` time steps (Liang & Hu 2015, eq. 1-2).

    Args:
        in_channels: input channels.
        out_channels: filters of the feed-forward and the recurrent convolutions (16 in Chen & Frey).
        steps: time steps ``T`` (3 in Chen & Frey).
        shared: one recurrent convolution for all time steps (the RCNN of Liang & Hu); ``False``: one per step (the
            authors' code). Each step has its own batch norm and (channel-wise) PReLU either way.
        kernel_size: odd kernel size of both convolutions.
    """

    def __init__(
        self, in_channels: int, out_channels: int, steps: int = 3, shared: bool = True, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        padding = kernel_size // 2
        self.conv_in = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        if shared:
            conv = nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding)
            self.conv_rec = nn.ModuleList([conv] * steps)
        else:
            self.conv_rec = nn.ModuleList(
                [nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding) for _ in range(steps)]
            )
        self.norm_in = nn.BatchNorm2d(out_channels)
        self.act_in = nn.PReLU(out_channels)
        self.norms = nn.ModuleList([nn.BatchNorm2d(out_channels) for _ in range(steps)])
        self.acts = nn.ModuleList([nn.PReLU(out_channels) for _ in range(steps)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``."""
        f = self.conv_in(x)
        h = self.act_in(self.norm_in(f))
        for conv, norm, act in zip(self.conv_rec, self.norms, self.acts):
            h = act(norm(f + conv(h)))
        return h


class RecurrentConvNet(nn.Module):
    """The segmentation RCNN of Chen & Frey (MIDL 2020, Sec. 2 "ConvNet Architecture").

    ``num_blocks`` recurrent blocks of ``features`` filters at full resolution, then a 1x1 convolution to
    ``out_channels`` and a PReLU. The output is a real-valued map, not a probability: foreground is ``output > 0``;
    the losses of :mod:`common.losses.acwe` read it as ``clamp(output, 0, 1)``.

    Args:
        in_channels: image channels (1 for SPECT).
        out_channels: output channels (1: a binary segmentation).
        features: filters of every recurrent block (16).
        num_blocks: recurrent blocks (3).
        steps: time steps ``T`` per block (3).
        shared: share the recurrent convolution over time steps (Liang & Hu; default) or not (the authors' code).

    Input ``(B, in_channels, H, W)`` of any ``H, W`` (192 x 192 in the paper); output ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: int = 16,
        num_blocks: int = 3,
        steps: int = 3,
        shared: bool = True,
    ) -> None:
        super().__init__()
        channels = [in_channels] + [features] * num_blocks
        self.blocks = nn.ModuleList(
            [RecurrentConvBlock(channels[i], channels[i + 1], steps, shared) for i in range(num_blocks)]
        )
        self.head = nn.Conv2d(features, out_channels, kernel_size=1)
        self.head_act = nn.PReLU(out_channels)
        self.register_buffer("phase_sign", torch.ones(()))  # +1: the head's output; -1: its negation
        self.register_buffer("phase_decided", torch.zeros(()))  # 1 once the foreground phase has been decided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` real-valued map (foreground: > 0)."""
        for block in self.blocks:
            x = block(x)
        return self.phase_sign * self.head_act(self.head(x))

    def set_foreground_phase(self, flip: bool) -> None:
        """Record the foreground-phase decision: ``flip`` complements the output from now on."""
        if flip:
            self.phase_sign.mul_(-1)
        self.phase_decided.fill_(1)

    def freeze_blocks(self, num_blocks: int = 1) -> list[nn.Parameter]:
        """Stop gradients to the first ``num_blocks`` blocks (the authors fine-tune with the first block frozen).

        Their batch-norm running statistics still update in training mode. Returns the parameters that remain
        trainable, for the optimiser.
        """
        for block in self.blocks[:num_blocks]:
            for p in block.parameters():
                p.requires_grad_(False)
        return [p for p in self.parameters() if p.requires_grad]
