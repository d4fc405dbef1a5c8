"""Multi-scale PatchGAN discriminator with spectral norm, GauGAN style, for MIPR (Dai, Zhu et al., arXiv 2204.10513,
Sec. 2.3: "The architecture of the discriminator follows the one used in the GauGAN, which uses a multi-scale design
with the Spectral Norm").

The network is MONAI's ``MultiScalePatchDiscriminator`` (Pix2PixHD design) with
``torch.nn.utils.parametrizations.spectral_norm`` registered on every convolution. Its input is the conditional
pair ``concat(one-hot label, image)`` on channels, as in GauGAN. Differences from NVlabs SPADE's
``MultiscaleDiscriminator``: MONAI's scales all see the full-resolution input, discriminator ``i`` having
``num_layers_d * (i + 1)`` layers (so a coarser output and a larger receptive field) where GauGAN average-pools the
input per scale; and spectral norm is on every convolution where GauGAN leaves the first and the last plain.
"""

from __future__ import annotations

from monai.networks.nets import MultiScalePatchDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["spectral_norm_multiscale_discriminator"]


def spectral_norm_multiscale_discriminator(
    *,
    in_channels: int,
    num_d: int = 2,
    num_layers_d: int = 3,
    spatial_dims: int = 2,
    channels: int = 64,
    out_channels: int = 1,
    minimum_size_im: int = 256,
    norm: str | tuple = "INSTANCE",
) -> MultiScalePatchDiscriminator:
    """A ``MultiScalePatchDiscriminator`` with spectral norm on all its convolutions.

    Args:
        in_channels: label classes + image channels of the ``concat(label, image)`` input (2 + 3 for ISIC).
        num_d: number of discriminators (scales); GauGAN: 2.
        num_layers_d: layers of the first discriminator (each further one has ``num_layers_d`` more); GauGAN: 3
            (its ``n_layers_D = 4`` counts the first convolution, which MONAI adds itself).
        spatial_dims: 2 or 3.
        channels: width of the first layer (doubled per layer); GauGAN: 64.
        out_channels: channels of each patch-logit map.
        minimum_size_im: smallest input side. MONAI's own check lets the deepest discriminator's last normalised
            layer reach 1 pixel, which instance norm rejects in training; a ``ValueError`` is raised here instead when
            that layer would have fewer than 2 pixels per side (``minimum_size_im // 2**(num_layers_d * num_d) - 1``).
        norm: normalisation of the inner layers (GauGAN: instance norm, without affine parameters).

    Returns:
        the network; ``forward(x)`` with ``x`` ``(B, in_channels, *spatial)`` returns ``(outputs, features)``:
        ``num_d`` patch-logit maps ``(B, out_channels, *patch_spatial)`` and, per discriminator, the list of its
        intermediate feature maps (final output excluded), for ``common.losses.gan.FeatureMatchingLoss``.
    """
    deepest = num_layers_d * num_d
    patch_size = minimum_size_im // 2**deepest - 1
    if patch_size < 2:
        raise ValueError(
            f"the deepest of {num_d} discriminators ({deepest} stride-2 convolutions, then a stride-1 one) reduces "
            f"{minimum_size_im} px to {patch_size} px; its instance norm needs at least 2. Use fewer layers or scales."
        )
    network = MultiScalePatchDiscriminator(
        num_d=num_d,
        num_layers_d=num_layers_d,
        spatial_dims=spatial_dims,
        channels=channels,
        in_channels=in_channels,
        out_channels=out_channels,
        norm=norm,
        minimum_size_im=minimum_size_im,
    )
    for conv in [m for m in network.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]:
        spectral_norm(conv)
    return network
