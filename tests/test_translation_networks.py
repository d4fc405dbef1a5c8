"""Unit tests of the translation networks, losses and trainers (Vorontsov et al. 2022)."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.handlers import EMAHandler
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from common.engines.translation import TranslationModelTrainer
from common.engines.translation_baselines import AutoencoderTrainer, MeanTeacherTrainer, SegmentationOnlyTrainer
from common.losses.gan import hinge_discriminator_loss, hinge_generator_loss
from common.losses.soft_dice import soft_dice_loss
from common.networks.translation import MultiScaleDiscriminator, TranslationSegNet
from common.networks.translation_baseline import TranslationBaselineNet
from common.networks.translation_blocks import Conv2dReflect, LayerNorm2d

WIDTH = 0.125


@pytest.mark.parametrize(
    "size, shape, channels, code_hw",
    [
        ("48x48", (48, 48), 1, (3, 3)),
        ("128x128", (128, 128), 1, (4, 4)),
        ("240x120", (240, 120), 4, (8, 4)),
        ("256x256", (256, 256), 1, (8, 8)),
    ],
)
def test_output_shapes(size: str, shape: tuple[int, int], channels: int, code_hw: tuple[int, int]):
    net = TranslationSegNet(channels, size, width=WIDTH)
    baseline = TranslationBaselineNet(channels, size, WIDTH, reconstruction_decoder=True)
    disc = MultiScaleDiscriminator(channels, size, width=WIDTH)
    x = torch.randn(2, channels, *shape)
    with torch.no_grad():
        c, u, skips = net.encode(x)
        assert c.shape == (2, 48, *code_hw) and u.shape == (2, 16, *code_hw)  # 384 / 128 of 512 at width 1/8
        assert len(skips) == (4 if size == "48x48" else 5) and skips[0].shape[-2:] == shape
        healthy, residual = net.translate(x)
        assert healthy.shape == residual.shape == x.shape
        assert healthy.abs().max() <= 1 and residual.abs().max() <= 1  # tanh outputs
        assert net(x).shape == (2, 2, *shape)
        assert baseline(x).shape == (2, 2, *shape)
        assert baseline.autoencode(*baseline.encode(x)[:2], shape).shape == x.shape
        assert disc(x).shape == (2,)


def test_48x48_drops_first_encoder_block_and_starts_discriminator_at_128():
    net = TranslationSegNet(1, "48x48")
    assert net.encoder.stem.conv.out_channels == 32 and len(net.encoder.blocks) == 4
    assert net.encoder.common_channels == 384 and net.unique_channels == 128
    assert [b.conv.conv.out_channels for b in net.residual_decoder.blocks] == [256, 128, 64, 32]
    disc = MultiScaleDiscriminator(1, "48x48")
    assert len(disc.scales) == 3
    assert [conv.conv.out_channels for conv in disc.scales[0].convs] == [128, 256, 512]  # authors' bds3_003
    full = TranslationSegNet(1, "128x128", width=WIDTH)
    assert len(full.encoder.blocks) == 5


def test_residual_decoder_norm_sets_differ():
    net = TranslationSegNet(1, "48x48", width=WIDTH).eval()  # eval: no spectral-norm power iteration per call
    norms = [m for m in net.residual_decoder.modules() if isinstance(m, LayerNorm2d)]
    assert norms and all(n.weight.shape[0] == 2 for n in norms)
    assert all(n.weight.shape[0] == 1 for n in net.common_decoder.modules() if isinstance(n, LayerNorm2d))
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        c, u, skips = net.encode(x)
        code = torch.cat([c, u], 1)
        before = net.residual_decoder(code, skips, (48, 48), "translate")
        for n in norms:  # changing the segment set leaves translation untouched, changing translate changes it
            n.weight[1].mul_(3.0)
        assert torch.equal(before, net.residual_decoder(code, skips, (48, 48), "translate"))
        for n in norms:
            n.bias[0].add_(0.5)
        assert not torch.allclose(before, net.residual_decoder(code, skips, (48, 48), "translate"))
    conv_weights = {id(p) for p in net.residual_decoder.parameters()}
    assert net.residual_decoder.classifier is not None and id(net.residual_decoder.classifier.weight) in conv_weights


def test_spectral_norm_everywhere_but_the_segmentation_head():
    net = TranslationSegNet(1, "48x48", width=WIDTH)
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            parametrized = hasattr(module, "parametrizations")
            assert parametrized == ("seg_conv" not in name and "classifier" not in name), name
    for module in MultiScaleDiscriminator(1, "48x48", width=WIDTH).modules():
        if isinstance(module, torch.nn.Conv2d):
            assert hasattr(module, "parametrizations")
    assert not any(hasattr(m, "parametrizations") for m in TranslationSegNet(1, spectral_norm=False).modules())


def test_separate_segmentation_decoder():
    net = TranslationSegNet(1, "48x48", width=WIDTH, separate_segmentation_decoder=True)
    assert net.residual_decoder.classifier is None and net.segmentation_decoder.classifier is not None
    assert net(torch.randn(1, 1, 48, 48)).shape == (1, 2, 48, 48)
    for bad in ("adain", "Layer"):  # a misspelt or inapplicable segment_norm is refused, not silently ignored
        with pytest.raises(ValueError, match="segment_norm"):
            TranslationSegNet(1, "48x48", width=WIDTH, separate_segmentation_decoder=True, segment_norm=bad)


def test_conv_reflect_keeps_ceil_size_down_to_one_pixel():
    conv = Conv2dReflect(2, 3, 4, stride=2)
    for size in (1, 2, 3, 15, 48):
        assert conv(torch.randn(1, 2, size, size)).shape[-1] == -(-size // 2)


def test_losses():
    prob = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert soft_dice_loss(prob, prob).item() == pytest.approx(-1.0)
    assert soft_dice_loss(prob, 1 - prob).item() == pytest.approx(-1 / 5)
    assert hinge_discriminator_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])).item() == pytest.approx(1.0)
    # on a known map the authors' per-element hinge differs from the hinge of the averaged score
    real = torch.tensor([[[[3.0, -3.0]]]])  # (1, 1, 1, 2): mean 0
    fake = -real
    assert hinge_discriminator_loss(real.mean(dim=(1, 2, 3)), fake.mean(dim=(1, 2, 3))).item() == pytest.approx(2.0)
    assert hinge_discriminator_loss([real], [fake]).item() == pytest.approx(4.0)  # (0 + 4) / 2 twice
    two_scales = hinge_discriminator_loss([real, torch.full((1, 1, 1, 1), 2.0)], [fake, torch.full((1, 1, 1, 1), -2.0)])
    assert two_scales.item() == pytest.approx((2.0 + 0.0) / 2 * 2)  # scales averaged, as genseg's _foreach
    assert hinge_generator_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def _loader(n: int, present: bool) -> DataLoader:
    items = []
    for i in range(n):
        item = {"image": torch.rand(1, 48, 48)}
        if present:
            item.update(label=(torch.rand(1, 48, 48) > 0.8).to(torch.uint8), labelled=int(i % 2 == 0))
        items.append(item)
    return DataLoader(items, batch_size=2)


def _model_trainer(net: TranslationSegNet, directions: str = "both", **kwargs) -> TranslationModelTrainer:
    """The proposed model's trainer with the discriminators ``directions`` trains."""
    d_a, d_p = MultiScaleDiscriminator(1, width=WIDTH), MultiScaleDiscriminator(1, width=WIDTH)
    discriminators = {"both": {"discriminator_a": d_a, "discriminator_p": d_p}, "p_to_a": {"discriminator_a": d_a}}
    used = discriminators.get(directions, {})
    if used:
        params = [p for d in used.values() for p in d.parameters()]
        kwargs.setdefault("d_optimizer", torch.optim.Adam(params, 1e-3, amsgrad=True))
    kwargs.setdefault("absent_data_loader", _loader(2, False))
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.5, 0.999), weight_decay=1e-4, amsgrad=True)
    return TranslationModelTrainer("cpu", 1, _loader(4, True), net, opt, directions=directions, **used, **kwargs)


BASELINE_KINDS = ("segmentation", "autoencoder", "mean_teacher")


def _baseline_trainer(kind: str) -> SegmentationOnlyTrainer | AutoencoderTrainer | MeanTeacherTrainer:
    net = TranslationBaselineNet(1, "48x48", WIDTH, kind == "autoencoder")
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.5, 0.999), weight_decay=1e-4, amsgrad=True)
    if kind == "segmentation":
        return SegmentationOnlyTrainer("cpu", 1, _loader(4, True), net, opt)
    if kind == "autoencoder":
        return AutoencoderTrainer("cpu", 1, _loader(4, True), net, opt, _loader(2, False))
    return MeanTeacherTrainer("cpu", 1, _loader(4, True), net, opt, TranslationBaselineNet(1, "48x48", WIDTH))


@pytest.mark.parametrize(
    "kind, directions",
    [("translation", d) for d in ("both", "p_to_a", "none")] + [(k, None) for k in BASELINE_KINDS],
)
def test_trainers_run_and_update(kind: str, directions: str | None):
    torch.manual_seed(0)
    if kind == "translation":
        trainer = _model_trainer(TranslationSegNet(1, "48x48", width=WIDTH), directions)
    else:
        trainer = _baseline_trainer(kind)
    translating = kind == "translation" and directions != "none"
    d_a = getattr(trainer, "discriminator_a", None)
    assert (d_a is not None) == translating
    before = [p.detach().clone() for p in trainer.network.encoder.parameters()]
    d_before = [p.detach().clone() for p in d_a.parameters()] if translating else []
    trainer.run()
    out = trainer.state.output
    assert trainer.state.iteration == 2 and torch.isfinite(out["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.encoder.parameters()))
    assert ("loss_d" in out) == translating and ("loss_cyc" in out) == (translating and directions == "both")
    assert ("loss_rec" in out) == (kind in ("translation", "autoencoder"))
    assert ("loss_consistency" in out) == (kind == "mean_teacher")
    if translating:
        assert any(not torch.equal(a, b) for a, b in zip(d_before, d_a.parameters()))


def test_mean_teacher_trainer_runs_and_updates_the_teacher_through_its_ema_handler():
    """The EMA handler given as ``teacher_update`` is attached by the trainer itself (after ``train_handlers``), so a
    config that replaces ``train_handlers`` (multi_gpu_train.json) keeps the teacher moving."""
    torch.manual_seed(0)
    net = TranslationBaselineNet(1, "48x48", WIDTH)
    ema = EMAHandler(net, momentum=0.01)
    teacher_before = [p.detach().clone() for p in ema.ema_model.parameters()]
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    trainer = MeanTeacherTrainer("cpu", 1, _loader(4, True), net, opt, ema.ema_model, ema, train_handlers=[])
    trainer.run()
    out = trainer.state.output
    assert trainer.state.iteration == 2 and set(out) == {"image", "label", "loss", "loss_seg", "loss_consistency"}
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, ema.ema_model.parameters()))


def _translation_trainer(net: TranslationSegNet) -> TranslationModelTrainer:
    d_a, d_p = MultiScaleDiscriminator(1, width=WIDTH), MultiScaleDiscriminator(1, width=WIDTH)
    return TranslationModelTrainer(
        "cpu",
        1,
        _loader(4, True),
        net,
        torch.optim.Adam(net.parameters(), 1e-3, amsgrad=True),
        absent_data_loader=_loader(4, False),
        discriminator_a=d_a,
        discriminator_p=d_p,
        d_optimizer=torch.optim.Adam([*d_a.parameters(), *d_p.parameters()], 1e-3, amsgrad=True),
    )


def test_latent_reconstruction_covers_translated_and_reconstructed_codes_as_the_authors():
    """Eq. 9 as the authors' bd_segmentation.py: whole code of x_PP vs (c_P, u_P), common code of the translation
    x_PA vs c_P, common code of x_AA vs c_A, whole code of x_AP vs (c_A, z)."""
    torch.manual_seed(0)
    net = TranslationSegNet(1, "48x48", width=WIDTH).eval()  # eval: spectral norm's power iteration stays put
    trainer = _translation_trainer(net)
    x_p, x_a = torch.rand(2, 1, 48, 48), torch.rand(2, 1, 48, 48)
    labels, mask = torch.zeros(2, 1, 48, 48), torch.tensor([False, False])
    with torch.no_grad():
        torch.manual_seed(1)
        terms, _ = trainer._translation_terms(x_p, x_a, labels, mask)
        torch.manual_seed(1)
        (c_p, u_p, s_p), (c_a, u_a, s_a) = net.encode(x_p), net.encode(x_a)
        z = torch.randn_like(u_a)
        x_pa, x_aa = net.healthy(c_p, s_p, (48, 48)), net.healthy(c_a, s_a, (48, 48))
        x_pp, x_ap = x_pa + net.residual(c_p, u_p, s_p, (48, 48)), x_aa + net.residual(c_a, z, s_a, (48, 48))
        code = {name: net.encode(x)[:2] for name, x in {"pp": x_pp, "pa": x_pa, "aa": x_aa, "ap": x_ap}.items()}

        def l1(a: torch.Tensor, b: torch.Tensor) -> float:
            return (a - b).abs().mean().item()

        expected = (
            l1(torch.cat(code["pp"], 1), torch.cat([c_p, u_p], 1))
            + l1(code["pa"][0], c_p)
            + l1(code["aa"][0], c_a)
            + l1(torch.cat(code["ap"], 1), torch.cat([c_a, z], 1))
        )
    assert terms["loss_lat"].item() == pytest.approx(expected, rel=1e-5)


def test_discriminators_step_before_the_generator_meets_them():
    """As the authors' bd_segmentation.py: the discriminators take their step on this iteration's fakes first; the
    generator's adversarial term then runs the updated discriminators (frozen), before the generator step."""
    torch.manual_seed(0)
    trainer = _translation_trainer(TranslationSegNet(1, "48x48", width=WIDTH))
    events: list[str] = []
    for name, d in (("D_A", trainer.discriminator_a), ("D_P", trainer.discriminator_p)):
        d.register_forward_hook(
            lambda m, i, o, name=name: events.append(
                f"{name} {'train' if next(m.parameters()).requires_grad else 'frozen'}"
            )
        )
    trainer.d_optimizer.register_step_post_hook(lambda *_: events.append("D step"))
    trainer.optimizer.register_step_post_hook(lambda *_: events.append("G step"))
    trainer.run()
    first = events[: events.index("G step") + 1]
    assert first == ["D_A train"] * 2 + ["D_P train"] * 2 + ["D step", "D_A frozen", "D_P frozen", "G step"]


def test_trainers_reject_missing_or_unused_parts():
    net = TranslationSegNet(1, width=WIDTH)
    opt = torch.optim.Adam(net.parameters())
    d_a, d_p = MultiScaleDiscriminator(1, width=WIDTH), MultiScaleDiscriminator(1, width=WIDTH)
    d_opt = torch.optim.Adam(d_a.parameters())
    present, absent = _loader(2, True), _loader(2, False)
    with pytest.raises(ValueError, match="absent_data_loader"):
        TranslationModelTrainer("cpu", 1, present, net, opt, None, d_a, d_p, d_opt)
    with pytest.raises(ValueError, match="needs discriminator_p"):
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, d_a, None, d_opt)
    with pytest.raises(ValueError, match="needs d_optimizer"):
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, d_a, d_p)
    with pytest.raises(ValueError, match="'p_to_a' trains no discriminator_p"):  # a config bug, not ignored
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, d_a, d_p, d_opt, directions="p_to_a")
    with pytest.raises(ValueError, match="'none' trains no discriminator_a"):
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, d_a, None, d_opt, directions="none")
    with pytest.raises(ValueError, match="'none' trains no discriminator and takes no d_optimizer"):
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, d_optimizer=d_opt, directions="none")
    with pytest.raises(ValueError, match="directions"):
        TranslationModelTrainer("cpu", 1, present, net, opt, absent, directions="a_to_p")
    with pytest.raises(ValueError, match="teacher_network"):
        MeanTeacherTrainer("cpu", 1, present, net, opt, None)
    with pytest.raises(ValueError, match="reconstruction_decoder"):
        AutoencoderTrainer("cpu", 1, present, TranslationBaselineNet(1, "48x48", WIDTH), opt, absent)


def test_mean_teacher_consistency_leaves_out_the_labelled_images_and_the_absent_domain():
    """As the authors' mean_teacher_segmentation.py: labelled images take the Dice term only (with every image of the
    batch labelled the consistency term is exactly 0, with one unlabelled image it is not), and A images take no part:
    the mean teacher (as the seg-only baseline) takes no A loader at all."""
    torch.manual_seed(0)
    net, teacher = TranslationSegNet(1, "48x48", width=WIDTH), TranslationSegNet(1, "48x48", width=WIDTH)
    opt = torch.optim.Adam(net.parameters())
    for baseline, args in ((MeanTeacherTrainer, (teacher,)), (SegmentationOnlyTrainer, ())):
        with pytest.raises(TypeError, match="absent_data_loader"):
            baseline("cpu", 1, _loader(2, True), net, opt, *args, absent_data_loader=_loader(2, False))
    trainer = MeanTeacherTrainer("cpu", 1, _loader(2, True), net, opt, teacher)
    assert trainer.absent_data_loader is None
    images, labels = torch.rand(2, 1, 48, 48), (torch.rand(2, 1, 48, 48) > 0.8).float()
    all_labelled = trainer._mean_teacher_terms(images, labels, torch.tensor([True, True]))
    one_unlabelled = trainer._mean_teacher_terms(images, labels, torch.tensor([True, False]))
    assert all_labelled["loss_consistency"].item() == 0.0 and one_unlabelled["loss_consistency"].item() > 0.0
    trainer.run()
    assert trainer.state.iteration == 1


def test_adain_segment_norm_is_trained_by_the_segmentation_only():
    """segment_norm="adain" (the authors' bds3_003): mode "segment" normalises with gains and biases an MLP predicts
    from the code; the MLP is used (and so trained) by the segmentation only, and the residual decoder keeps a single
    layer-norm set for translation."""
    torch.manual_seed(0)
    net = TranslationSegNet(1, "48x48", width=WIDTH, segment_norm="adain")
    decoder = net.residual_decoder
    assert decoder.adain is not None and decoder.out_norm.weight.shape[0] == 1
    x = torch.rand(2, 1, 48, 48)
    c, u, skips = net.encode(x)
    net.residual(c, u, skips, x.shape[-2:]).sum().backward()
    assert all(p.grad is None for p in decoder.adain.parameters())
    logits = net.segment_logits(c.detach(), u.detach(), [s.detach() for s in skips], x.shape[-2:])
    assert logits.shape == (2, 1, 48, 48)
    logits.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in decoder.adain.parameters())
    brats = TranslationSegNet(4, "240x120", width=WIDTH, segment_norm="adain")  # code 8x4 from 240x120
    assert brats(torch.rand(1, 4, 240, 120)).shape == (1, 2, 240, 120)
    with pytest.raises(ValueError, match="segment_norm"):
        TranslationSegNet(1, "48x48", width=WIDTH, segment_norm="batch")


def test_autoencoder_reconstruction_is_the_mean_over_present_and_absent_images():
    """As the authors' ae_segmentation.py (one L1 mean over the batch of P and A images): lambda_rec 1 weighs the
    same reconstruction error as theirs, not twice it."""
    torch.manual_seed(0)
    net = TranslationBaselineNet(1, "48x48", WIDTH, reconstruction_decoder=True)
    reference = copy.deepcopy(net)
    present, absent = _loader(2, True), _loader(2, False)
    trainer = AutoencoderTrainer("cpu", 1, present, net, torch.optim.Adam(net.parameters()), absent)
    trainer.run()
    x_p, x_a = next(iter(present))["image"], next(iter(absent))["image"]
    with torch.no_grad(), parametrize.cached():
        images = torch.cat([x_p, x_a])
        c, u, _ = reference.encode(images)
        expected = (reference.autoencode(c, u, (48, 48)) - images).abs().mean().item()
    assert trainer.state.output["loss_rec"].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "directions, used",
    [
        ("both", ("loss_adv", "loss_rec", "loss_cyc", "loss_lat", "loss_seg")),
        ("p_to_a", ("loss_adv", "loss_rec", "loss_lat", "loss_seg")),
        ("none", ("loss_rec", "loss_lat", "loss_seg")),
    ],
)
def test_translation_weights_are_normalised_to_lambda_sum_and_the_discriminator_loss_is_unweighted(
    directions: str, used: tuple[str, ...]
):
    """Paper Sec. 4: the proposed method's weights are relative, normalised to sum to 1 (over the terms the directions
    train); the baselines keep theirs. The discriminators' hinge loss carries no weight (the authors'
    bd_segmentation.py), whatever lambda_adv is."""
    torch.manual_seed(0)
    net = TranslationSegNet(1, "48x48", width=WIDTH)
    trainer = _model_trainer(net, directions, lambda_sum=1.0)
    d_a, d_p = trainer.discriminator_a, trainer.discriminator_p
    raw = {"loss_adv": 3.0, "loss_rec": 50.0, "loss_cyc": 50.0, "loss_lat": 1.0, "loss_seg": 0.01}
    assert sum(trainer.weights[k] for k in used) == pytest.approx(1.0)
    assert trainer.weights["loss_rec"] / trainer.weights["loss_seg"] == pytest.approx(5000.0)
    assert trainer.weights["loss_rec"] == pytest.approx(50.0 / sum(raw[k] for k in used))
    seg_only = SegmentationOnlyTrainer("cpu", 1, _loader(2, True), net, torch.optim.Adam(net.parameters()), 0.01)
    assert seg_only.weights == {"loss_seg": 0.01}  # the baselines: as given
    if directions == "none":
        return
    trainer.lambda_adv = 100.0
    x_p, x_a = torch.rand(2, 1, 48, 48), torch.rand(2, 1, 48, 48)
    fakes = {"x_pa": torch.rand(2, 1, 48, 48), "x_ap": torch.rand(2, 1, 48, 48)}
    references = {name: copy.deepcopy(d) for name, d in (("a", d_a), ("p", d_p)) if d is not None}
    loss_d = trainer._discriminator_step(x_p, x_a, fakes)
    with torch.no_grad(), parametrize.cached():
        d_a_ref = references["a"]
        expected = hinge_discriminator_loss(d_a_ref(x_a, True), d_a_ref(fakes["x_pa"], True))
        if directions == "both":
            d_p_ref = references["p"]
            expected = expected + hinge_discriminator_loss(d_p_ref(x_p, True), d_p_ref(fakes["x_ap"], True))
    assert loss_d.item() == pytest.approx(expected.item(), rel=1e-5)
