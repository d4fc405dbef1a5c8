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


def test_unlabelled_training_item(tmp_path: Path):
    root = write_volume_dataset(tmp_path / "d", num_cases=1)
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/case_0.nii.gz"}]}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="has no 'label'"):
        _prepare(root, tmp_path / "work")


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
