"""Unit tests of MIPR's components: SPADE+ generator, spectral-norm multi-scale discriminator, feature matching,
patch shuffle and the generator/discriminator trainer (Dai, Zhu et al., arXiv 2204.10513)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from common.engines.pixel_rearrangement import PixelRearrangementTrainer
from common.losses.gan import FeatureMatchingLoss
from common.networks.patch_discriminator import spectral_norm_multiscale_discriminator
from common.networks.spade_generator import SPADEPlusGenerator
from common.transforms.patch_shuffle import (
    PATCH_ORDER_POSTFIX,
    PatchShuffle,
    RandPatchShuffled,
    inverse_patch_order,
    random_patch_order,
)

SIZE = 32
CHANNELS = (8, 16)


def _generator(detail_path: bool = True) -> SPADEPlusGenerator:
    torch.manual_seed(0)
    return SPADEPlusGenerator(channels=CHANNELS, spade_hidden_channels=8, detail_path=detail_path)


def _discriminator() -> torch.nn.Module:
    torch.manual_seed(0)
    return spectral_norm_multiscale_discriminator(
        in_channels=5, num_d=2, num_layers_d=1, channels=8, minimum_size_im=SIZE
    )


def _batch(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3, 32, 32)`` images in [-1, 1] and their ``(B, 2, 32, 32)`` one-hot labels (a bright square)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(batch, 1, SIZE, SIZE, dtype=torch.long)
    label[:, :, 8:20, 10:24] = 1
    image = 0.3 * torch.rand(batch, 3, SIZE, SIZE, generator=g) - 0.5 + label.float()
    return image.clamp(-1, 1), F.one_hot(label[:, 0], 2).permute(0, 3, 1, 2).float()


def test_generator_shape_range_and_gradients():
    net = _generator()
    image, label = _batch()
    out = net(image, label)
    assert out.shape == (2, 3, SIZE, SIZE) and out.abs().max() <= 1
    out.square().mean().backward()
    encoder_grad = net.encoder[0].conv.parametrizations.weight.original.grad
    spade_grad = net.head.norm_0.mlp_gamma.conv.weight.grad
    alpha_grad = net.up_blocks[-1].norm_0.mlp_alpha[0].conv.weight.grad
    assert all(g is not None and g.abs().sum() > 0 for g in (encoder_grad, spade_grad, alpha_grad))


def test_generator_detail_path_acts_on_image_gradients_only():
    net = _generator().eval()
    plain = _generator(detail_path=False)
    assert not any("mlp_alpha" in name for name, _ in plain.named_parameters())
    # gamma / beta are plain convolutions (MONAI's SPADE instance-normalises them; NVlabs does not)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.head.norm_0.mlp_gamma.modules())
    textured, label = _batch()
    flat = torch.full_like(textured, 0.2)
    with torch.no_grad():
        before = [net(x, label) for x in (textured, flat)]
        for module in net.modules():
            if hasattr(module, "mlp_alpha") and module.mlp_alpha is not None:
                module.mlp_alpha[-1].conv.weight.zero_()
        after = [net(x, label) for x in (textured, flat)]
    assert not torch.allclose(before[0], after[0], atol=0, rtol=0)  # the Sobel path contributes on edges
    assert torch.equal(before[1], after[1])  # a flat image has no gradients: alpha = 0


def test_generator_size_error():
    with pytest.raises(ValueError, match=r"divisible by 4, got \(30, 32\)"):
        _generator()(torch.zeros(1, 3, 30, 32), torch.zeros(1, 2, 30, 32))


def test_discriminator_scales_and_spectral_norm():
    net = _discriminator()
    image, label = _batch()
    outputs, features = net(torch.cat([label, image], dim=1))
    assert len(outputs) == len(features) == 2
    assert all(o.shape[:2] == (2, 1) for o in outputs) and outputs[0].shape[-1] > outputs[1].shape[-1]
    assert [len(f) for f in features] == [2, 3]  # initial conv + num_layers_d * (i + 1) layers, final output excluded
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") for c in convs)
    with pytest.raises(ValueError, match="reduces 32 px to 1 px"):
        spectral_norm_multiscale_discriminator(in_channels=5, num_d=2, num_layers_d=2, minimum_size_im=SIZE)


def test_feature_matching_loss():
    net = _discriminator()
    image, label = _batch()
    _, real = net(torch.cat([label, image], dim=1))
    assert FeatureMatchingLoss()(real, real).item() == 0.0
    fake_image = image.clone().requires_grad_(True)
    _, fake = net(torch.cat([label, fake_image], dim=1))
    loss, mean_loss = FeatureMatchingLoss()(fake, real), FeatureMatchingLoss("mean")(fake, real)
    assert loss.item() > mean_loss.item() > 0  # summed over layers (NVlabs) vs averaged
    loss.backward()
    assert fake_image.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        FeatureMatchingLoss()(fake, real[:1])


def test_patch_shuffle_six_swaps_bijection_and_inverse():
    rng = np.random.RandomState(0)
    drawn = {random_patch_order(2, rng) for _ in range(200)}
    swaps = {(1, 0, 2, 3), (2, 1, 0, 3), (3, 1, 2, 0), (0, 2, 1, 3), (0, 3, 2, 1), (0, 1, 3, 2)}
    assert drawn == swaps
    shuffle = PatchShuffle(2)
    image = np.random.RandomState(1).rand(3, 8, 6)
    images = [shuffle(image, order) for order in sorted(swaps)]
    assert len({x.tobytes() for x in images}) == 6  # six new images
    for order, shuffled in zip(sorted(swaps), images):
        assert np.array_equal(np.sort(shuffled, axis=None), np.sort(image, axis=None))
        assert np.array_equal(shuffle(shuffled, inverse_patch_order(order)), image)
    np.testing.assert_array_equal(shuffle(image, (1, 0, 2, 3))[:, :4, :3], image[:, :4, 3:])  # tile 0 <- tile 1
    order = random_patch_order(4, rng)
    batch = torch.rand(2, 1, 8, 8)
    assert torch.equal(PatchShuffle(4)(PatchShuffle(4)(batch, order), inverse_patch_order(order)), batch)
    assert isinstance(shuffle(MetaTensor(torch.rand(1, 4, 4)), (1, 0, 2, 3)), MetaTensor)
    with pytest.raises(ValueError, match="divisible by 2, got 5x6"):
        shuffle(np.zeros((1, 5, 6)), (1, 0, 2, 3))
    with pytest.raises(ValueError, match="permutation"):
        shuffle(image, (0, 0, 1, 2))


def test_rand_patch_shuffled_consistent_and_separate_keys():
    image = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)
    label = (image % 7 == 0).long()
    transform = RandPatchShuffled(("image", "label", "encoder"), separate_keys=("encoder",)).set_random_state(3)
    differing = 0
    for _ in range(20):
        d = transform({"image": image, "label": label, "encoder": image.clone()})
        orders = transform.last_permutations
        assert orders["image"] == orders["label"] != tuple(range(4))
        assert torch.equal(d["label"], (d["image"] % 7 == 0).long())  # label tiles follow image tiles
        assert np.array_equal(d[f"label_{PATCH_ORDER_POSTFIX}"], orders["label"])
        target = PatchShuffle(2)(image, d[f"label_{PATCH_ORDER_POSTFIX}"])  # target image in the label's arrangement
        assert torch.equal(target, d["image"])
        assert torch.equal(transform.inverse(d)["encoder"], image)
        differing += orders["encoder"] != orders["image"]
    assert differing > 0
    skip = RandPatchShuffled("image", prob=0.0)
    assert torch.equal(skip({"image": image})["image"], image) and skip.last_permutations["image"] == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="separate_keys"):
        RandPatchShuffled("image", separate_keys=("label",))
    with pytest.raises(ValueError, match="divisible"):
        RandPatchShuffled("image", grid=3)({"image": image})


def _data(num: int = 6) -> list[dict[str, torch.Tensor]]:
    """Items ``{"image": (3, 32, 32), "label": (1, 32, 32) long}``; the label is exactly ``image > 0``."""
    items = []
    for seed in range(num):
        image, onehot = _batch(1, seed)
        items.append({"image": image[0], "label": onehot[0, 1:].long()})
    return items


def _trainer(data: list, separate: bool = True, **kwargs) -> PixelRearrangementTrainer:
    generator, discriminator = _generator(), _discriminator()
    return PixelRearrangementTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=2),
        generator=generator,
        discriminator=discriminator,
        g_optimizer=torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9)),
        d_optimizer=torch.optim.Adam(discriminator.parameters(), lr=4e-4, betas=(0.0, 0.9)),
        num_classes=2,
        separate_arrangements=separate,
        **kwargs,
    )


def test_trainer_updates_generator_and_discriminator():
    trainer = _trainer(_data(), perceptual_loss=torch.nn.L1Loss())
    g_before = [p.detach().clone() for p in trainer.generator.parameters()]
    d_before = [p.detach().clone() for p in trainer.discriminator.parameters()]
    trainer.run()
    assert trainer.state.iteration == 3
    out = trainer.state.output
    for key in ("loss_d", "loss_g_adv", "loss_fm", "loss_g", "loss_perceptual"):
        assert isinstance(out[key], float) and np.isfinite(out[key])
    assert out["fake"].shape == out["image"].shape == out["target"].shape == (2, 3, SIZE, SIZE)
    assert torch.equal(out["label"], (out["target"][:, :1] > 0).long())  # label and target share arrangement b
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.discriminator.parameters()))
    assert all(p.requires_grad for p in trainer.discriminator.parameters())


def test_trainer_arrangements_are_seeded_and_separable():
    first, second = _trainer([], seed=1), _trainer([], seed=1)
    draws = [first.draw_arrangement() for _ in range(40)]
    assert draws == [second.draw_arrangement() for _ in range(40)]
    assert len(set(draws)) == 7  # the original and the six swaps
    assert {_trainer([], shuffle_grid=1).draw_arrangement() for _ in range(5)} == {(0,)}
    joint = _trainer(_data(2), separate=False, seed=1)
    joint.run()
    assert torch.equal(joint.state.output["image"], joint.state.output["target"])
    separate = _trainer(_data(2), seed=1)  # seed 1: the first two draws differ
    separate.run()
    assert not torch.equal(separate.state.output["image"], separate.state.output["target"])


def test_pseudo_label_cleaning_keeps_every_object_and_every_class():
    """The default cleaning keeps each object above the size floor and every class; the paper's ISIC setting keeps
    the largest object only, exactly as the former MONAI Compose (FillHoles, largest component, smoothing, 0.5)."""
    from monai.transforms import AsDiscrete, Compose, FillHoles, GaussianSmooth, KeepLargestConnectedComponent
    from scipy.ndimage import label as components

    from common.transforms import CleanPseudoLabel

    two = torch.zeros(1, 48, 48)
    two[:, 5:20, 5:20] = 1
    two[:, 28:40, 25:45] = 1
    two[:, 10:13, 10:13] = 0  # a hole
    two[:, 44:46, 2:4] = 1  # a 4-pixel speck
    default = CleanPseudoLabel(2)(two.clone())
    assert components(default[0].numpy())[1] == 2 and default[0, 11, 11] == 1 and default[0, 44, 2] == 0
    largest = CleanPseudoLabel(2, keep_largest_component=True, min_object_size=0)(two.clone())
    former_recipe = Compose(
        [FillHoles(), KeepLargestConnectedComponent(applied_labels=[1]), GaussianSmooth(1.0)]
        + [AsDiscrete(threshold=0.5), FillHoles()]
    )
    former = former_recipe(two.clone())
    assert components(largest[0].numpy())[1] == 1 and torch.equal(largest, torch.as_tensor(former).float())
    three = torch.zeros(1, 32, 32)
    three[:, 4:28, 4:28] = 1  # grey matter around
    three[:, 10:22, 10:22] = 2  # white matter inside
    three[:, 6:8, 6:8] = 0  # a hole in the grey matter
    cleaned = CleanPseudoLabel(3)(three.clone())
    assert int((cleaned == 2).sum()) > 100 and cleaned[0, 6, 6] == 1  # class 2 survives (the former recipe: 0 px)
    assert int((torch.as_tensor(former_recipe(three.clone())) == 2).sum()) == 0
