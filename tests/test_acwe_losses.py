"""Unit tests of the Chen & Frey (MIDL 2020) pieces: RCNN, ACWE / label losses, classical Chan-Vese."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.classical.chan_vese import chan_vese_segment
from common.losses.acwe import ActiveContourCombinedLoss, ActiveContourLabelLoss, ACWELoss
from common.networks.rcnn import RecurrentConvNet


def _two_region_image(size: int = 16, low: float = 0.2, high: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 1, size, size) image: a bright square on a dark background, and its (1, 1, size, size) mask."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return low + (high - low) * mask, mask


@pytest.mark.parametrize("shared", [True, False])
def test_rcnn_shapes_sharing_and_torchscript(shared: bool):
    net = RecurrentConvNet(shared=shared).eval()
    x = torch.rand(2, 1, 24, 40)
    assert net(x).shape == (2, 1, 24, 40)
    rec = net.blocks[0].conv_rec
    assert (rec[0] is rec[2]) == shared
    scripted = torch.jit.script(net).eval()
    torch.testing.assert_close(scripted(x), net(x))


def test_rcnn_freeze_blocks():
    net = RecurrentConvNet()
    trainable = net.freeze_blocks(1)
    assert all(not p.requires_grad for p in net.blocks[0].parameters())
    frozen = len(list(net.blocks[0].parameters()))
    assert len(trainable) == len(list(net.parameters())) - frozen and all(p.requires_grad for p in trainable)


def test_losses_shapes_and_gradients():
    image, mask = _two_region_image()
    image, mask = image.repeat(3, 1, 1, 1), mask.repeat(3, 1, 1, 1)
    pred = torch.rand(3, 1, 16, 16, requires_grad=True)
    for loss, args in (
        (ACWELoss(), (image,)),
        (ActiveContourLabelLoss(), (mask,)),
        (ActiveContourCombinedLoss(), (image, mask)),
    ):
        value = loss(pred, *args)
        assert value.ndim == 0
        pred.grad = None
        value.backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert ACWELoss(reduction="none")(pred, image).shape == (3,)
    torch.testing.assert_close(ACWELoss(reduction="sum")(pred, image), 3 * ACWELoss(reduction="mean")(pred, image))


def test_losses_prefer_the_true_partition():
    image, mask = _two_region_image()
    inverted_sign = -mask  # output <= 0 everywhere: everything background
    half = torch.zeros_like(mask)
    half[..., :8] = 1  # a wrong partition
    for wrong in (half, 1 - mask, inverted_sign):
        assert ACWELoss(nu=0.004)(mask, image) < ACWELoss(nu=0.004)(wrong, image)
        assert ActiveContourLabelLoss()(mask, mask) < ActiveContourLabelLoss()(wrong, mask)
    # the area term: nu penalises the foreground area, so the inverted partition costs more by nu * (area difference)
    difference = ACWELoss(nu=0.5)(1 - mask, image) - ACWELoss(nu=0.5)(mask, image)
    torch.testing.assert_close(difference, 0.5 * ((1 - mask).sum() - mask.sum()))


def test_batch_versus_per_image_statistics():
    dark, mask = _two_region_image(low=0.0, high=0.4)
    bright, _ = _two_region_image(low=0.5, high=1.0)
    image, pred = torch.cat([dark, bright]), torch.cat([mask, mask])
    per_image, per_batch = ACWELoss(nu=0.0), ACWELoss(nu=0.0, batch_statistics=True)
    torch.testing.assert_close(per_image(pred, image), torch.tensor(0.0))  # each image is exactly two constants
    assert per_batch(pred, image) > 0.1  # one c1, c2 for both images cannot fit both
    c1, c2 = per_batch.region_means(pred, image)
    assert c1.shape == (1, 1, 1, 1) and torch.isclose(c1.squeeze(), torch.tensor(0.7))
    # one image: both are the same
    torch.testing.assert_close(per_image(pred[:1], image[:1]), per_batch(pred[:1], image[:1]))


def test_combined_loss_weights_and_missing_label():
    image, mask = _two_region_image()
    pred = torch.rand_like(mask)
    combined = ActiveContourCombinedLoss(acwe_weight=1.0, label_weight=0.4, nu=0.004)
    expected = ACWELoss(nu=0.004)(pred, image) + 0.4 * ActiveContourLabelLoss()(pred, mask)
    torch.testing.assert_close(combined(pred, image, mask), expected)
    torch.testing.assert_close(ActiveContourCombinedLoss(label_weight=0.0)(pred, image), ACWELoss()(pred, image))
    with pytest.raises(ValueError, match="no label"):
        combined(pred, image, None)
    with pytest.raises(ValueError, match="pred must be"):
        ACWELoss()(pred[0], image[0])


def test_chan_vese_finds_the_bright_square():
    image, mask = _two_region_image(size=32)
    noisy = image[0, 0].numpy() + np.random.default_rng(0).normal(0, 0.05, (32, 32))
    seg = chan_vese_segment(noisy)
    assert seg.dtype == np.uint8 and seg.shape == (32, 32)
    dice = 2 * (seg * mask[0, 0].numpy()).sum() / (seg.sum() + mask.sum().item())
    assert dice > 0.95


def test_label_loss_skips_placeholder_labels():
    """Mode 4: an unlabelled image (placeholder label) adds nothing to the label term; a labelled one does."""
    from common.transforms import MISSING_LABEL, AddMissingLabeld

    image, mask = _two_region_image()
    placeholder = AddMissingLabeld("label", "image")({"image": image[0]})["label"][None]
    assert placeholder.shape == mask.shape and bool((placeholder == MISSING_LABEL).all())
    loss = ActiveContourLabelLoss(reduction="none")
    pred = torch.rand(2, 1, 16, 16)
    per_image = loss(pred, torch.cat([mask, placeholder]))
    assert per_image[0] > 0 and per_image[1] == 0
    combined = ActiveContourCombinedLoss(acwe_weight=1.0, label_weight=0.4, reduction="none")
    both = combined(pred, torch.cat([image, image]), torch.cat([mask, placeholder]))
    torch.testing.assert_close(both[1], ACWELoss(reduction="none")(pred, torch.cat([image, image]))[1])


def test_foreground_phase_rules_and_flip():
    """The rule complements an output that took the dark background as the object (``bright``), keeps it under
    ``dark`` and ``none``, and ``auto`` takes the smaller phase; the flip is stored in the network's state."""
    from common.handlers.foreground_phase import phase_statistics, should_flip

    image, mask = _two_region_image()
    background_as_object = 1.0 - 2.0 * mask  # > 0 outside the bright square
    contrast, area, valid = phase_statistics(background_as_object, image)
    assert bool(valid.all()) and float(contrast) < 0 and float(area) == 0.75
    assert should_flip(contrast.numpy(), area.numpy(), "bright") and should_flip(contrast.numpy(), area.numpy(), "auto")
    assert not should_flip(contrast.numpy(), area.numpy(), "dark") and not should_flip(
        contrast.numpy(), area.numpy(), "none"
    )
    with pytest.raises(ValueError, match="foreground_phase"):
        should_flip(contrast.numpy(), area.numpy(), "brightest")
    net = RecurrentConvNet(features=4, num_blocks=1, steps=1).eval()
    x = torch.rand(1, 1, 8, 8)
    before = net(x)
    net.set_foreground_phase(True)
    torch.testing.assert_close(net(x), -before)
    state = net.state_dict()
    assert float(state["phase_sign"]) == -1 and float(state["phase_decided"]) == 1
    fresh = RecurrentConvNet(features=4, num_blocks=1, steps=1).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), net(x))


def test_percentile_scaling_ignores_outliers():
    from common.transforms import scale_percentiles

    image = torch.full((1, 20, 20), 0.3)
    image[:, 5:15, 5:15] = 0.5
    image[0, 0, 0] = 100.0  # one saturated pixel
    minmax = scale_percentiles(image, (0, 100))
    robust = scale_percentiles(image, (0.5, 99.5))
    assert float(minmax[0, 10, 10] - minmax[0, 1, 1]) < 0.01  # min-max squeezes the two phases together
    assert float(robust[0, 10, 10]) == 1.0 and float(robust[0, 1, 1]) == 0.0
    volume = torch.stack([image[0], 2 * image[0]], dim=-1)[None]  # (1, 20, 20, 2): slices along the last axis
    torch.testing.assert_close(scale_percentiles(volume, (0.5, 99.5), slice_axis=2)[..., 1], robust)


def test_acwe_energy_metric_prefers_the_true_partition():
    from common.metrics import ActiveContourEnergy

    image, mask = _two_region_image()
    metric = ActiveContourEnergy(nu=0.0)
    metric.update(([mask[0]], [image[0]]))
    right = metric.compute()
    metric.reset()
    metric.update(([1 - mask[0]], [image[0]]))
    inverse = metric.compute()
    metric.reset()
    metric.update(([torch.zeros_like(mask[0])], [image[0]]))
    assert right < 1e-6 and abs(inverse - right) < 1e-6 and metric.compute() > 0.01


def test_classical_baselines_find_the_bright_square():
    from common.classical.baselines import classical_segmentation

    image, mask = _two_region_image(size=32)
    noisy = image[0, 0].numpy() + 0.05 * np.random.default_rng(0).standard_normal((32, 32))
    for method in ("otsu", "chan_vese"):
        pred = classical_segmentation(noisy, method)
        assert pred.dtype == np.int64 and (pred == mask[0, 0].numpy()).mean() > 0.95, method
    three = np.concatenate([noisy, noisy + 1.0], axis=1)
    assert set(np.unique(classical_segmentation(three, "otsu", num_classes=3))) == {0, 1, 2}
    with pytest.raises(ValueError, match="two-phase"):
        classical_segmentation(noisy, "chan_vese", num_classes=3)
    with pytest.raises(ValueError, match="method must be one of"):
        classical_segmentation(noisy, "watershed")


def test_report_on_items_scores_a_method_on_prepared_items(tmp_path):
    from common.classical.baselines import classical_segmentation, report_on_items

    image, mask = _two_region_image(size=32)
    np.save(tmp_path / "image.npy", image[0].numpy())
    np.save(tmp_path / "label.npy", mask[0].numpy().astype(np.uint8))
    items = [{"image": str(tmp_path / "image.npy"), "label": str(tmp_path / "label.npy")}]
    summary = report_on_items(items, lambda x: classical_segmentation(x, "otsu")).to_dict()["summary"]
    assert summary["dice"]["mean"]["mean"] == pytest.approx(1.0)
    summary = report_on_items(items, lambda x: np.zeros_like(x, dtype=np.int64)).to_dict()["summary"]
    assert summary["dice"]["mean"]["mean"] == pytest.approx(0.0)
