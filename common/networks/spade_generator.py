"""Label-to-image generator ``G(x, t)`` of MIPR (Dai, Zhu et al., arXiv 2204.10513, Sec. 2.3 and Fig. 2).

An encoder of strided convolution blocks maps the real image ``x`` to a deep feature map; a decoder of SPADE+
residual blocks (Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR 2019) turns it
back into an image whose layout follows the label map ``t``. Unlike SPADE's style encoder, the decoder starts from the
encoder's feature map itself (no VAE sampling): MIPR "directly generates synthesis images from the encoder's feature
map rather than the reparametrization trick", so that the output keeps the pixels of ``x`` rearranged to match ``t``.

SPADE+ is SPADE normalisation plus a detail path. The paper: "the SPADE+ block contains SPADE block and detailed
path [...] We add a new path alpha based on the SPADE block to increase the details from the Sobel operator". It gives
no formula (the text names alpha next to SPADE's gamma and beta; Fig. 2(b) is not available as text), so here (our
reading)::

    SPADE+(h, t, s) = norm(h) * (1 + gamma(t)) + beta(t) + alpha(s)

where ``s`` is the Sobel gradient magnitude of the input image (one map per image channel), area-resized to the
resolution of ``h``, and ``alpha`` is a conv - LeakyReLU - conv branch of the same shape as SPADE's gamma and beta
branches, mapping ``s`` to the channels of ``h``. The detail term is added like beta, so SPADE+ reduces to SPADE
where ``alpha`` outputs zero (nearly everywhere at initialisation, given the small init gain and zero biases).

Architecture details follow NVlabs SPADE (``SPADEGenerator``, ``SPADEResnetBlock``, ``ConvEncoder``): residual
blocks of two SPADE(+)-LeakyReLU(0.2)-conv3x3 paths with a learned SPADE(+)-conv1x1 shortcut when the widths differ,
spectral norm on the block and encoder convolutions, nearest upsampling, LeakyReLU + conv3x3 + tanh at the end, and
xavier-normal initialisation with gain 0.02.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import SPADE, Convolution
from monai.networks.layers import Conv
from monai.transforms import SobelGradients
from monai.utils import convert_to_tensor
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["SPADEPlus", "SPADEPlusGenerator", "SPADEPlusResBlock", "sobel_magnitude"]

_LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _xavier_init(module: nn.Module, gain: float = 0.02) -> None:
    """NVlabs SPADE ``init_weights("xavier", 0.02)`` for a convolution (spectral-normed ones are initialised before
    their parametrisation is registered, and skipped here)."""
    if isinstance(module, _CONVS) and not parametrize.is_parametrized(module):
        nn.init.xavier_normal_(module.weight, gain=gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _spectral(conv: nn.Module) -> nn.Module:
    """Initialises ``conv`` and wraps its weight in spectral normalisation."""
    _xavier_init(conv)
    return spectral_norm(conv)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradient magnitude.

    ``monai.transforms.SobelGradients`` (normalised 3-tap kernels, reflect padding) is applied to the batch viewed as a
    stack of ``B * C`` single-channel images (its documented ``BxH[xW]`` form), then the gradients along the spatial
    axes are combined into their Euclidean norm.

    Args:
        image: ``(B, C, *spatial)``.

    Returns:
        ``(B, C, *spatial)`` gradient magnitude (for images in [-1, 1] it lies in ``[0, sqrt(len(spatial))]``).
    """
    batch, channels, *spatial = image.shape
    grads = SobelGradients()(image.reshape(batch * channels, *spatial))
    grads = convert_to_tensor(grads, track_meta=False).reshape(len(spatial), batch, channels, *spatial)
    return torch.linalg.vector_norm(grads, dim=0)


class SPADEPlus(SPADE):
    """SPADE+ normalisation: ``norm(h) * (1 + gamma(t)) + beta(t) + alpha(s)`` (MIPR Fig. 2(b), form: module doc).

    Built on ``monai.networks.blocks.SPADE``. MONAI's SPADE (1.6.1) builds its gamma and beta convolutions with
    ``Convolution``'s default instance norm, which forces every gamma/beta channel to zero spatial mean and unit
    variance (a single-class label map then gives gamma = beta = 0); NVlabs SPADE uses plain convolutions, so that
    norm is dropped here.

    Args:
        label_nc: channels of the label map ``t`` (one-hot classes).
        norm_nc: channels of the normalised activation ``h``.
        detail_nc: channels of the detail map ``s`` (0: no detail path, plain SPADE).
        kernel_size: kernel of the gamma / beta / alpha branches.
        spatial_dims: 2 or 3.
        hidden_channels: width of the hidden layer of the branches (NVlabs: 128).
        norm: parameter-free normalisation of ``h``.
    """

    def __init__(
        self,
        label_nc: int,
        norm_nc: int,
        detail_nc: int = 0,
        kernel_size: int = 3,
        spatial_dims: int = 2,
        hidden_channels: int = 128,
        norm: str | tuple = "INSTANCE",
    ) -> None:
        super().__init__(
            label_nc=label_nc,
            norm_nc=norm_nc,
            kernel_size=kernel_size,
            spatial_dims=spatial_dims,
            hidden_channels=hidden_channels,
            norm=norm,
        )
        self.mlp_gamma.adn = nn.Identity()
        self.mlp_beta.adn = nn.Identity()
        self.mlp_alpha: nn.Module | None = None
        if detail_nc > 0:
            self.mlp_alpha = nn.Sequential(
                Convolution(spatial_dims, detail_nc, hidden_channels, kernel_size=kernel_size, act=_LEAKY, norm=None),
                Convolution(spatial_dims, hidden_channels, norm_nc, kernel_size=kernel_size, conv_only=True),
            )

    def forward(self, x: torch.Tensor, segmap: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            x: ``(B, norm_nc, *spatial)`` activation.
            segmap: ``(B, label_nc, *label_spatial)`` one-hot label map, resized (nearest) to ``x``.
            detail: ``(B, detail_nc, *image_spatial)`` Sobel magnitude, area-resized to ``x``; required with a detail
                path, ignored without.

        Returns:
            ``(B, norm_nc, *spatial)``.
        """
        out = super().forward(x, segmap)
        if self.mlp_alpha is None:
            return out
        if detail is None:
            raise ValueError("SPADEPlus with a detail path needs the detail map.")
        if detail.shape[2:] != x.shape[2:]:
            detail = F.interpolate(detail, size=x.shape[2:], mode="area")
        return out + self.mlp_alpha(detail)


class SPADEPlusResBlock(nn.Module):
    """NVlabs ``SPADEResnetBlock`` with SPADE+ normalisation.

    ``out = shortcut(h) + conv_1(act(norm_1(conv_0(act(norm_0(h))))))`` with ``shortcut = conv_s(norm_s(h))`` (1x1,
    no bias) when ``in_channels != out_channels`` and the identity otherwise; the middle width is
    ``min(in_channels, out_channels)``; act is LeakyReLU(0.2); the convolutions are spectrally normalised.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: widths of ``h`` and of the output.
        label_channels: channels of the one-hot label map.
        detail_channels: channels of the Sobel detail map (0: plain SPADE blocks).
        hidden_channels: hidden width of the SPADE(+) branches.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        detail_channels: int = 0,
        hidden_channels: int = 128,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        middle = min(in_channels, out_channels)

        def spade(channels: int) -> SPADEPlus:
            return SPADEPlus(label_channels, channels, detail_channels, 3, spatial_dims, hidden_channels)

        self.norm_0 = spade(in_channels)
        self.conv_0 = _spectral(conv(in_channels, middle, 3, padding=1))
        self.norm_1 = spade(middle)
        self.conv_1 = _spectral(conv(middle, out_channels, 3, padding=1))
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = spade(in_channels)
            self.conv_s = _spectral(conv(in_channels, out_channels, 1, bias=False))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, label: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``; ``label`` and ``detail`` as in
        :meth:`SPADEPlus.forward`."""
        shortcut = self.conv_s(self.norm_s(x, label, detail)) if self.learned_shortcut else x
        dx = self.conv_0(self.act(self.norm_0(x, label, detail)))
        dx = self.conv_1(self.act(self.norm_1(dx, label, detail)))
        return shortcut + dx


class SPADEPlusGenerator(nn.Module):
    """MIPR's generator ``G(x, t)``: image encoder + SPADE+ decoder (module doc).

    With ``channels = (c_0, ..., c_{n-1})`` the encoder has ``n`` stride-2 conv3x3 - instance norm - LeakyReLU(0.2)
    blocks (``c_i`` channels at ``1 / 2**(i+1)`` of the input size); the decoder runs a SPADE+ residual block
    ``c_{n-1} -> c_{n-1}`` at the deepest level, then ``n`` times nearest x2 upsampling followed by a block
    ``c_{i+1} -> c_i`` (the last one ``c_0 -> c_0`` at full size), and ends with LeakyReLU(0.2), conv3x3 and tanh
    (NVlabs ``SPADEGenerator`` with ``up_i`` blocks and ``conv_img``).

    Args:
        spatial_dims: 2 (images) or 3 (volumes).
        in_channels: channels of the image ``x`` (3 for ISIC dermoscopy).
        label_channels: classes of the one-hot label ``t``, background included.
        out_channels: channels of the generated image.
        channels: encoder widths, shallow to deep; the input size must be divisible by ``2 ** len(channels)``.
        spade_hidden_channels: hidden width of the gamma / beta (/ alpha) branches (NVlabs: 128).
        detail_path: SPADE+ (True) or plain SPADE blocks (False, the paper's "SPADE" comparison of Fig. 4-5).

    Shapes:
        ``forward(image (B, in_channels, *spatial) in [-1, 1], label (B, label_channels, *spatial) one-hot float)``
        -> ``(B, out_channels, *spatial)`` in [-1, 1].
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        label_channels: int = 2,
        out_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512),
        spade_hidden_channels: int = 128,
        detail_path: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must name at least one encoder width.")
        self.channels = channels
        self.detail_path = detail_path
        self.encoder = nn.Sequential()
        previous = in_channels
        for width in channels:
            block = Convolution(spatial_dims, previous, width, strides=2, kernel_size=3, norm="INSTANCE", act=_LEAKY)
            _spectral(block.conv)
            self.encoder.append(block)
            previous = width
        detail_channels = in_channels if detail_path else 0

        def res_block(cin: int, cout: int) -> SPADEPlusResBlock:
            return SPADEPlusResBlock(
                spatial_dims, cin, cout, label_channels, detail_channels, hidden_channels=spade_hidden_channels
            )

        self.head = res_block(channels[-1], channels[-1])
        widths = list(reversed(channels)) + [channels[0]]
        self.up_blocks = nn.ModuleList(res_block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:]))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.act = nn.LeakyReLU(0.2)
        self.conv_out = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, 3, padding=1)
        self.apply(_xavier_init)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image: ``(B, in_channels, *spatial)`` in [-1, 1], the image whose pixels are rearranged.
            label: ``(B, label_channels, *spatial)`` one-hot float label map the output must follow.

        Returns:
            ``(B, out_channels, *spatial)`` in [-1, 1].

        Raises:
            ValueError: a spatial size not divisible by ``2 ** len(channels)``.
        """
        factor = 2 ** len(self.channels)
        size = tuple(image.shape[2:])
        if any(s % factor for s in size):
            raise ValueError(
                f"SPADEPlusGenerator with {len(self.channels)} downsampling blocks needs spatial sizes divisible by "
                f"{factor}, got {size}."
            )
        detail = sobel_magnitude(image) if self.detail_path else None
        h = self.head(self.encoder(image), label, detail)
        for block in self.up_blocks:
            h = block(self.upsample(h), label, detail)
        return torch.tanh(self.conv_out(self.act(h)))
