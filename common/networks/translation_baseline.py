"""Encoder-decoder of the baselines of Vorontsov et al., "Towards annotation-efficient segmentation via image-to-image
translation", MedIA 2022 (arXiv 1904.01636): segmentation only, autoencoder and mean teacher (Sec. 4.1).

"For each task, we use the same encoder (Eq. (1)) for all models; likewise, the common decoder (Eq. (2)) in the
proposed model and all decoders in the baseline models are the same" (Sec. 4.2). As the authors' code
(github.com/veugene/genseg ``model/configs/mnist/ae_seg/ae_006_seg.py``, ``ae_006.py``,
``mean_teacher/mean_teacher_006.py``): the encoder of the translation model and decoders of 3x3 blocks with short
(residual) skips, layer norm and nearest upsampling, built without spectral norm. The segmentation decoder takes the
compressed long skips of the encoder; the autoencoder's reconstruction decoder (a second decoder, as ``decoder_rec``
of ``ae_006.py``) takes none and ends in tanh (Sec. 3.3: long skips would make autoencoding trivial).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.networks.translation import (
    PRESETS,
    UNIQUE_FRACTION,
    TranslationDecoder,
    TranslationEncoder,
    scaled_channels,
)
from common.networks.translation_blocks import kaiming_init

__all__ = ["TranslationBaselineNet"]


class TranslationBaselineNet(nn.Module):
    """Segmenter of the seg-only, autoencoder and mean-teacher baselines of Vorontsov et al. (2022): the encoder
    ``E`` of :class:`~common.networks.translation.TranslationSegNet` and one decoder built as its common decoder
    (3x3 kernels, short skips, compressed long skips) with the segmentation head only, neither spectrally
    normalised; with ``reconstruction_decoder`` a second such decoder, without long skips, reconstructs the image.

    The decoders read the whole bottleneck (512 channels at width 1), as the authors' baselines; :meth:`encode`
    still returns it split as the translation encoder's ``(c, u)`` (3/4, 1/4) so that the trainers on
    :class:`~common.engines.translation.TranslationTrainerBase` drive both networks through the same calls.
    ``forward`` returns ``(B, 2, H, W)`` logits ``[0, s]`` as ``TranslationSegNet``'s. The mean-teacher baseline
    uses two of these networks (student and its EMA teacher).

    Args:
        in_channels: image channels.
        size: a key of :data:`~common.networks.translation.PRESETS`.
        width: width multiplier of every layer (1.0 as the paper).
        reconstruction_decoder: add the autoencoder baseline's reconstruction decoder.
    """

    def __init__(
        self, in_channels: int = 1, size: str = "48x48", width: float = 1.0, reconstruction_decoder: bool = False
    ) -> None:
        super().__init__()
        if size not in PRESETS:
            raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}.")
        enc_channels = scaled_channels(PRESETS[size][0], width)
        bottleneck = enc_channels[-1]
        unique = max(1, int(round(bottleneck * UNIQUE_FRACTION)))
        dec_channels = enc_channels[-2::-1]
        self.encoder = TranslationEncoder(in_channels, enc_channels, unique, spectral_norm=False)
        self.segmentation_decoder = TranslationDecoder(
            bottleneck,
            dec_channels,
            in_channels,
            3,
            short_skip=True,
            skip_channels=enc_channels[:-1],
            segmentation_head=True,
            spectral_norm=False,
            translation_head=False,
        )
        self.reconstruction_decoder = (
            TranslationDecoder(bottleneck, dec_channels, in_channels, 3, short_skip=True, spectral_norm=False)
            if reconstruction_decoder
            else None
        )
        kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(B, Cin, H, W)`` -> ``(c, u, skips)``, see :class:`~common.networks.translation.TranslationEncoder`."""
        return self.encoder(x)

    def segment_logits(
        self, c: torch.Tensor, u: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int]
    ) -> torch.Tensor:
        """Segmentation logits ``(B, 1, *out_size)`` from the whole code ``(c, u)`` and the encoder's long skips."""
        return self.segmentation_decoder(torch.cat([c, u], dim=1), skips, out_size, "segment")

    def autoencode(self, c: torch.Tensor, u: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """The autoencoder baseline's reconstruction ``(B, Cin, *out_size)`` in [-1, 1]; no long skips."""
        if self.reconstruction_decoder is None:
            raise ValueError("built without reconstruction_decoder.")
        return self.reconstruction_decoder(torch.cat([c, u], dim=1), [], out_size)

    def segmentation_parameters(self) -> list[nn.Parameter]:
        """The parameters that only the segmentation output uses: the whole segmentation decoder."""
        return list(self.segmentation_decoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Cin, H, W)`` -> ``(B, 2, H, W)`` logits ``[0, s]`` (softmax channel 1 = sigmoid(s))."""
        c, u, skips = self.encode(x)
        s = self.segment_logits(c, u, skips, x.shape[-2:])
        return torch.cat([torch.zeros_like(s), s], dim=1)
