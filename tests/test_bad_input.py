"""Bad input gives a clear error naming the file and what was expected, and leaves nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_volume_dataset
from monai.data import MetaTensor

from common.data import prepare_datalists
from common.transforms import ValidateImageLabeld


def _prepare(root: Path, work: Path, **kwargs):
    return prepare_datalists(str(root), str(work), val_fraction=0.0, test_fraction=0.0, **kwargs)


def _assert_nothing_left(work: Path) -> None:
    prepared = work / "prepared"
    assert not prepared.exists() or not any(prepared.iterdir()), list(prepared.iterdir())


def test_shape_mismatch_names_label_file(volume_dataset: Path, tmp_path: Path):
    bad = volume_dataset / "labelsTr" / "case_3.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 15, 8), np.uint8), np.eye(4)), bad)
    with pytest.raises(ValueError, match=r"case_3\.nii\.gz.*does not match"):
        _prepare(volume_dataset, tmp_path / "work")
    _assert_nothing_left(tmp_path / "work")


def test_missing_file_names_file_and_datalist(volume_dataset: Path, tmp_path: Path):
    (volume_dataset / "imagesTr" / "case_2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"case_2\.nii\.gz.*dataset\.json"):
        _prepare(volume_dataset, tmp_path / "work")


def test_corrupt_file_names_file(volume_dataset: Path, tmp_path: Path):
    (volume_dataset / "imagesTr" / "case_1.nii.gz").write_bytes(b"this is not a nifti file")
    with pytest.raises(ValueError, match=r"case_1\.nii\.gz: could not be read as an image"):
        _prepare(volume_dataset, tmp_path / "work")
    _assert_nothing_left(tmp_path / "work")


def test_nan_in_image_names_file(volume_dataset: Path, tmp_path: Path):
    path = volume_dataset / "imagesTr" / "case_4.nii.gz"
    data = nib.load(path).get_fdata().astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(ValueError, match=r"case_4\.nii\.gz: image holds 1 NaN"):
        _prepare(volume_dataset, tmp_path / "work")
    _assert_nothing_left(tmp_path / "work")


def test_empty_label_set(tmp_path: Path):
    root = write_volume_dataset(tmp_path / "d", num_cases=1)
    (root / "dataset.json").write_text(json.dumps({"training": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="'training' list is empty"):
        _prepare(root, tmp_path / "work")


def test_unlabelled_training_items(tmp_path: Path):
    """One unlabelled training item among labelled ones is a mistake; all unlabelled is the label-free path, which
    the bundles that need labels refuse with a message that says so."""
    root = write_volume_dataset(tmp_path / "d", num_cases=2)
    content = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    mixed = [content["training"][0], {"image": content["training"][1]["image"]}]
    (root / "dataset.json").write_text(json.dumps({"training": mixed}), encoding="utf-8")
    with pytest.raises(ValueError, match="has no 'label' while others have one"):
        _prepare(root, tmp_path / "work")
    images = [{"image": item["image"]} for item in content["training"]]
    (root / "dataset.json").write_text(json.dumps({"training": images}), encoding="utf-8")
    with pytest.raises(ValueError, match="needs labelled training images"):
        _prepare(root, tmp_path / "work")
    datalists = _prepare(root, tmp_path / "work", require_labels=False, monitor_fraction=0.5)
    assert not datalists["training"] and datalists["unlabeled"] and datalists["monitor"]
    assert {item["source"] for item in datalists["unlabeled"]}.isdisjoint(i["source"] for i in datalists["monitor"])


def test_missing_dataset_dir_and_datalist(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        _prepare(tmp_path / "nowhere", tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        _prepare(tmp_path / "empty", tmp_path / "work")
    (tmp_path / "empty" / "dataset.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        _prepare(tmp_path / "empty", tmp_path / "work")


def test_wrong_channel_count_and_label_values(volume_dataset: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"expected 3 channel\(s\), got 1"):
        _prepare(volume_dataset, tmp_path / "work", num_channels=3)
    path = volume_dataset / "labelsTr" / "case_0.nii.gz"
    nib.save(nib.Nifti1Image(np.full((16, 16, 8), 7, np.uint8), np.eye(4)), path)
    with pytest.raises(ValueError, match=r"case_0\.nii\.gz: label values \[7\]"):
        _prepare(volume_dataset, tmp_path / "work2", num_classes=2)


def test_validate_transform_names_source():
    image = MetaTensor(torch.zeros(2, 8, 8), meta={"filename_or_obj": "/data/img.png"})
    label = MetaTensor(torch.zeros(1, 8, 9), meta={"filename_or_obj": "/data/lbl.png"})
    with pytest.raises(ValueError, match=r"/data/img\.png: expected 1 channel"):
        ValidateImageLabeld(num_channels=1)({"image": image, "label": label})
    with pytest.raises(ValueError, match=r"/data/lbl\.png: label spatial shape \(8, 9\) does not match"):
        ValidateImageLabeld()({"image": image, "label": label})
    image[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        ValidateImageLabeld()({"image": image})


def _png_dataset(root: Path, mask_values: tuple[int, int]) -> Path:
    """Two 2D PNG images with their binary masks saved as 8-bit PNG with the given (background, object) values."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    items = []
    for i in range(2):
        mask = np.zeros((16, 16), np.uint8)
        mask[4 : 8 + i, 4:10] = 1
        Image.fromarray((40 + 150 * mask).astype(np.uint8)).save(root / "images" / f"img{i}.png")
        Image.fromarray(np.where(mask > 0, mask_values[1], mask_values[0]).astype(np.uint8)).save(
            root / "masks" / f"img{i}.png"
        )
        items.append(
            {"image": f"./images/img{i}.png", "label": f"./masks/img{i}.png", "object_pixels": int(mask.sum())}
        )
    (root / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    return root


def test_binary_masks_saved_as_0_255_read_as_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    import common.transforms.validation as validation

    root = _png_dataset(tmp_path / "png255", (0, 255))
    validation._told_binary_255 = False
    with caplog.at_level("INFO", logger="common.transforms.validation"):
        lists = _prepare(root, tmp_path / "work", num_channels=1, num_classes=2)
    labels = [np.load(item["label"]) for item in lists["training"]]
    assert [set(np.unique(lbl).tolist()) for lbl in labels] == [{0, 1}, {0, 1}]
    expected = sorted(i["object_pixels"] for i in json.loads((root / "dataset.json").read_text())["training"])
    assert sorted(int(lbl.sum()) for lbl in labels) == expected
    assert sum("0/255 read as classes 0/1" in r.getMessage() for r in caplog.records) == 1  # said once
    with pytest.raises(ValueError, match=r"label values \[255\] are not class indices in \[0, 2\]"):
        _prepare(root, tmp_path / "work3", num_channels=1, num_classes=3)  # only a binary task maps 255 to 1
    other = _png_dataset(tmp_path / "png128", (0, 128))
    with pytest.raises(ValueError, match=r"img0\.png: label values \[128\] are not class indices"):
        _prepare(other, tmp_path / "work128", num_channels=1, num_classes=2)
