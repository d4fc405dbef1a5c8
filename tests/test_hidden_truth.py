"""common.data.HiddenTruth: the source label of a prepared item, for 2D PNG / NIfTI images and sliced 3D volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_volume_dataset

from common.atomic_write import save_png_atomic
from common.data import HiddenTruth, prepare_datalists


def _label_2d(h: int = 6, w: int = 4) -> np.ndarray:
    """A non-square ``(H, W)`` label with every row and column distinct, so a transpose or flip is seen."""
    return (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8)


def _write_2d_dataset(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A PNG pair (mask saved as 0/255, ``label_scale`` 1) and a NIfTI pair in ``training``; one PNG in ``test``."""
    root.mkdir(parents=True, exist_ok=True)
    binary = (_label_2d() > 0).astype(np.uint8)
    save_png_atomic(root / "a.png", np.full((1, 6, 4), 100, np.uint8))
    save_png_atomic(root / "a_mask.png", binary[None] * 255)
    nib.save(nib.Nifti1Image(np.zeros((6, 4), np.float32), np.eye(4)), root / "b.nii.gz")
    nib.save(nib.Nifti1Image(_label_2d(), np.eye(4)), root / "b_label.nii.gz")
    save_png_atomic(root / "c.png", np.zeros((1, 6, 4), np.uint8))
    save_png_atomic(root / "c_mask.png", np.zeros((1, 6, 4), np.uint8))
    content = {
        "training": [
            {"image": "./a.png", "label": "./a_mask.png"},
            {"image": "./b.nii.gz", "label": "./b_label.nii.gz"},
        ],
        "test": [{"image": "./c.png", "label": "./c_mask.png"}],
    }
    (root / "dataset.json").write_text(json.dumps(content), encoding="utf-8")
    return root / "dataset.json", {"a": binary, "b": _label_2d()}


def test_2d_png_and_nifti_sources(tmp_path: Path):
    """A prepared item's ``source`` finds its label: a 0/255 PNG mask as 0/1 (binary task), a NIfTI label as is,
    both ``(1, H, W)`` long in the image's orientation; ``image`` stands in for a missing ``source``."""
    datalist, expected = _write_2d_dataset(tmp_path / "data")
    truth = HiddenTruth(datalist, num_classes=2)
    a = truth({"image": "/prepared/0000_a_0000_image.npy", "source": str(tmp_path / "data" / "a.png"), "slice": 0})
    assert a.dtype == torch.long and a.shape == (1, 6, 4)
    np.testing.assert_array_equal(a[0].numpy(), expected["a"])
    b = HiddenTruth(datalist, num_classes=3)({"image": str(tmp_path / "data" / "sub" / ".." / "b.nii.gz")})
    assert b.shape == (1, 6, 4)
    np.testing.assert_array_equal(b[0].numpy(), expected["b"])


def test_none_outside_the_splits(tmp_path: Path):
    """An image not in the chosen splits (another split, the datalist's unlabelled images) has no truth; a datalist
    without any label in them is refused."""
    datalist, _ = _write_2d_dataset(tmp_path / "data")
    truth = HiddenTruth(datalist)
    assert truth({"image": "x.npy", "source": str(tmp_path / "data" / "c.png")}) is None
    assert truth({"image": str(tmp_path / "elsewhere.png")}) is None
    assert HiddenTruth(datalist, splits=("training", "test"))({"image": str(tmp_path / "data" / "c.png")}) is not None
    with pytest.raises(ValueError, match="no labelled item"):
        HiddenTruth(datalist, splits=("unlabeled",))


def test_resized_to_the_prepared_shape(tmp_path: Path):
    """With a spatial shape (a pipeline that resized its samples) the label is resized by nearest neighbour."""
    datalist, expected = _write_2d_dataset(tmp_path / "data")
    truth = HiddenTruth(datalist, num_classes=3)
    item = {"image": "x.npy", "source": str(tmp_path / "data" / "b.nii.gz")}
    big = truth(item, (12, 8))
    assert big.dtype == torch.long and big.shape == (1, 12, 8)
    np.testing.assert_array_equal(big[0].numpy(), expected["b"].repeat(2, axis=0).repeat(2, axis=1))
    assert torch.equal(truth(item, (6, 4)), truth(item))  # the same shape: unchanged
    small = truth(item, (3, 2))
    np.testing.assert_array_equal(small[0].numpy(), expected["b"][::2, ::2])


def test_3d_volume_sliced_along_axis_2(tmp_path: Path):
    """Items prepared from NIfTI volumes by the bundles' pipeline: every unlabelled slice gets the ``slice``-th
    slice of its volume's label along axis 2, and every labelled one the label the pipeline wrote for it."""
    root = write_volume_dataset(tmp_path / "vol", num_cases=6, shape=(16, 12, 8))
    split = {"val_fraction": 0.0, "test_fraction": 0.0}
    lists = prepare_datalists(str(root), str(tmp_path / "work"), labelled_fraction=0.5, num_classes=2, seed=0, **split)
    assert lists["unlabeled"] and lists["training"]
    truth = HiddenTruth(root / "dataset.json", axis=2, num_classes=2)
    for item in lists["unlabeled"]:
        volume = np.asarray(nib.load(item["source"].replace("imagesTr", "labelsTr")).dataobj)
        label = truth(item)
        assert label.shape == (1, 16, 12)
        np.testing.assert_array_equal(label[0].numpy(), volume[:, :, item["slice"]])
    assert sum(int(truth(item).sum() > 0) for item in lists["unlabeled"]) == 6  # cases 0 and 4, slices 2-4
    for item in lists["training"]:
        np.testing.assert_array_equal(truth(item).numpy(), np.load(item["label"]))
    other_axis = HiddenTruth(root / "dataset.json", axis=0, num_classes=2)(lists["unlabeled"][0])
    assert other_axis.shape == (1, 12, 8)
