"""2D and 3D images load through MONAI LoadImage in every format the pipeline promises: NIfTI, NRRD, DICOM,
PNG, JPEG, TIFF, and the prepared channel-first .npy."""

from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from common.data import load_array

VOLUME = np.arange(6 * 5 * 4, dtype=np.int16).reshape(4, 5, 6) * 3  # SimpleITK order (z, y, x)


def test_nifti_and_nrrd_volumes_agree(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.transpose(VOLUME, (2, 1, 0)), np.eye(4)), tmp_path / "v.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(VOLUME), str(tmp_path / "v.nrrd"))
    nifti, nrrd = load_array(str(tmp_path / "v.nii.gz")), load_array(str(tmp_path / "v.nrrd"))
    assert nifti.shape == nrrd.shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(np.asarray(nifti), np.asarray(nrrd))


def _write_dicom_series(folder: Path) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    image = sitk.GetImageFromArray(VOLUME)
    for z in range(VOLUME.shape[0]):
        s = image[:, :, z]
        s.SetMetaData("0020|0013", str(z + 1))  # instance number
        s.SetMetaData("0020|0032", f"0\\0\\{z}")  # image position (patient)
        s.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")  # series instance UID
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(s)


def test_dicom_series_folder(tmp_path: Path):
    folder = tmp_path / "series"
    folder.mkdir()
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_series(folder)  # GDCM's writer resets the process locale to "C" too
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    volume = load_array(str(folder))
    assert locale.setlocale(locale.LC_ALL) == saved  # GDCM's reader resets the locale; load_array restores it
    assert volume.shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(np.asarray(volume)[0], np.transpose(VOLUME, (2, 1, 0)))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_2d_formats(tmp_path: Path, suffix: str):
    array = np.zeros((12, 10), np.uint8)
    array[2:6, 3:8] = 200
    Image.fromarray(array).save(tmp_path / f"img{suffix}")
    image = load_array(str(tmp_path / f"img{suffix}"))
    assert image.shape == (1, 10, 12)  # MONAI's PIL reader indexes (W, H)
    restored = np.asarray(image)[0].T
    if suffix == ".jpg":
        assert np.abs(restored.astype(float) - array).mean() < 10
    else:
        np.testing.assert_array_equal(restored, array)


def test_rgb_and_npy(tmp_path: Path):
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert load_array(str(tmp_path / "rgb.png")).shape == (3, 9, 8)
    np.save(tmp_path / "s.npy", np.ones((4, 7, 5), np.float32))
    assert load_array(str(tmp_path / "s.npy")).shape == (4, 7, 5)
