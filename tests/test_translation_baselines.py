"""The baselines of Vorontsov et al. (2022) as the authors build them (genseg ``ae_006_seg.py``, ``ae_006.py``,
``mean_teacher_006.py``): the translation encoder and decoders built as the common decoder (3x3, short skips, no
spectral norm), nothing of the translation model besides; and the ``segmentation_weight_decay`` key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bundle_utils import run_workflow
from monai.bundle import ConfigParser
from test_cluttered_mnist import write_small_mnist
from test_translation_semi_seg import BUNDLE, CONFIGS, SMALL_RUN
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm

from common.engines.translation import segmentation_parameter_groups
from common.networks.translation import TranslationDecoder, TranslationSegNet
from common.networks.translation_baseline import TranslationBaselineNet
from common.networks.translation_blocks import LayerNorm2d

BASELINES = ["seg_only.json", "ae_baseline.json", "mean_teacher.json"]
AUTHORS_WEIGHT_DECAY = 1e-4  # genseg cluttered_mnist_segmentation.py --weight_decay, on every parameter


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"), num_train=200, num_test=20)


def _nets(width: float = 0.25) -> list[TranslationBaselineNet]:
    return [TranslationBaselineNet(1, "48x48", width), TranslationBaselineNet(1, "48x48", width, True)]


def test_no_spectral_norm_anywhere():
    for net in _nets():
        for name, module in net.named_modules():
            assert not parametrize.is_parametrized(module), name
            assert not any(isinstance(h, SpectralNorm) for h in module._forward_pre_hooks.values()), name
        assert not any("parametrizations" in name or name.endswith("_orig") for name, _ in net.named_parameters())


def test_decoders_are_3x3_without_translation_only_modules():
    seg_only, ae = _nets()
    assert {name for name, _ in seg_only.named_children()} == {"encoder", "segmentation_decoder"}
    assert {name for name, _ in ae.named_children()} == {"encoder", "segmentation_decoder", "reconstruction_decoder"}
    for decoder in (seg_only.segmentation_decoder, ae.reconstruction_decoder):
        for name, module in decoder.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                one_by_one = name.startswith("compressors") or ".shortcut." in name or name == "classifier"
                assert module.kernel_size == ((1, 1) if one_by_one else (3, 3)), name
        # one norm parameter set (no translate / segment pair), no AdaIN MLP
        assert all(m.weight.shape[0] == 1 for m in decoder.modules() if isinstance(m, LayerNorm2d))
        assert decoder.adain is None
    segmentation, reconstruction = seg_only.segmentation_decoder, ae.reconstruction_decoder
    assert segmentation.out_conv is None and segmentation.classifier is not None  # no unused translate output
    assert reconstruction.classifier is None and reconstruction.seg_conv is None and reconstruction.out_conv is not None
    assert len(segmentation.compressors) == 4 and len(reconstruction.compressors) == 0  # long skips: seg only
    with pytest.raises(ValueError, match="translation head"):
        segmentation(torch.zeros(1, 128, 3, 3), [], (48, 48), "translate")


def test_decoder_blocks_have_short_skips():
    """Every up-block but the first adds its upsampled input (projected by a 1x1 conv, since the widths change) to
    its conv's output: with the conv zeroed the block returns exactly that shortcut."""
    torch.manual_seed(0)
    for decoder in (_nets()[1].segmentation_decoder, _nets()[1].reconstruction_decoder):
        assert decoder.blocks[0].shortcut is None and not decoder.blocks[0].short_skip
        for block in decoder.blocks[1:]:
            assert block.short_skip and block.shortcut is not None
            cin = block.conv.conv.in_channels
            x = torch.randn(2, cin, 6, 6)
            with torch.no_grad():
                full = block(x, 0)
                block.conv.conv.weight.zero_()
                block.conv.conv.bias.zero_()
                shortcut = block.shortcut.conv
                expected = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), shortcut.weight, shortcut.bias)
                assert torch.allclose(block(x, 0), expected, atol=1e-6)
                assert not torch.allclose(full, expected, atol=1e-3)


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _expected_parameters(width: float, reconstruction: bool) -> int:
    """From the layer sizes of the authors' 48x48 baselines (N = 512): encoder 3x3 stem to 32, stride-2 blocks 64,
    128, 256, 512 (3x3 conv + 1x1 projection); decoder up-blocks 256, 128, 64, 32 (3x3 conv; after the first, layer
    norm gain + bias and a 1x1 short-skip projection), a compressed long skip (1x1 conv to one channel) after each,
    output norm, 3x3 conv and 1x1 classifier; the reconstruction decoder without long skips ends in a 3x3 conv to
    the image."""
    enc = [int(round(c * width)) for c in (32, 64, 128, 256, 512)]
    dec = [int(round(c * width)) for c in (256, 128, 64, 32)]
    total = _conv(1, enc[0], 3) + sum(_conv(a, b, 3) + _conv(a, b, 1) for a, b in zip(enc[:-1], enc[1:]))

    def decoder(extra: int) -> int:
        n = _conv(enc[-1], dec[0], 3)
        for a, b in zip(dec[:-1], dec[1:]):
            n += 2 * (a + extra) + _conv(a + extra, b, 3) + _conv(a + extra, b, 1)
        return n + 2 * (dec[-1] + extra)

    total += decoder(1) + sum(_conv(c, 1, 1) for c in enc[-2::-1]) + _conv(dec[-1] + 1, dec[-1], 3)
    total += _conv(dec[-1], 1, 1)
    if reconstruction:
        total += decoder(0) + _conv(dec[-1], 1, 3)
    return total


@pytest.mark.parametrize("width", [0.25, 1.0])
def test_parameter_count_from_layer_sizes(width: float):
    def count(net: torch.nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    seg_only, ae = _nets(width)
    assert count(seg_only) == _expected_parameters(width, False)
    assert count(ae) == _expected_parameters(width, True)
    assert count(ae) < count(TranslationSegNet(1, "48x48", width, spectral_norm=False))
    assert sum(p.numel() for p in seg_only.encoder.parameters()) == sum(
        p.numel() for p in TranslationSegNet(1, "48x48", width).encoder.parameters()
    )


@pytest.mark.parametrize(
    "net",
    [
        TranslationBaselineNet(1, "48x48", 0.125),
        TranslationBaselineNet(1, "48x48", 0.125, reconstruction_decoder=True),
        TranslationSegNet(1, "48x48", 0.125),
        TranslationSegNet(1, "48x48", 0.125, segment_norm="adain"),
        TranslationSegNet(1, "48x48", 0.125, separate_segmentation_decoder=True),
    ],
    ids=["seg_only", "autoencoder", "proposed", "proposed_adain", "sep_dec"],
)
def test_segmentation_parameters_are_used_by_the_segmentation_only(net: torch.nn.Module):
    """Every parameter ``segmentation_parameters`` names takes no gradient from the other outputs; of the
    segmentation decoder / head none is left out."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 48, 48)
    c, u, skips = net.encode(x)
    others = [c.sum(), u.sum()]
    if isinstance(net, TranslationSegNet):
        healthy, residual = net.translate(x)
        others += [healthy.sum(), residual.sum()]
    elif net.reconstruction_decoder is not None:
        others.append(net.autoencode(c, u, (48, 48)).sum())
    sum(others).backward()
    segmentation = {id(p) for p in net.segmentation_parameters()}
    assert segmentation and all(p.grad is None for p in net.parameters() if id(p) in segmentation)
    head = net.segmentation_decoder or net.residual_decoder
    for module in (head.seg_conv, head.classifier, head.adain):
        assert module is None or all(id(p) in segmentation for p in module.parameters())


def _optimizer(variant: str | None, **overrides: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")] + ([str(CONFIGS / variant)] if variant else []))
    parser.update({"device": "$torch.device('cpu')", "network_width": 0.125, **overrides})
    return parser.get_parsed_content("network"), parser.get_parsed_content("optimizer")


@pytest.mark.parametrize("variant", BASELINES + [None, "sep_dec.json"])
def test_segmentation_weight_decay_key(variant: str | None):
    """``segmentation_weight_decay`` (every translation config; default: ``weight_decay``, 1e-4, as the authors',
    who decay every parameter alike) sets the decay of the segmentation-only parameters in their own optimiser
    group; 0 leaves them undecayed: with zero gradients an AMSGrad step moves them only if they are decayed."""
    net, optimizer = _optimizer(variant)
    assert isinstance(net, TranslationSegNet if variant in (None, "sep_dec.json") else TranslationBaselineNet)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [AUTHORS_WEIGHT_DECAY, AUTHORS_WEIGHT_DECAY]
    segmentation = {id(p) for p in net.segmentation_parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == segmentation
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())  # each parameter once
    net, optimizer = _optimizer(variant, segmentation_weight_decay=0.0)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [AUTHORS_WEIGHT_DECAY, 0.0]
    segmentation = {id(p) for p in net.segmentation_parameters()}
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, old in zip(net.parameters(), before):
        if id(p) in segmentation:
            assert torch.equal(p, old)
        elif bool(old.any()):  # a zero tensor (biases at init) takes no decay either way
            assert not torch.equal(p, old)


def test_segmentation_parameter_groups_default_to_the_optimiser_decay():
    net = TranslationBaselineNet(1, "48x48", 0.125)
    optimizer = torch.optim.Adam(segmentation_parameter_groups(net, 0.0), weight_decay=AUTHORS_WEIGHT_DECAY)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [AUTHORS_WEIGHT_DECAY, 0.0]
    assert len(optimizer.param_groups[0]["params"]) == len(list(net.encoder.parameters()))


@pytest.mark.parametrize("variant", BASELINES)
def test_baseline_config_trains_one_step(variant: str, tmp_path: Path, mnist_dir: Path):
    overrides = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"), **SMALL_RUN}
    overrides.update(mnist_source=str(mnist_dir), epoch_length=1, segmentation_weight_decay=0.0)
    workflow = run_workflow(BUNDLE, ["train.json", variant], **overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert isinstance(trainer.network, TranslationBaselineNet)
    assert (trainer.network.reconstruction_decoder is not None) == (variant == "ae_baseline.json")
    if variant == "mean_teacher.json":
        assert isinstance(trainer.teacher_network, TranslationBaselineNet)
        assert trainer.teacher_network is not trainer.network
    out = trainer.state.output
    assert trainer.state.iteration == 1 and np.isfinite(float(out["loss"]))
    if variant != "ae_baseline.json":  # (the autoencoder's P batch may hold no labelled image)
        assert all(p.grad is not None for p in trainer.network.segmentation_decoder.parameters())
    assert (tmp_path / "models" / "model.pt").is_file()
    if variant == "seg_only.json":  # evaluation, whose panel has no translation columns for a baseline
        run_workflow(BUNDLE, ["train.json", variant, "evaluate.json"], **overrides)
        assert (tmp_path / "outputs" / "eval" / "panel.png").stat().st_size > 1000


def test_translation_decoder_needs_a_head():
    with pytest.raises(ValueError, match="translation_head or segmentation_head"):
        TranslationDecoder(8, (4, 2), 1, translation_head=False)
