"""Real-data augmentation of translation_semi_seg (Vorontsov et al. 2022): MONAI transforms + RandSplineWarpd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle_utils import make_workflow
from monai.transforms import Compose

from common.transforms import RandSplineWarpd, translation_augmentation


def _square(height: int = 64, width: int = 48) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[:, 24:40, 16:32] = 1
    return mask


def test_spline_warp_is_the_identity_at_zero_std_and_moves_pixels_otherwise():
    mask = _square()
    still = RandSplineWarpd(["label"], std=0.0, mode="nearest")
    assert torch.equal(torch.as_tensor(still({"label": mask.clone()})["label"]), mask)
    warp = RandSplineWarpd(["label"], std=5.0, mode="nearest")
    warp.set_random_state(0)
    moved = torch.as_tensor(warp({"label": mask.clone()})["label"])
    assert not torch.equal(moved, mask)
    assert set(moved.unique().tolist()) <= {0.0, 1.0}  # nearest keeps a mask binary


def test_spline_warp_field_passes_through_the_control_points():
    warp = RandSplineWarpd(["image"], std=5.0, grid_size=3)
    warp.set_random_state(1)
    warp.randomize()
    field = warp.displacement(41, 21)  # control points at rows 0, 20, 40 and columns 0, 10, 20
    control = field[:, ::20, ::10]
    assert control.shape == (2, 3, 3)
    assert torch.allclose(control, torch.as_tensor(warp._offsets), atol=1e-5)
    assert 2.0 < float(torch.as_tensor(warp._offsets).std()) < 8.0


def test_image_and_mask_get_the_same_geometric_transform():
    mask = _square()
    data = {"image": mask.clone() * 2.0 - 1.0, "label": mask.clone()}
    augment = Compose(translation_augmentation(label_keys=["label"], intensity_shift=0.0))
    augment.set_random_state(3)
    for _ in range(5):
        out = augment({k: v.clone() for k, v in data.items()})
        image, label = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
        agreement = ((image > 0) == (label > 0.5)).float().mean()
        assert agreement > 0.98 and label.sum() > 0


def test_intensity_shift_is_additive_within_range_and_reflect_fill_leaves_no_empty_border():
    image = torch.full((1, 40, 40), 0.5)
    augment = Compose(translation_augmentation(zoom=0.1, rotation_degrees=3.0, intensity_shift=0.1))
    augment.set_random_state(5)
    shifts = []
    for _ in range(10):
        out = torch.as_tensor(augment({"image": image.clone()})["image"])
        assert torch.allclose(out, out.flatten()[0].expand_as(out), atol=1e-4)  # constant stays constant: no fill
        shifts.append(float(out.flatten()[0]) - 0.5)
    assert all(abs(s) <= 0.1 + 1e-5 for s in shifts) and np.std(shifts) > 0.01


def test_invalid_grid_size_is_rejected():
    with pytest.raises(ValueError, match="grid_size"):
        RandSplineWarpd(["image"], grid_size=1)


def test_configs_augment_real_data_only():
    mnist = make_workflow("translation_semi_seg", ["train.json"]).parser
    assert mnist.get_parsed_content("train#augmentation") == []
    brats = make_workflow("translation_semi_seg", ["train.json", "brats.json"]).parser
    augmentation = brats.get_parsed_content("train#augmentation")
    names = [type(t).__name__ for t in augmentation]
    assert names == ["RandFlipd", "RandFlipd", "RandAffined", "RandSplineWarpd", "RandShiftIntensityd"]
    assert [type(t).__name__ for t in brats.get_parsed_content("train#absent_augmentation")] == names
    assert make_workflow("translation_semi_seg", ["train.json", "lits.json"]).parser.get_parsed_content("augment")
