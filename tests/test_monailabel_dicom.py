"""DICOM series under MONAI Label's studies folder served as images by the repository's app (issue 29).

A series of 10 slices of 16 x 16 px without file suffix, written with SimpleITK (spacing 0.7 x 0.8 x 2.5 mm, an
origin away from 0), lies in ``studies/patient1/ct/``. Checked:

- ``lib/dicom_studies.convert_series`` alone (this environment): it writes ``studies/patient1_ct.nii.gz`` with the
  series' size, spacing, origin and direction, and a second call rewrites nothing;
- on a real server (the harness of common/monailabel_harness.py, monailabel 0.8.5): the datastore lists the series
  as image ``patient1_ct``, and batch pre-annotation stores its mask as that image's label with the series' size,
  spacing and origin; a second series copied in while the server runs is served at the next batch inference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from common.monailabel_harness import (
    REPO,
    SERVER_PYTHON,
    SETUP_HINT,
    AppServer,
    free_port,
    prepare_app_root,
    server_env,
)

SHAPE = (10, 16, 16)  # slices, rows, columns
SPACING = (0.7, 0.8, 2.5)  # x, y, z (mm)
ORIGIN = (-12.5, 30.0, 101.25)
SERIES = Path("patient1") / "ct"
IMAGE_ID = "patient1_ct"
BUNDLE = "adversarial_semi_seg"


def write_series(folder: Path) -> sitk.Image:
    """Write a CT-like DICOM series of :data:`SHAPE` (files ``slice000`` ..., no suffix) to ``folder``; returns the
    volume as SimpleITK reads the series back."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    volume = (rng.normal(0, 20, SHAPE) + 100).astype(np.int16)
    volume[:, 4:12, 5:11] += 400  # a bright block
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    series_uid = "1.2.826.0.1.3680043.2.1125.1.29"
    for k in range(SHAPE[0]):
        image = sitk.GetImageFromArray(volume[k : k + 1])
        image.SetSpacing(SPACING)
        image.SetOrigin((ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2]))
        for tag, value in {
            "0008|0060": "CT",
            "0008|0021": "20261207",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in (ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING[2])),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{SPACING[2]:g}",
            "0008|0018": f"{series_uid}.{k + 1}",
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}"))
        writer.Execute(image)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_geometry(image: sitk.Image, series: sitk.Image, what: str) -> None:
    assert image.GetSize() == series.GetSize(), (what, image.GetSize(), series.GetSize())
    assert np.allclose(image.GetSpacing(), series.GetSpacing(), atol=1e-4), (what, image.GetSpacing())
    assert np.allclose(image.GetOrigin(), series.GetOrigin(), atol=1e-3), (what, image.GetOrigin())
    assert np.allclose(image.GetDirection(), series.GetDirection(), atol=1e-4), (what, image.GetDirection())


def test_convert_series_keeps_the_geometry_and_converts_once(tmp_path: Path):
    sys.path.insert(0, str(REPO / "monailabel_app"))
    try:
        from lib.dicom_studies import MANIFEST_NAME, convert_series
    finally:
        sys.path.remove(str(REPO / "monailabel_app"))
    studies = tmp_path / "studies"
    series = write_series(studies / SERIES)
    assert series.GetSize() == SHAPE[::-1] and np.allclose(series.GetSpacing(), SPACING)
    assert np.allclose(series.GetOrigin(), ORIGIN)
    (studies / "labels" / "final").mkdir(parents=True)
    found = convert_series(str(studies))
    assert found == {IMAGE_ID: str((studies / SERIES).resolve())}, found
    volume = studies / f"{IMAGE_ID}.nii.gz"
    assert_same_geometry(sitk.ReadImage(str(volume)), series, "converted volume")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(volume))), sitk.GetArrayFromImage(series))
    assert json.loads((studies / MANIFEST_NAME).read_text())[IMAGE_ID]["folder"] == str(SERIES)
    before = volume.stat().st_mtime_ns
    assert convert_series(str(studies)) == found
    assert volume.stat().st_mtime_ns == before, "an unchanged series was converted again"
    assert sorted(p.name for p in studies.iterdir() if p.suffix == ".gz") == [volume.name]


@pytest.fixture(scope="module")
def dicom_server(tmp_path_factory):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("monailabel_dicom")
    prepare_app_root(root, [BUNDLE], num_images=0)
    series = write_series(root / "studies" / SERIES)
    srv = AppServer(root, free_port(), [BUNDLE], {})
    try:
        srv.start(server_env(root))
        yield srv, series
    finally:
        srv.stop()


def test_series_is_an_image_and_its_mask_has_the_series_geometry(dicom_server):
    server, series = dicom_server
    datastore = server.get("/datastore/", output="all")
    assert IMAGE_ID in datastore["objects"], json.dumps(datastore)[:2000] + server.log_tail()
    params = {"device": "cpu", "multi_gpu": False, "label_tag": "original", "max_workers": 1}
    query = {"images": "unlabeled", "run_sync": "true"}
    content, _ = server.request("POST", f"/batch/infer/{BUNDLE}", query=query, body=params)
    assert IMAGE_ID in json.loads(content), content[:2000]
    labels = sorted((server.studies / "labels" / "original").glob(f"{IMAGE_ID}.*"))
    assert len(labels) == 1, labels
    mask = sitk.ReadImage(str(labels[0]))
    assert_same_geometry(mask, series, "stored mask")
    values = set(np.unique(sitk.GetArrayFromImage(mask)).tolist())
    assert values <= {0, 1, 2}, values


def test_series_added_while_the_server_runs_is_served(dicom_server):
    """A series copied under ``--studies`` after the start is converted before the next batch inference (also next
    sample, train, scoring): no restart."""
    server, _ = dicom_server
    added = write_series(server.studies / "patient2" / "mr")
    assert "patient2_mr" not in server.get("/datastore/", output="all")["objects"]
    params = {"device": "cpu", "multi_gpu": False, "label_tag": "original", "max_workers": 1}
    query = {"images": "unlabeled", "run_sync": "true"}
    content, _ = server.request("POST", f"/batch/infer/{BUNDLE}", query=query, body=params)
    assert "patient2_mr" in json.loads(content), content[:2000] + server.log_tail()
    assert "patient2_mr" in server.get("/datastore/", output="all")["objects"]
    labels = sorted((server.studies / "labels" / "original").glob("patient2_mr.*"))
    assert len(labels) == 1, labels
    assert_same_geometry(sitk.ReadImage(str(labels[0])), added, "mask of the added series")
