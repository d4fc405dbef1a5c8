"""The 3D-to-2D slice pipeline, datalist splits by volume and the labelled fraction."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import write_volume_dataset

from common.data import SliceSettings, prepare_datalists, prepare_items, select_labelled, split_by_group


def test_split_by_group_keeps_groups_together():
    items = [{"image": f"v{v}_s{s}.npy", "group": f"v{v}"} for v in range(10) for s in range(3)]
    parts = split_by_group(items, {"validation": 0.2, "test": 0.2}, seed=1)
    groups = {name: {i["group"] for i in part} for name, part in parts.items()}
    assert sum(len(p) for p in parts.values()) == len(items)
    assert len(groups["validation"]) == 2 and len(groups["test"]) == 2 and len(groups["training"]) == 6
    assert not groups["training"] & groups["validation"] and not groups["training"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert split_by_group(items, {"validation": 0.2, "test": 0.2}, seed=1) == parts


def test_select_labelled_is_volume_level():
    items = [{"image": f"v{v}_s{s}", "label": "l", "group": f"v{v}"} for v in range(8) for s in range(2)]
    labelled, unlabelled = select_labelled(items, 0.25, seed=0)
    assert len({i["group"] for i in labelled}) == 2
    assert all("label" not in i for i in unlabelled)
    assert not {i["group"] for i in labelled} & {i["group"] for i in unlabelled}
    assert select_labelled(items, 0.0)[0] == []
    with pytest.raises(ValueError, match="labelled_fraction"):
        select_labelled(items, 1.5)


def test_domains_and_filters(volume_dataset: Path, tmp_path: Path):
    lists = prepare_datalists(
        str(volume_dataset),
        str(tmp_path / "work"),
        val_fraction=0.2,
        test_fraction=0.2,
        slicing={"axis": 2, "foreground_threshold": 0.0, "min_foreground_fraction": 0.1, "present_min_pixels": 4},
        intensity={"k": 5.0, "clip": [-1, 1], "foreground_threshold": 0.0},
    )
    train = lists["training"]
    # 8 slices per volume, tumour in slices 2..4 of even cases
    for item in train:
        label = np.load(item["label"])
        image = np.load(item["image"])
        assert image.shape == (1, 16, 16) and label.shape == (1, 16, 16)
        assert -1.0 <= image.min() and image.max() <= 1.0
        expected = "present" if label.sum() > 0 else "absent"
        assert item["domain"] == expected
    present = [i for i in train if i["domain"] == "present"]
    assert present and all(i["slice"] in (2, 3, 4) for i in present)
    # no volume in two splits
    sources = {name: {i["source"] for i in lists[name]} for name in ("training", "validation", "test")}
    assert not sources["training"] & sources["test"] and not sources["training"] & sources["validation"]
    assert len(lists["test_volumes"]) == len(sources["test"])


def test_min_foreground_filter(volume_dataset: Path, tmp_path: Path):
    # the 'brain' covers 144 of 256 pixels (56 %)
    lists = prepare_datalists(
        str(volume_dataset),
        str(tmp_path / "work"),
        val_fraction=0.0,
        test_fraction=0.0,
        slicing={"foreground_threshold": 0.0, "min_foreground_fraction": 0.5},
    )
    assert len(lists["training"]) == 6 * 8 and all(i["foreground_fraction"] == 0.5625 for i in lists["training"])
    with pytest.raises(ValueError, match="no labelled training slice"):
        prepare_datalists(
            str(volume_dataset),
            str(tmp_path / "work2"),
            slicing={"foreground_threshold": 0.0, "min_foreground_fraction": 0.6},
        )


def test_present_only_domain_and_fraction(volume_dataset: Path, tmp_path: Path):
    # tumour 16 px of a 144 px brain = 11 %: a 20 % rule drops those slices, absent ones stay
    lists = prepare_datalists(
        str(volume_dataset),
        str(tmp_path / "work"),
        val_fraction=0.0,
        test_fraction=0.0,
        slicing={"foreground_threshold": 0.0, "present_min_fraction": 0.2},
    )
    assert {i["domain"] for i in lists["training"]} == {"absent"}
    lists = prepare_datalists(
        str(volume_dataset),
        str(tmp_path / "work"),
        val_fraction=0.0,
        test_fraction=0.0,
        slicing={"foreground_threshold": 0.0, "domains": ["present"]},
    )
    assert {i["domain"] for i in lists["training"]} == {"present"}


def test_labelled_fraction_and_cache(volume_dataset: Path, tmp_path: Path):
    work = tmp_path / "work"
    lists = prepare_datalists(
        str(volume_dataset), str(work), val_fraction=0.0, test_fraction=0.0, labelled_fraction=0.5
    )
    labelled = {i["source"] for i in lists["training"]}
    unlabelled = {i["source"] for i in lists["unlabeled"]}
    assert len(labelled) == 3 and len(unlabelled) == 3 and not labelled & unlabelled
    assert all("label" not in i and i["domain"] == "unlabelled" for i in lists["unlabeled"])
    prepared = list((work / "prepared").iterdir())
    mtime = (prepared[0] / "datalist.json").stat().st_mtime_ns
    again = prepare_datalists(
        str(volume_dataset), str(work), val_fraction=0.0, test_fraction=0.0, labelled_fraction=0.5
    )
    assert again == lists and (prepared[0] / "datalist.json").stat().st_mtime_ns == mtime


def test_prepare_items_passes_prepared_samples_and_slices_raw_items_like_prepare_datalists(
    volume_dataset: Path, tmp_path: Path
):
    """Raw items (as MONAI Label hands them) become the same samples as prepare_datalists writes; prepared samples
    pass through without anything written; a second call reads the cache."""
    lists = prepare_datalists(str(volume_dataset), str(tmp_path / "a"), val_fraction=0.0, test_fraction=0.0)
    raw = [
        {
            "image": str(volume_dataset / f"imagesTr/case_{i}.nii.gz"),
            "label": str(volume_dataset / f"labelsTr/case_{i}.nii.gz"),
        }
        for i in range(6)
    ]
    work = tmp_path / "b"
    assert prepare_items(lists["training"], str(work)) == lists["training"] and not work.exists()
    samples = prepare_items(raw, str(work))
    assert len(samples) == len(lists["training"]) == 6 * 8
    for ours, theirs in zip(samples, lists["training"]):
        np.testing.assert_array_equal(np.load(ours["image"]), np.load(theirs["image"]))
        np.testing.assert_array_equal(np.load(ours["label"]), np.load(theirs["label"]))
    assert prepare_items(raw, str(work)) == samples and len(list((work / "prepared_items").iterdir())) == 1


def test_slice_axis_changes_slice_shape(tmp_path: Path):
    root = write_volume_dataset(tmp_path / "d", num_cases=2, shape=(16, 12, 8))
    lists = prepare_datalists(str(root), str(tmp_path / "w"), val_fraction=0, test_fraction=0, slicing={"axis": 0})
    assert np.load(lists["training"][0]["image"]).shape == (1, 12, 8)
    assert len(lists["training"]) == 2 * 16


def test_spatial_size_resizes_images_and_labels(tmp_path: Path):
    root = write_volume_dataset(tmp_path / "d", num_cases=2, shape=(16, 12, 8))
    lists = prepare_datalists(
        str(root), str(tmp_path / "w"), val_fraction=0, test_fraction=0, slicing={"spatial_size": [8, 6]}
    )
    for item in lists["training"]:
        image, label = np.load(item["image"]), np.load(item["label"])
        assert image.shape == (1, 8, 6) and image.dtype == np.float32
        assert label.shape == (1, 8, 6) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}


def test_multichannel_volumes(tmp_path: Path):
    root = tmp_path / "mc"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = np.random.default_rng(0).random((10, 10, 4, 3)).astype(np.float32)  # (H, W, D, C) as in MSD BraTS
    label = np.zeros((10, 10, 4), np.uint8)
    label[2:5, 2:5, 1] = 1
    nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / "a.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / "a.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}), encoding="utf-8"
    )
    lists = prepare_datalists(str(root), str(tmp_path / "w"), val_fraction=0, test_fraction=0, num_channels=3)
    assert np.load(lists["training"][0]["image"]).shape == (3, 10, 10)


def test_slice_settings_validation():
    with pytest.raises(ValueError, match="axis"):
        SliceSettings(axis=3)
    with pytest.raises(ValueError, match="domains"):
        SliceSettings(domains=["maybe"])
    with pytest.raises(ValueError, match="spatial_size"):
        SliceSettings(spatial_size=[256])
