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
    nib.save(nib.Nifti1Image(np.full((16, 16, 8), 7, np.uint8), nib.load(path).affine), path)
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
    label = MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "/data/lbl.png"})
    label[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"/data/lbl\.png: label holds NaN/Inf value\(s\); expected class indices"):
        ValidateImageLabeld()({"image": torch.zeros(2, 8, 8), "label": label})


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


@pytest.mark.parametrize(
    "content,expected",
    [
        ({"training": {"image": "./imagesTr/case_0.nii.gz"}}, "'training' must be a list .* got a dict"),
        ({"training": "./imagesTr/case_0.nii.gz"}, "'training' must be a list .* got a str"),
        ([{"image": "./imagesTr/case_0.nii.gz"}], "expected a JSON object .* got a list"),
        (
            {"training": [{"label": "./labelsTr/case_0.nii.gz"}]},
            r"'training' item 0 has no 'image' \(its keys: \['label'\]\)",
        ),
        ({"training": [3]}, r"'training' item 0 is 3 \(type int\); expected an object"),
        ({"training": [{"image": ["./a.nii.gz", "./b.nii.gz"]}]}, r"'training' item 0: 'image' is \['\./a\.nii\.gz'"),
        ({"training": [{"image": "./imagesTr/case_0.nii.gz", "label": None}]}, "'training' item 0: 'label' is None"),
        ({"training": [{"image": "./imagesTr/case_0.nii.gz"}], "validation": {"a": 1}}, "'validation' must be a list"),
    ],
)
def test_malformed_dataset_json_names_file_and_key(content, expected: str, tmp_path: Path):
    root = write_volume_dataset(tmp_path / "d", num_cases=1)
    (root / "dataset.json").write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ValueError, match=f"{root / 'dataset.json'}: {expected}"):
        _prepare(root, tmp_path / "work")


def _write_label(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(data, nib.load(path).affine if affine is None else affine), path)


@pytest.mark.parametrize("num_classes", [2, None])
def test_non_integer_label_values(volume_dataset: Path, tmp_path: Path, num_classes):
    """A label of 0/0.5 (a soft or resampled mask) is refused, also when the bundle gives no num_classes: it would
    otherwise be cast to 0 when written as a class map."""
    path = volume_dataset / "labelsTr" / "case_0.nii.gz"
    label = np.asarray(nib.load(path).dataobj).astype(np.float32) * 0.5
    _write_label(path, label)
    expected = r"in \[0, 1\]" if num_classes else r"\(non-negative integers\)"
    with pytest.raises(ValueError, match=rf"case_0\.nii\.gz: label values \[0\.5\] are not class indices {expected}"):
        _prepare(volume_dataset, tmp_path / "work", num_classes=num_classes)
    _assert_nothing_left(tmp_path / "work")


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_rgb_label_and_rgb_image_name_the_file(tmp_path: Path, mode: str):
    from PIL import Image

    root = _png_dataset(tmp_path / "png", (0, 255))
    mask = np.asarray(Image.open(root / "masks" / "img1.png"))
    Image.fromarray(np.stack([mask] * len(mode), axis=-1), mode=mode).save(root / "masks" / "img1.png")
    with pytest.raises(ValueError, match=rf"img1\.png: expected a single-channel class map, got {len(mode)} channels"):
        _prepare(root, tmp_path / "work", num_channels=1, num_classes=2)
    root = _png_dataset(tmp_path / "png2", (0, 1))
    grey = np.asarray(Image.open(root / "images" / "img0.png"))
    Image.fromarray(np.stack([grey] * len(mode), axis=-1), mode=mode).save(root / "images" / "img0.png")
    with pytest.raises(ValueError, match=rf"img0\.png: expected 1 channel\(s\), got {len(mode)} .* convert it to grey"):
        _prepare(root, tmp_path / "work", num_channels=1, num_classes=2)


@pytest.mark.parametrize("move", ["shift_10mm", "flip_x"])
def test_label_on_another_grid_names_both_files(volume_dataset: Path, tmp_path: Path, move: str):
    """Same shape, different affine: the voxel arrays do not overlay in the world, so pairing them would train on
    a misplaced mask; the error names label and image. Header rounding (1e-4 mm) is accepted."""
    path = volume_dataset / "labelsTr" / "case_2.nii.gz"
    label = np.asarray(nib.load(path).dataobj)
    affine = nib.load(path).affine.copy()
    _write_label(path, label, affine + np.diag([1e-4, 1e-4, 0.0, 0.0]))
    _prepare(volume_dataset, tmp_path / "rounded")
    if move == "shift_10mm":
        affine[:3, 3] += [10.0, 0.0, 0.0]
    else:
        affine[0, 0], affine[0, 3] = -affine[0, 0], label.shape[0] - 1  # x flipped, same bounding box
    _write_label(path, label, affine)
    image = volume_dataset / "imagesTr" / "case_2.nii.gz"
    with pytest.raises(ValueError, match=rf"{path}: label has the shape of image {image} but lies elsewhere") as error:
        _prepare(volume_dataset, tmp_path / "work")
    assert "resample the label onto the image" in str(error.value)
    _assert_nothing_left(tmp_path / "work")


def test_constant_and_16_bit_images_prepare_finite_slices(tmp_path: Path):
    """The slice pipeline normalises an all-zero and a 16-bit image like inference does: no NaN from a zero std, and
    the 16-bit image (0..65535) gives the same samples as its 8-bit version."""
    from PIL import Image

    root = _png_dataset(tmp_path / "png", (0, 1))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "images" / "img0.png")
    eight = np.asarray(Image.open(root / "images" / "img1.png"))
    Image.fromarray(eight.astype(np.uint16) * 257).save(root / "images" / "img1_16.png")
    items = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["training"]
    items.append({"image": "./images/img1_16.png", "label": items[1]["label"]})
    (root / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    samples = _prepare(root, tmp_path / "work", num_channels=1, num_classes=2)["training"]
    arrays = {Path(s["source"]).name: np.load(s["image"]) for s in samples}
    assert np.isfinite(np.stack(list(arrays.values()))).all()
    assert not arrays["img0.png"].any()  # constant: all zero after normalisation
    np.testing.assert_allclose(arrays["img1_16.png"], arrays["img1.png"], atol=1e-5)
    assert np.ptp(arrays["img1.png"]) > 0.1


def test_bad_label_handed_as_monai_label_hands_it(volume_dataset: Path, tmp_path: Path):
    """MONAI Label hands a bundle's train task raw ``{"image", "label"}`` items (its datastore's saved labels): a
    submitted label on another grid or with soft values stops with the same errors, and nothing is cached."""
    from common.data import prepare_items

    image, path = volume_dataset / "imagesTr" / "case_0.nii.gz", volume_dataset / "labelsTr" / "case_0.nii.gz"
    label, affine = np.asarray(nib.load(path).dataobj), nib.load(path).affine
    items = [{"image": str(image), "label": str(path)}]
    _write_label(path, label, affine @ np.diag([1.0, 1.0, -1.0, 1.0]))  # slices in the reverse order
    with pytest.raises(ValueError, match=rf"{path}: label has the shape of image {image} but lies elsewhere"):
        prepare_items(items, str(tmp_path / "work"), num_channels=1, num_classes=2)
    _write_label(path, label.astype(np.float32) * 0.5, affine)
    with pytest.raises(ValueError, match=rf"{path}: label values \[0\.5\] are not class indices in \[0, 1\]"):
        prepare_items(items, str(tmp_path / "work"), num_channels=1, num_classes=2)
    assert not (tmp_path / "work" / "prepared_items").exists() or not any(
        (tmp_path / "work" / "prepared_items").iterdir()
    )


def test_label_in_another_format_on_the_same_grid_is_accepted(volume_dataset: Path, tmp_path: Path):
    """No false alarm: a NRRD label written by ITK with the geometry of an oblique NIfTI image (read by another
    reader, in float32 header precision) is on the image's grid."""
    import SimpleITK as sitk

    image_path = volume_dataset / "imagesTr" / "case_0.nii.gz"
    c, s = np.cos(0.5), np.sin(0.5)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.8, 0.7, 2.5])
    affine[:3, 3] = [10.3, -5.1, 3.7]
    nib.save(nib.Nifti1Image(np.asarray(nib.load(image_path).dataobj), affine), image_path)
    label = sitk.GetImageFromArray(
        np.transpose(np.asarray(nib.load(volume_dataset / "labelsTr" / "case_0.nii.gz").dataobj))
    )
    label.CopyInformation(sitk.ReadImage(str(image_path)))
    sitk.WriteImage(label, str(volume_dataset / "labelsTr" / "case_0.nrrd"))
    (volume_dataset / "labelsTr" / "case_0.nii.gz").unlink()
    content = json.loads((volume_dataset / "dataset.json").read_text(encoding="utf-8"))
    content["training"][0]["label"] = "./labelsTr/case_0.nrrd"
    (volume_dataset / "dataset.json").write_text(json.dumps(content), encoding="utf-8")
    samples = _prepare(volume_dataset, tmp_path / "work", num_classes=2)["training"]
    assert sum(s["domain"] == "present" and s["source"] == str(image_path) for s in samples) == 3
