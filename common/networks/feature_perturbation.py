"""U-Net with UniMatch's feature perturbation stream (Yang et al., CVPR 2023).

UniMatch (L. Yang, L. Qi, L. Feng, W. Zhang, Y. Shi, "Revisiting Weak-to-Strong Consistency in Semi-Supervised
Semantic Segmentation", CVPR 2023) adds to weak-to-strong consistency a prediction whose *features* are perturbed:
the decoder also runs on the encoder's features with channel dropout (``Dropout2d``, rate 0.5, on every encoder
output: the skip features and the bottleneck), and that prediction is trained against the weak view's pseudo-label.

:class:`FeaturePerturbationUNet` is MONAI's :class:`~monai.networks.nets.BasicUNet` (the 2D U-Net of the authors'
medical code: 16-256 channels, two 3 x 3 convolutions with batch norm and LeakyReLU per level, max-pool down,
transposed-convolution up) split into its encoder and decoder, so that one encoder pass feeds the clean and the
perturbed decoder pass. ``forward(x)`` is the plain U-Net (what inference, MONAI Label and the inferers call);
``forward(x, perturb=True)`` returns the clean and the perturbed logits stacked along the batch (one tensor, so that
the network stays TorchScript-compatible), and goes through a ``DistributedDataParallel`` wrapper like any forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

__all__ = ["FeaturePerturbationUNet"]


class FeaturePerturbationUNet(BasicUNet):
    """MONAI ``BasicUNet`` whose decoder can also run on channel-dropped encoder features (UniMatch's FP stream).

    Args:
        spatial_dims, in_channels, out_channels, features, act, norm, bias, upsample: as in
            :class:`monai.networks.nets.BasicUNet`; the defaults are the authors' medical U-Net (features
            ``(16, 32, 64, 128, 256, 16)``, batch norm, LeakyReLU with slope 0.01, transposed convolutions).
        dropout: BasicUNet's dropout rate in every convolution block (MONAI Label's MC-dropout scoring sets it).
        feature_dropout: channel dropout rate of the perturbed stream (UniMatch: 0.5), applied independently to each
            of the five encoder outputs.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256, 16),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.01, "inplace": True}),
        norm: str | tuple = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        feature_dropout: float = 0.5,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            act=act,
            norm=norm,
            bias=bias,
            dropout=dropout,
            upsample=upsample,
        )
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {feature_dropout}.")
        self.feature_dropout = feature_dropout

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder outputs ``[x0, ..., x4]`` of ``x`` ``(B, in_channels, H, W)``: ``x_i`` is
        ``(B, features[i], H / 2^i, W / 2^i)``."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        return [x0, x1, x2, x3, x4]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)`` from the encoder outputs of :meth:`encode`."""
        x0, x1, x2, x3, x4 = features
        u = self.upcat_4(x4, x3)
        u = self.upcat_3(u, x2)
        u = self.upcat_2(u, x1)
        u = self.upcat_1(u, x0)
        return self.final_conv(u)

    def perturb(self, feature: torch.Tensor) -> torch.Tensor:
        """Channel dropout of one encoder output (whole feature maps zeroed, the rest scaled by ``1 / (1 - p)``);
        the identity in eval mode."""
        return F.dropout2d(feature, self.feature_dropout, training=self.training)

    def forward(self, x: torch.Tensor, perturb: bool = False) -> torch.Tensor:
        """Args:
            x: ``(B, in_channels, H, W)`` images (``H``, ``W`` multiples of 16).
            perturb: also return the prediction from the perturbed features.

        Returns:
            ``(B, out_channels, H, W)`` logits; with ``perturb`` ``(2B, out_channels, H, W)``: the clean logits then
            the perturbed ones (``.chunk(2)`` splits them), from one encoder pass and one decoder pass over both.
        """
        features = self.encode(x)
        if not perturb:
            return self.decode(features)
        return self.decode([torch.cat([f, self.perturb(f)]) for f in features])
