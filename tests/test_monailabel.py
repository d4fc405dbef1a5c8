"""A real MONAI Label server serves this collection's bundles: inference for every bundle, training of supervised_seg.

The server is monailabel 0.8.5 with its ``monaibundle`` sample app and the bundles as local models
(``--conf zoo_source local``), started on 127.0.0.1 at a free port from its own virtual environment:
monailabel needs a torchvision that imports, numpy<2 and pydicom 2.4.4, none of which fits the main environment
(see docs/monailabel.md). The environment is ``.venv/monailabel`` (made by the README's test command) or the Python
named by ``MONAILABEL_PYTHON``. The server and its HTTP client are common/monailabel_harness.py's. Weights are the
untrained networks' (this checks the plumbing: shapes, label values, a finished training run), written into copies of
the bundles in a temporary app folder, never into ``bundles/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.monailabel_harness import (
    REPO,
    SERVER_PYTHON,
    SETUP_HINT,
    TRAIN_TIMEOUT,
    Server,
    add_bundle,
    bundle_metadata,
    check_mask,
    disk,
    free_port,
)

BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/inference.json"))
TRAIN_BUNDLE = "supervised_seg"
VOLUME_SHAPE = (48, 40, 5)
IMAGE_SIZE = (56, 64)  # (height, width) of the 2D images


def _num_channels(bundle: str) -> int:
    return int(bundle_metadata(bundle)["network_data_format"]["inputs"]["image"].get("num_channels", 1))


def _write_inputs(folder: Path) -> dict[str, Path]:
    """A 3D NIfTI volume, a 2D NIfTI image with its label, and grey and RGB PNGs: bright disks on noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    masks = np.stack([disk(*VOLUME_SHAPE[:2], shift=z) for z in range(VOLUME_SHAPE[2])], axis=-1)
    volume = (100.0 * masks + rng.normal(0, 5, VOLUME_SHAPE)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), folder / "volume.nii.gz")
    mask2d = disk(*IMAGE_SIZE)
    image2d = (100.0 * mask2d + rng.normal(0, 5, IMAGE_SIZE)).astype(np.float32)
    nib.save(nib.Nifti1Image(image2d, np.eye(4)), folder / "slice.nii.gz")
    nib.save(nib.Nifti1Image(mask2d.astype(np.uint8), np.eye(4)), folder / "slice_label.nii.gz")
    grey = np.clip(60 + 120 * mask2d + rng.normal(0, 8, IMAGE_SIZE), 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1)).save(folder / "rgb.png")
    return {p.name.split(".")[0]: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return _write_inputs(tmp_path_factory.mktemp("monailabel_inputs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, inputs):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("monailabel")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "PYTHONWARNINGS": "ignore",
        "MONAI_LABEL_SESSION_PATH": str(root / "sessions"),
    }
    download = subprocess.run(
        [str(SERVER_PYTHON), "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle"]
        + ["--output", str(root / "apps")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert download.returncode == 0, download.stdout[-3000:] + download.stderr[-3000:]
    for bundle in BUNDLES:
        add_bundle(bundle, root / "apps" / "monaibundle" / "model")
    srv = Server(root, free_port(), BUNDLES)
    try:
        srv.start(env)
        srv.upload_image("volume", inputs["volume"])
        srv.upload_image("grey", inputs["grey"])
        srv.upload_image("rgb", inputs["rgb"])
        yield srv
    finally:
        srv.stop()


def test_server_serves_every_bundle(server: Server):
    info = server.get("/info/")
    assert sorted(info["models"]) == BUNDLES, server.log_tail()
    assert TRAIN_BUNDLE in info["trainers"], server.log_tail()
    for bundle in BUNDLES:
        labels = info["models"][bundle]["labels"]
        expected = {
            v.lower(): int(k)
            for k, v in bundle_metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"].items()
            if v.lower() != "background"
        }
        assert labels == expected, (bundle, labels)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if _num_channels(b) == 1])
def test_inference_on_nifti_volume(server: Server, bundle: str, tmp_path: Path):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(server.infer(bundle, "volume"))
    mask = nib.load(out)
    check_mask(bundle, np.asarray(mask.dataobj), VOLUME_SHAPE, server)
    assert mask.get_data_dtype() == np.uint8, mask.get_data_dtype()
    np.testing.assert_allclose(mask.affine, nib.load(server.studies / "volume.nii.gz").affine, atol=1e-4)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_on_png_image(server: Server, bundle: str, tmp_path: Path):
    channels = _num_channels(bundle)
    assert channels in (1, 3), f"{bundle}: no test image with {channels} channels"
    out = tmp_path / "mask.png"
    out.write_bytes(server.infer(bundle, "grey" if channels == 1 else "rgb"))
    with Image.open(out) as image:
        assert image.mode in ("L", "P", "I", "I;16"), image.mode
        check_mask(bundle, np.asarray(image), IMAGE_SIZE, server)


def test_training_through_server(server: Server, inputs):
    """Two labelled 2D NIfTI images, one epoch of supervised_seg started and watched through the HTTP API."""
    for image_id in ("train_a", "train_b"):
        server.upload_image(image_id, inputs["slice"])
        server.upload_label(image_id, inputs["slice_label"])
    params = {"max_epochs": 1, "val_split": 0.5, "multi_gpu": False, "device": "cpu"}
    started = json.loads(server.request("POST", f"/train/{TRAIN_BUNDLE}", body=params)[0])
    assert started.get("status") in ("SUBMITTED", "RUNNING", "DONE"), started
    deadline = time.monotonic() + TRAIN_TIMEOUT
    status = {}
    while time.monotonic() < deadline:
        status = server.get("/train/", all="false")
        if status.get("id") == started["id"] and status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(2)
    details = "\n".join(status.get("details", [])[-60:])
    assert status.get("status") == "DONE", f"training status {status.get('status')}:\n{details}" + server.log_tail()
    models = server.app / "model" / TRAIN_BUNDLE / "models"
    assert (models / "checkpoint_epoch=1.pt").is_file(), sorted(p.name for p in models.iterdir())
    checkpoint = torch.load(models / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=False)
    assert "network" in checkpoint, list(checkpoint)
