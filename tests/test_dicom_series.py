"""DICOM series folders as a hospital team exports them (issue 29): a series folder is one 3D image, a study or
patient folder of series folders one image per series, loose single-slice files 2D images; masks of a series are
NIfTI with the series' geometry, in output folders that mirror the input's; a folder with nothing to read stops."""

from __future__ import annotations

import json
import locale
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bundle_utils import make_workflow, run_workflow

from common.data import list_images, load_array, prepare_datalists
from common.data.prepare import _fingerprint
from common.transforms.io import LoadImageLabeld, mirrored_output_name

SHAPE = (10, 16, 16)  # SimpleITK array order (z, y, x): 10 slices of 16 x 16
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-12.5, 30.0, 7.25)
ANGLE = 0.3  # rotation about z, so that the direction is not the identity
UID_ROOT = "1.2.826.0.1.3680043.2.1125.29."


def _write_series(folder: Path, uid: str, seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> sitk.Image:
    """A CT series of one file per slice, named as PACS exports name them (``CT.<uid>.<n>``, no suffix), with the
    tags ITK's series reader uses; returns the volume it was written from (the reference geometry)."""
    folder.mkdir(parents=True, exist_ok=True)
    array = (np.random.default_rng(seed).random(shape) * 1000).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # no suffix to choose the writer by
    saved = locale.setlocale(locale.LC_ALL)
    try:  # GDCM resets the process locale to "C"
        for z in range(image.GetDepth()):
            piece = image[:, :, z]
            tags = {
                "0008|0060": "CT",
                "0008|0021": "20260101",
                "0020|000d": UID_ROOT + "100",
                "0020|000e": uid,
                "0020|0013": str(z + 1),
                "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
                "0018|0050": str(SPACING[2]),
            }
            for key, value in tags.items():
                piece.SetMetaData(key, value)
            writer.SetFileName(str(folder / f"CT.{uid}.{z + 1}"))
            writer.Execute(piece)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return image


def _write_study(root: Path) -> dict[str, sitk.Image]:
    """Two patients, each with a series folder named ``CT``: patient/series folders as a PACS export has them."""
    return {
        str((root / "patientA" / "CT").resolve()): _write_series(root / "patientA" / "CT", UID_ROOT + "1", seed=0),
        str((root / "patientB" / "CT").resolve()): _write_series(root / "patientB" / "CT", UID_ROOT + "2", seed=1),
    }


def _chain(error: BaseException) -> str:
    """The messages of an exception and of its causes (MONAI wraps errors raised inside config expressions)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(messages)


def _assert_same_geometry(image: sitk.Image, reference: sitk.Image) -> None:
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)


def test_list_images_series_study_mixed_and_loose(tmp_path: Path):
    study = _write_study(tmp_path / "study")
    assert [item["image"] for item in list_images(tmp_path / "study")] == sorted(study)
    assert [item["image"] for item in list_images(tmp_path / "study" / "patientA")] == sorted(study)[:1]
    series_a = sorted(study)[0]
    assert [item["image"] for item in list_images(series_a)] == [series_a]  # the series folder itself

    volume = load_array(series_a)  # the slice pipeline's reader
    assert tuple(volume.shape) == (1, 16, 16, 10)  # one 3D volume, channel first, (x, y, z)
    np.testing.assert_allclose(np.abs(np.asarray(volume.affine)[2, 2]), SPACING[2], atol=1e-4)
    loaded = LoadImageLabeld(keys="image")({"image": series_a})["image"]  # the bundles' loader (defaults behind it)
    assert tuple(loaded.shape) == (1, 16, 16, 10) and loaded.meta["filename_or_obj"] == series_a
    np.testing.assert_allclose(np.asarray(loaded.affine), np.asarray(volume.affine), atol=1e-6)

    links = tmp_path / "links"  # a study linked in, and a link back up that must not loop
    links.mkdir()
    (links / "pA").symlink_to(tmp_path / "study" / "patientA", target_is_directory=True)
    (links / "loop").symlink_to(links, target_is_directory=True)
    assert [item["image"] for item in list_images(links)] == [str(links.resolve() / "pA" / "CT")]

    mixed = tmp_path / "mixed"
    _write_series(mixed / "series", UID_ROOT + "3")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(mixed / "volume.nii.gz"))
    (mixed / "notes.txt").write_text("not an image", encoding="utf-8")
    assert [Path(item["image"]).name for item in list_images(mixed)] == ["series", "volume.nii.gz"]

    loose = tmp_path / "xrays"
    for i in range(3):  # one file per series: single-slice images (e.g. radiographs) stay 2D images each
        _write_series(tmp_path / "tmp_xray", UID_ROOT + f"4{i}", seed=i, shape=(1, 16, 16))
        loose.mkdir(exist_ok=True)
        os.replace(next((tmp_path / "tmp_xray").iterdir()), loose / f"IM{i}")
    items = [item["image"] for item in list_images(loose)]
    assert items == [str((loose / f"IM{i}").resolve()) for i in range(3)]
    assert int(np.prod(load_array(items[0]).shape[1:])) == 16 * 16

    two = tmp_path / "two_series_one_folder"
    _write_series(two, UID_ROOT + "5", seed=5)
    _write_series(two, UID_ROOT + "6", seed=6)
    with pytest.raises(ValueError, match=r"two_series_one_folder: its files form 2 DICOM series .*own folder"):
        list_images(two)
    with pytest.raises(ValueError, match=r"two_series_one_folder: could not be read .*holds 2 DICOM series"):
        load_array(str(two))  # a dataset.json item naming such a folder

    (loose / "broken.dcm").write_bytes(b"not a dicom file")  # an image suffix that cannot be read: named on reading
    assert str((loose / "broken.dcm").resolve()) in [item["image"] for item in list_images(loose)]
    with pytest.raises(ValueError, match=r"broken\.dcm: could not be read as an image"):
        load_array(str(loose / "broken.dcm"))


def test_inference_writes_one_nifti_per_series_with_its_geometry(tmp_path: Path):
    torch.set_num_threads(1)
    study = _write_study(tmp_path / "study")
    ckpt = tmp_path / "models"
    ckpt.mkdir()
    network = make_workflow("supervised_seg", ["inference.json"], "infer").parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), ckpt / "model.pt")  # untrained weights: the geometry is what is tested
    out = tmp_path / "masks"
    run_workflow(
        "supervised_seg",
        ["inference.json"],
        "infer",
        dataset_dir=str(tmp_path / "study"),
        output_dir=str(out),
        ckpt_dir=str(ckpt),
        patch_size=[16, 16],
    )
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert masks == ["patientA/CT_seg.nii.gz", "patientB/CT_seg.nii.gz"]  # same series name, no overwrite
    for mask_name, (series, reference) in zip(masks, sorted(study.items())):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(series))
        from_series = reader.Execute()
        _assert_same_geometry(from_series, reference)  # the series was written as intended
        mask = sitk.ReadImage(str(out / mask_name))
        _assert_same_geometry(mask, from_series)
        assert set(np.unique(sitk.GetArrayFromImage(mask)).tolist()) <= {0, 1}


def test_output_names_mirror_folders_and_keep_series_names(tmp_path: Path):
    """A series folder named by UID keeps its whole name; a flat folder keeps today's names; the root folder as a
    single series writes into the output folder, not above it."""
    root = tmp_path / "in"
    (root / "p" / "1.2.3.4").mkdir(parents=True)
    (root / "img.png").write_bytes(b"")

    class Saver:  # what the formatter reads of SaveImage
        class folder_layout:  # noqa: N801
            data_root_dir = str(root)

    def subject(path: Path) -> str:
        return mirrored_output_name({"filename_or_obj": str(path)}, Saver())["subject"]

    assert subject(root / "img.png") == str(root / "img.png")
    assert subject(root / "p" / "1.2.3.4") == str(root / "p" / "1.2.3.4.series")
    assert subject(root) == str(root / "in.series")
    assert subject(tmp_path) == str(root / f"{tmp_path.name}.series")  # outside the root: flat


def test_training_reads_series_through_the_slice_pipeline(tmp_path: Path):
    study = _write_study(tmp_path / "study")
    items = []
    for i, (series, reference) in enumerate(sorted(study.items())):
        label = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
        label.CopyInformation(reference)
        label[4:8, 4:8, 2:5] = 1
        sitk.WriteImage(label, str(tmp_path / f"label{i}.nii.gz"))
        items.append({"image": series, "label": f"./label{i}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    work = tmp_path / "work"
    lists = prepare_datalists(str(tmp_path), str(work), val_fraction=0.0, test_fraction=0.0)
    assert len(lists["training"]) == 2 * SHAPE[0]  # one sample per slice of each series
    assert {item["source"] for item in lists["training"]} == set(study)
    assert sum(item["domain"] == "present" for item in lists["training"]) == 2 * 3
    assert np.load(lists["training"][0]["image"]).shape == (1, 16, 16)

    free = prepare_datalists(None, str(work), unlabeled_dir=str(tmp_path / "study"), require_labels=False)
    assert len(free["unlabeled"]) + len(free["monitor"]) == 2 * SHAPE[0]  # the label-free path, same series

    splits = {"unlabeled": [{"image": path} for path in study]}
    before = _fingerprint(splits)
    one_slice = sorted(Path(sorted(study)[0]).iterdir())[0]
    os.utime(one_slice, ns=(one_slice.stat().st_atime_ns, one_slice.stat().st_mtime_ns + 10**9))
    assert _fingerprint(splits) != before  # a rewritten slice invalidates the prepared cache


@pytest.mark.parametrize("content", ["empty", "text", "missing"])
def test_inference_on_a_folder_with_no_image_stops(tmp_path: Path, content: str):
    folder = tmp_path / f"export_{content}"
    if content != "missing":
        folder.mkdir()
    if content == "text":
        for name in ("a.txt", "b.txt", "c.txt"):
            (folder / name).write_text("x", encoding="utf-8")
        (folder / "sub").mkdir()
    with pytest.raises(Exception) as error:
        run_workflow("supervised_seg", ["inference.json"], "infer", dataset_dir=str(folder), output_dir=str(tmp_path))
    message = _chain(error.value)
    assert f"{folder}: " in message
    if content == "missing":
        assert "image folder not found" in message
        return
    assert "DICOM series (folders of DICOM files, with or without .dcm)" in message and ".nii.gz" in message
    holds = "nothing (it is empty)" if content == "empty" else "3 files (a.txt, b.txt, c.txt) and 1 subfolder (sub)"
    assert f"it holds {holds}" in message
    with pytest.raises(ValueError, match=f"{folder}: no image found"):  # the label-free training path too
        prepare_datalists(None, str(tmp_path / "work"), unlabeled_dir=str(folder), require_labels=False)


def test_dataset_json_with_empty_lists_stops(tmp_path: Path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "training": [], "test": []}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"dataset\.json: the 'training' list is empty .*'test' \(0 items\)"):
        prepare_datalists(str(tmp_path), str(tmp_path / "work"))
