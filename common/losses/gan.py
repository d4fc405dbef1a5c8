"""GAN loss terms that MONAI does not provide: the discriminator feature-matching loss of pix2pixHD / SPADE, and the
hinge terms on whole-image discriminator scores of the translation model (Vorontsov et al., MedIA 2022).

Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs", CVPR 2018, Eq. 4;
used by SPADE (Park et al., CVPR 2019) and hence by MIPR's generator training (Dai, Zhu et al., arXiv 2204.10513).
MIPR's hinge adversarial terms come from ``monai.losses.PatchAdversarialLoss(criterion="hinge")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["FeatureMatchingLoss", "hinge_discriminator_loss", "hinge_generator_loss"]


class FeatureMatchingLoss(_Loss):
    """L1 distance between a multi-scale discriminator's intermediate features of fake and real inputs.

    ``loss = 1/num_d * sum_i reduce_j mean|F_ij(fake) - F_ij(real)|`` over discriminators ``i`` and their layers ``j``
    (final outputs excluded; the real features are detached, so only the generator gets gradients). The weight
    (SPADE: ``lambda_feat = 10``) is applied by the caller.

    Args:
        layer_reduction: how the layers of one discriminator are combined: ``"sum"`` (NVlabs SPADE / pix2pixHD, to
            which the weight 10 belongs) or ``"mean"``.

    Shapes:
        ``forward(fake_features, real_features)``: the feature lists of ``MultiScalePatchDiscriminator`` (its second
        output), ``num_d`` lists of ``(B, C_j, *spatial_j)`` tensors, the same shapes for fake and real. Returns a
        scalar.
    """

    def __init__(self, layer_reduction: str = "sum") -> None:
        super().__init__()
        if layer_reduction not in ("sum", "mean"):
            raise ValueError(f"layer_reduction must be 'sum' or 'mean', got {layer_reduction!r}.")
        self.layer_reduction = layer_reduction

    def forward(
        self, fake_features: Sequence[Sequence[torch.Tensor]], real_features: Sequence[Sequence[torch.Tensor]]
    ) -> torch.Tensor:
        if len(fake_features) != len(real_features) or not fake_features:
            raise ValueError(
                f"need the same, non-zero number of discriminators, got {len(fake_features)} fake and "
                f"{len(real_features)} real feature lists."
            )
        per_scale = []
        for fake, real in zip(fake_features, real_features):
            if len(fake) != len(real) or not fake:
                raise ValueError(
                    f"need the same, non-zero number of layers, got {len(fake)} fake and {len(real)} real."
                )
            layers = torch.stack([F.l1_loss(f, r.detach()) for f, r in zip(fake, real)])
            per_scale.append(layers.sum() if self.layer_reduction == "sum" else layers.mean())
        return torch.stack(per_scale).mean()


def _hinge_mean(scores: torch.Tensor | Sequence[torch.Tensor], sign: float) -> torch.Tensor:
    """``mean(relu(1 - sign * D))`` over every element of a score tensor; for a list of per-scale maps, that mean per
    scale, averaged over the scales (each scale weighs the same, as the translation authors' ``_foreach``)."""
    if isinstance(scores, torch.Tensor):
        return F.relu(1.0 - sign * scores).mean()
    return torch.stack([_hinge_mean(s, sign) for s in scores]).mean()


def hinge_discriminator_loss(
    real_scores: torch.Tensor | Sequence[torch.Tensor], fake_scores: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``.

    The scores are ``(B,)`` (each image's score averaged first: the hinge then acts on the average) or, as the
    translation authors, a list of per-scale ``(B, 1, h, w)`` maps, the hinge acting on every element (Vorontsov et
    al., MedIA 2022; genseg ``gan_objective``). The two differ: a map of +3 and -3 averages to 0 (hinge 1), while
    element by element the hinge is (0 + 4) / 2 = 2.
    """
    return _hinge_mean(real_scores, 1.0) + _hinge_mean(fake_scores, -1.0)


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-mean(D(fake))`` of ``(B,)`` discriminator scores on generated images."""
    return -fake_scores.mean()
