"""Encoder, decoders and discriminator of the translation-based semi-supervised segmenter of Vorontsov et al.,
"Towards annotation-efficient segmentation via image-to-image translation", MedIA 2022 (arXiv 1904.01636).

An encoder ``E`` splits an image into a common code ``c`` (anatomy shared by the domains A, "absent", and P,
"present") and a unique code ``u`` (what only P has), Eq. 1. A common decoder ``G_com(c)`` draws the "healthy" image,
a residual decoder ``G_res(c, u)`` the additive residual that puts the target back (Eq. 2-4); the residual decoder,
with its own normalisation parameters (mode ``"segment"``), is also the segmentation decoder (Sec. 3.3). Values as in
the authors' code (github.com/veugene/genseg), as recorded in the project's method specification.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from common.networks.translation_blocks import Conv2dReflect, LayerNorm2d, crop_or_pad, kaiming_init

__all__ = [
    "PRESETS",
    "AdaINParameters",
    "MultiScaleDiscriminator",
    "TranslationDecoder",
    "TranslationEncoder",
    "TranslationSegNet",
    "adaptive_instance_norm",
    "code_size",
    "scaled_channels",
]

# input size -> (encoder widths: stem then one per stride-2 block, discriminator widths). 48x48 synthetic tasks drop
# the first encoder block (the stem starts at 32), the decoders' last block, and start the discriminator at 128 with
# three stride-2 convs, 128-256-512 (the authors' bds3_003 config: num_channels_list [N//4, N//2, N], N = 512).
PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "48x48": ((32, 64, 128, 256, 512), (128, 256, 512)),
    "128x128": ((16, 32, 64, 128, 256, 512), (64, 128, 256, 512)),
    "240x120": ((16, 32, 64, 128, 256, 512), (64, 128, 256, 512)),
    "256x256": ((16, 32, 64, 128, 256, 512), (64, 128, 256, 512)),
}
UNIQUE_FRACTION = 0.25  # 512 bottleneck channels: 384 common, 128 unique


def code_size(size: str, num_downsamplings: int) -> tuple[int, int]:
    """``(h, w)`` of the code for a ``PRESETS`` key such as ``"240x120"``: each stride-2 block takes the ceiling of
    half the size (reflection padding keeps odd sizes)."""
    height, width = (int(n) for n in size.split("x"))
    for _ in range(num_downsamplings):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


def scaled_channels(channels: Sequence[int], width: float) -> tuple[int, ...]:
    """``channels`` times the width multiplier ``width`` (reduced CPU runs), at least 1 each."""
    return tuple(max(1, int(round(c * width))) for c in channels)


class _EncoderBlock(nn.Module):
    """Instance norm (no affine) -> ReLU -> 3x3 stride-2 conv, plus a 1x1 stride-2 projection as short skip."""

    def __init__(self, in_channels: int, out_channels: int, spectral_norm: bool) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(in_channels, affine=False)
        self.conv = Conv2dReflect(in_channels, out_channels, 3, stride=2, spectral_norm=spectral_norm)
        self.shortcut = Conv2dReflect(in_channels, out_channels, 1, stride=2, spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, Cout, ceil(H / 2), ceil(W / 2))``."""
        return self.conv(F.relu(self.norm(x))) + self.shortcut(x)


class TranslationEncoder(nn.Module):
    """Encoder ``E``: 3x3 stem conv, stride-2 NRC blocks with instance norm, then instance norm + ReLU; the
    bottleneck splits into the common code ``c`` and the unique code ``u`` (Vorontsov et al., Eq. 1).

    Args:
        in_channels: image channels.
        channels: stem width then the width after each stride-2 block (the last is the bottleneck).
        unique_channels: channels of ``u`` (the rest of the bottleneck is ``c``).
        spectral_norm: spectrally normalise the convolutions.
    """

    def __init__(
        self, in_channels: int, channels: Sequence[int], unique_channels: int, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        self.stem = Conv2dReflect(in_channels, channels[0], 3, spectral_norm=spectral_norm)
        self.blocks = nn.ModuleList(
            _EncoderBlock(cin, cout, spectral_norm) for cin, cout in zip(channels[:-1], channels[1:])
        )
        self.out_norm = nn.InstanceNorm2d(channels[-1], affine=False)
        self.unique_channels = unique_channels
        self.common_channels = channels[-1] - unique_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(B, Cin, H, W)`` -> common code ``(B, Cc, h, w)``, unique code ``(B, Cu, h, w)`` with
        ``h = H / 2**num_blocks`` (rounded up), and the long skips: the inputs of the stride-2 blocks, finest first."""
        x = self.stem(x)
        skips = []
        for block in self.blocks:
            skips.append(x)
            x = block(x)
        x = F.relu(self.out_norm(x))
        return x[:, : self.common_channels], x[:, self.common_channels :], skips


class _DecoderBlock(nn.Module):
    """Layer norm -> ReLU -> nearest x2 upsampling -> conv (the first block: upsampling -> conv only), with an
    optional short skip (upsampled input, 1x1 projection when the width changes)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        first: bool,
        short_skip: bool,
        num_norm_sets: int,
        spectral_norm: bool,
    ) -> None:
        super().__init__()
        self.norm = None if first else LayerNorm2d(in_channels, num_norm_sets)
        self.conv = Conv2dReflect(in_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.short_skip = short_skip and not first
        self.shortcut = (
            Conv2dReflect(in_channels, out_channels, 1, spectral_norm=spectral_norm)
            if self.short_skip and in_channels != out_channels
            else None
        )

    def forward(
        self, x: torch.Tensor, norm_index: int, adain: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``(B, Cin, h, w)`` -> ``(B, Cout, 2h, 2w)``; ``adain`` (per-sample gain and bias, ``(B, Cin)`` each)
        replaces the layer norm by an adaptive instance norm."""
        if self.norm is None:
            y = x
        elif adain is not None:
            y = F.relu(adaptive_instance_norm(x, *adain))
        else:
            y = F.relu(self.norm(x, norm_index))
        y = self.conv(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        if self.short_skip:
            skip = F.interpolate(x, scale_factor=2.0, mode="nearest")
            y = y + (skip if self.shortcut is None else self.shortcut(skip))
        return y


def adaptive_instance_norm(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm of ``x`` ``(B, C, H, W)`` with per-sample ``gain`` and ``bias`` ``(B, C)`` (AdaIN, as MUNIT's
    ``AdaptiveInstanceNorm2d`` that the authors use)."""
    return F.instance_norm(x, eps=eps) * gain[:, :, None, None] + bias[:, :, None, None]


class AdaINParameters(nn.Module):
    """The MLP of the authors' ``bds3_003`` residual decoder that predicts, from the flattened decoder input, the
    per-sample AdaIN gains and biases of mode ``"segment"``: ``mlp(n_layers=4, n_hidden=256)`` of genseg, linear layers
    without nonlinearity whose middle layer is one ``nn.Linear`` applied twice (their list repeats the same module),
    Kaiming-normal weights, no spectral norm.

    Args:
        in_features: ``C * h * w`` of the decoder input code.
        out_features: twice the channels of every normalised layer.
        hidden: hidden width (256).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 256) -> None:
        super().__init__()
        self.first = nn.Linear(in_features, hidden)
        self.middle = nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, out_features)
        for layer in (self.first, self.middle, self.last):
            nn.init.kaiming_normal_(layer.weight)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, out_features)``."""
        return self.last(self.middle(self.middle(self.first(code.flatten(1)))))


class TranslationDecoder(nn.Module):
    """Decoder ``G_com`` / ``G_res`` (Vorontsov et al., Sec. 3.4): up-blocks with layer norm, each followed by a
    compressed long skip (the encoder skip of that resolution through instance norm and a 1x1 conv to ONE channel,
    concatenated), then norm -> ReLU -> conv -> tanh (mode ``"translate"``). With ``segmentation_head`` the mode
    ``"segment"`` ends in norm -> ReLU -> conv -> ReLU -> 1x1 classifier instead, returning logits (neither conv
    spectrally normalised). With two norm sets, ``"translate"`` and ``"segment"`` use separate layer-norm gains and
    biases over the same convolutions; with ``segment_norm="adain"`` mode ``"segment"`` instead normalises every
    layer by instance norm with gains and biases that :class:`AdaINParameters` predicts from the code (the authors'
    ``bds3_003`` configuration).

    Args:
        in_channels: channels of the input code.
        channels: widths of the up-blocks, coarsest first.
        out_channels: image channels of the translation output.
        kernel_size: 3 (common decoder) or 5 (residual decoder).
        short_skip: residual short skips in the up-blocks (common decoder).
        skip_channels: widths of the encoder's long skips, finest first (as the encoder returns them); None: no long
            skips (the autoencoder baseline's decoder).
        num_norm_sets: 1, or 2 for the residual decoder's translate / segment parameter sets.
        segmentation_head: build the ``"segment"`` head.
        translation_head: build the ``"translate"`` output (norm -> ReLU -> conv -> tanh); False for a decoder that
            only segments (the baselines', :mod:`common.networks.translation_baseline`).
        spectral_norm: spectrally normalise the convolutions (except the segmentation head's).
        segment_norm: ``"layer"`` (the second layer-norm set of ``num_norm_sets`` 2) or ``"adain"`` (needs
            ``segmentation_head``, ``num_norm_sets`` 1 and ``code_size``).
        code_size: ``(h, w)`` of the input code, for ``"adain"``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        out_channels: int,
        kernel_size: int = 3,
        short_skip: bool = True,
        skip_channels: Sequence[int] | None = None,
        num_norm_sets: int = 1,
        segmentation_head: bool = False,
        spectral_norm: bool = True,
        segment_norm: str = "layer",
        code_size: Sequence[int] | None = None,
        translation_head: bool = True,
    ) -> None:
        super().__init__()
        if not (translation_head or segmentation_head):
            raise ValueError("a decoder needs translation_head or segmentation_head.")
        if segment_norm not in ("layer", "adain"):
            raise ValueError(f"segment_norm must be 'layer' or 'adain', got {segment_norm!r}.")
        if segment_norm == "adain" and (not segmentation_head or num_norm_sets != 1 or code_size is None):
            raise ValueError("segment_norm 'adain' needs segmentation_head, num_norm_sets 1 and code_size.")
        long_skips = skip_channels is not None
        extra = 1 if long_skips else 0
        widths = [in_channels] + [c + extra for c in channels]
        self.blocks = nn.ModuleList(
            _DecoderBlock(widths[i], channels[i], kernel_size, i == 0, short_skip, num_norm_sets, spectral_norm)
            for i in range(len(channels))
        )
        self.long_skips = long_skips
        self.num_norm_sets = num_norm_sets
        self.out_norm = LayerNorm2d(widths[-1], num_norm_sets)
        self.out_conv = (
            Conv2dReflect(widths[-1], out_channels, kernel_size, spectral_norm=spectral_norm)
            if translation_head
            else None
        )
        self.seg_conv = (
            Conv2dReflect(widths[-1], channels[-1], kernel_size, spectral_norm=False) if segmentation_head else None
        )
        self.classifier = nn.Conv2d(channels[-1], 1, 1) if segmentation_head else None
        # channels of every layer norm in order (blocks after the first, then the output norm)
        self.norm_channels = [widths[i] for i in range(1, len(channels))] + [widths[-1]]
        self.adain = (
            AdaINParameters(in_channels * int(code_size[0]) * int(code_size[1]), 2 * sum(self.norm_channels))
            if segment_norm == "adain"
            else None
        )
        self.compressors = nn.ModuleList(
            nn.Sequential(nn.InstanceNorm2d(c, affine=False), Conv2dReflect(c, 1, 1, spectral_norm=spectral_norm))
            for c in (list(skip_channels)[::-1][: len(channels)] if long_skips else [])
        )

    def forward(
        self, code: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int], mode: str = "translate"
    ) -> torch.Tensor:
        """Decodes ``code`` ``(B, Cin, h, w)`` with the encoder ``skips`` (finest first) to ``(B, out_channels,
        *out_size)`` in [-1, 1] (mode ``"translate"``) or ``(B, 1, *out_size)`` segmentation logits (``"segment"``)."""
        if mode not in ("translate", "segment"):
            raise ValueError(f"mode must be 'translate' or 'segment', got {mode!r}.")
        if mode == "segment" and self.classifier is None:
            raise ValueError("this decoder has no segmentation head.")
        if mode == "translate" and self.out_conv is None:
            raise ValueError("this decoder has no translation head.")
        index = 1 if mode == "segment" and self.num_norm_sets > 1 else 0
        adain = self._adain_parameters(code) if mode == "segment" and self.adain is not None else None
        x = code
        coarse_first = list(skips)[::-1]
        for i, block in enumerate(self.blocks):
            x = block(x, index, None if adain is None or i == 0 else adain[i - 1])
            if self.long_skips:
                skip = coarse_first[i]
                x = torch.cat([crop_or_pad(x, skip.shape[-2:]), self.compressors[i](skip)], dim=1)
        x = F.relu(self.out_norm(x, index) if adain is None else adaptive_instance_norm(x, *adain[-1]))
        if mode == "segment":
            return crop_or_pad(self.classifier(F.relu(self.seg_conv(x))), out_size)
        return crop_or_pad(torch.tanh(self.out_conv(x)), out_size)

    def _adain_parameters(self, code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-sample (gain, bias) ``(B, C)`` of every normalised layer, in :attr:`norm_channels` order."""
        params = self.adain(code).split([2 * c for c in self.norm_channels], dim=1)
        return [(p[:, :c], p[:, c:]) for p, c in zip(params, self.norm_channels)]


class TranslationSegNet(nn.Module):
    """Generator and segmenter of Vorontsov et al. (2022): encoder ``E``, common decoder ``G_com`` (3x3 kernels,
    short skips), residual decoder ``G_res`` (5x5 kernels, no short skips, two norm sets, segmentation head).

    ``forward`` is the segmenter, so MONAI evaluators and inferers use the network directly: it returns
    ``(B, 2, H, W)`` logits ``[0, s]`` whose softmax is ``[1 - sigmoid(s), sigmoid(s)]``, ``s`` being the
    segmentation logit of the paper's sigmoid output.

    Args:
        in_channels: image channels (1 for MNIST, 4 for BraTS, 1 for LiTS).
        size: a key of :data:`PRESETS` (``"48x48"``, ``"128x128"``, ``"240x120"``, ``"256x256"``).
        width: width multiplier of every layer (1.0 as the paper; smaller for CPU runs).
        separate_segmentation_decoder: the "sep dec" ablation: a separate decoder segments, ``G_res`` only
            translates.
        spectral_norm: spectrally normalise the convolutions (all but the segmentation output conv and classifier).
        segment_norm: how ``G_res`` normalises in mode ``"segment"``: ``"layer"``, its second layer-norm parameter
            set (the method specification), or ``"adain"``, adaptive instance norm whose gains and biases an MLP
            predicts from the code (the authors' ``bds3_003``, see :class:`AdaINParameters`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        size: str = "48x48",
        width: float = 1.0,
        separate_segmentation_decoder: bool = False,
        spectral_norm: bool = True,
        segment_norm: str = "layer",
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}.")
        if segment_norm not in ("layer", "adain"):
            raise ValueError(f"segment_norm must be 'layer' or 'adain', got {segment_norm!r}.")
        if separate_segmentation_decoder and segment_norm != "layer":
            raise ValueError(
                "segment_norm 'adain' switches the shared residual decoder to AdaIN in mode 'segment'; the separate "
                "segmentation decoder (separate_segmentation_decoder=True) has its own layer norm: use 'layer'."
            )
        enc_channels = scaled_channels(PRESETS[size][0], width)
        bottleneck = enc_channels[-1]
        unique = max(1, int(round(bottleneck * UNIQUE_FRACTION)))
        dec_channels = enc_channels[-2::-1]
        skip_channels = enc_channels[:-1]
        self.encoder = TranslationEncoder(in_channels, enc_channels, unique, spectral_norm)
        common = self.encoder.common_channels
        sn = spectral_norm
        self.common_decoder = TranslationDecoder(
            common, dec_channels, in_channels, 3, True, skip_channels, spectral_norm=sn
        )
        self.residual_decoder = TranslationDecoder(
            bottleneck,
            dec_channels,
            in_channels,
            5,
            short_skip=False,
            skip_channels=skip_channels,
            num_norm_sets=1 if separate_segmentation_decoder or segment_norm == "adain" else 2,
            segmentation_head=not separate_segmentation_decoder,
            spectral_norm=sn,
            segment_norm="layer" if separate_segmentation_decoder else segment_norm,
            code_size=code_size(size, len(enc_channels) - 1),
        )
        self.segmentation_decoder = (
            TranslationDecoder(
                bottleneck,
                dec_channels,
                in_channels,
                5,
                short_skip=False,
                skip_channels=skip_channels,
                segmentation_head=True,
                spectral_norm=sn,
            )
            if separate_segmentation_decoder
            else None
        )
        self.unique_channels = unique
        kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(B, Cin, H, W)`` -> ``(c, u, skips)``, see :class:`TranslationEncoder`."""
        return self.encoder(x)

    def healthy(self, c: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int]) -> torch.Tensor:
        """``G_com(c)``: the image without the target, ``(B, Cin, *out_size)`` in [-1, 1]."""
        return self.common_decoder(c, skips, out_size)

    def residual(
        self, c: torch.Tensor, u: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int]
    ) -> torch.Tensor:
        """``G_res(c, u)`` in mode ``"translate"``: the additive residual ``(B, Cin, *out_size)`` in [-1, 1]."""
        return self.residual_decoder(torch.cat([c, u], dim=1), skips, out_size, "translate")

    def segment_logits(
        self, c: torch.Tensor, u: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int]
    ) -> torch.Tensor:
        """Segmentation logits ``(B, 1, *out_size)`` (sigmoid gives the paper's output): ``G_res`` in mode
        ``"segment"``, or the separate segmentation decoder of the "sep dec" ablation."""
        decoder = self.segmentation_decoder or self.residual_decoder
        return decoder(torch.cat([c, u], dim=1), skips, out_size, "segment")

    def segmentation_parameters(self) -> list[nn.Parameter]:
        """The parameters that only the segmentation output uses: the head of ``G_res`` (output conv and classifier)
        and, with ``segment_norm="adain"``, its AdaIN MLP; for the "sep dec" ablation the whole segmentation decoder.
        The segment-mode layer-norm set of ``G_res`` is not among them: it shares its ``(2, C)`` tensors with the
        translate-mode set, so an optimiser cannot treat it apart."""
        if self.segmentation_decoder is not None:
            return list(self.segmentation_decoder.parameters())
        decoder = self.residual_decoder
        modules = [decoder.seg_conv, decoder.classifier] + ([decoder.adain] if decoder.adain is not None else [])
        return [p for m in modules for p in m.parameters()]

    def translate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P -> A translation of ``(B, Cin, H, W)`` images: the healthy image ``G_com(c)`` and the residual
        ``G_res(c, u)`` (their sum reconstructs ``x``), both ``(B, Cin, H, W)``."""
        c, u, skips = self.encode(x)
        return self.healthy(c, skips, x.shape[-2:]), self.residual(c, u, skips, x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, 2, H, W)`` logits ``[0, s]`` (softmax channel 1 = sigmoid(s))."""
        c, u, skips = self.encode(x)
        s = self.segment_logits(c, u, skips, x.shape[-2:])
        return torch.cat([torch.zeros_like(s), s], dim=1)


class _ScaleDiscriminator(nn.Module):
    """4x4 stride-2 convs with layer norm (not on the first) and LeakyReLU 0.2, then a 1x1 conv to one channel."""

    def __init__(self, in_channels: int, channels: Sequence[int], spectral_norm: bool) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.convs = nn.ModuleList(
            Conv2dReflect(cin, cout, 4, stride=2, spectral_norm=spectral_norm)
            for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.norms = nn.ModuleList([nn.Identity()] + [LayerNorm2d(c) for c in channels[1:]])
        self.out = Conv2dReflect(channels[-1], 1, 1, spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, 1, h, w)`` score map."""
        for conv, norm in zip(self.convs, self.norms):
            x = F.leaky_relu(norm(conv(x)), 0.2)
        return self.out(x)


class MultiScaleDiscriminator(nn.Module):
    """Multi-scale hinge discriminator of Vorontsov et al. (2022), one per domain: the same design at
    ``num_scales`` scales (3x3 average pooling, stride 2, between them); scores averaged over scales.

    Args:
        in_channels: image channels.
        size: a key of :data:`PRESETS` (sets the widths; 48x48 starts at 128 channels).
        width: width multiplier.
        num_scales: scales (3 in the paper).
        spectral_norm: spectrally normalise every convolution.
        channels: widths of the stride-2 convs per scale (before ``width``); None: the preset of ``size``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        size: str = "48x48",
        width: float = 1.0,
        num_scales: int = 3,
        spectral_norm: bool = True,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}.")
        channels = scaled_channels(PRESETS[size][1] if channels is None else channels, width)
        self.scales = nn.ModuleList(
            _ScaleDiscriminator(in_channels, channels, spectral_norm) for _ in range(num_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        kaiming_init(self)

    def forward(self, x: torch.Tensor, per_element: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """``(B, Cin, H, W)`` -> ``(B,)`` realness scores (each scale's map averaged, then the scales), or with
        ``per_element`` the list of per-scale ``(B, 1, h, w)`` score maps, on which the authors' hinge acts element
        by element (:func:`common.losses.gan.hinge_discriminator_loss`). Hinge: real should exceed 1, fake stay below
        -1."""
        maps = []
        for i, scale in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            maps.append(scale(x))
        if per_element:
            return maps
        return torch.stack([m.mean(dim=(1, 2, 3)) for m in maps]).mean(0)
