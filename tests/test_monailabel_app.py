"""The repository's MONAI Label app (``monailabel_app/``) on a real server: label-free and semi-supervised training
with the datastore's unlabelled images, and batch pre-annotation of every unlabelled image.

Runs like tests/test_monailabel.py (whose server and helpers it reuses): monailabel 0.8.5 from its own environment
(``.venv/monailabel`` or ``MONAILABEL_PYTHON``), on 127.0.0.1 at a free port. The app folder and the bundles are
copied into a temporary folder in the repository's layout (``<root>/monailabel_app``, ``<root>/bundles``), so the app
finds the bundles where it finds the repository's by default, and weights (untrained networks') never land in
``bundles/``. The studies folder starts as a folder of 5 PNG images without any label. The tests run in file order on
one server: af_seg trains with no label, then adversarial_semi_seg with 2 final labels and 3 unlabelled images, then
af_seg pre-annotates the images that still have no final label.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_monailabel import (
    REPO,
    SERVER_PYTHON,
    SETUP_HINT,
    TRAIN_TIMEOUT,
    Server,
    _add_bundle,
    _check_mask,
    _disk,
    _free_port,
)

APP_BUNDLES = ["adversarial_semi_seg", "af_seg"]
NUM_IMAGES = 5
LABELLED = ["img0", "img1"]
SIZE = (48, 56)  # (height, width)
# tiny trainings: one epoch, small patches, a few prior steps (architectures unchanged: inference loads the weights)
AF_SEG_OVERRIDES = {
    "patch_size": [32, 32],
    "val_interval": 1,
    "dip_steps": 3,
    "background#dsp_max_steps": 3,
    "coarse#level_set_iterations": 20,
}
ADVERSARIAL_OVERRIDES = {
    "val_interval": 1,
    "batch_size": 1,
    "unlabeled_batch_size": 2,
    "semi_start_epoch": 0,
}


class AppServer(Server):
    """``Server`` started with the repository's app (copied to ``root/monailabel_app``) instead of ``monaibundle``."""

    def __init__(self, root: Path, port: int, models: list[str]) -> None:
        super().__init__(root, port, models)
        self.app = root / "monailabel_app"

    def train(self, model: str, params: dict) -> dict:
        """Start a training over HTTP and wait for its end; returns the final status (asserted ``DONE``)."""
        started = json.loads(self.request("POST", f"/train/{model}", body=params)[0])
        assert started.get("status") in ("SUBMITTED", "RUNNING", "DONE"), started
        deadline = time.monotonic() + TRAIN_TIMEOUT
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.get("/train/", all="false")
            if status.get("id") == started["id"] and status.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(2)
        details = "\n".join(status.get("details", [])[-40:])
        assert status.get("status") == "DONE", f"{model}: training {status.get('status')}:\n{details}" + self.log_tail()
        return status

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _image(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a noisy background (grey uint8) and its mask; the disk moves with ``index``."""
    mask = _disk(*SIZE, shift=2 * index - 4)
    rng = np.random.default_rng(index)
    return np.clip(50 + 130 * mask + rng.normal(0, 8, SIZE), 0, 255).astype(np.uint8), mask.astype(np.uint8)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("monailabel_app")
    shutil.copytree(
        REPO / "monailabel_app",
        root / "monailabel_app",
        ignore=shutil.ignore_patterns("logs", "model", "bin", "__pycache__"),
    )
    for bundle in APP_BUNDLES:
        _add_bundle(bundle, root / "bundles")
    (root / "studies").mkdir()
    (root / "masks").mkdir()
    for i in range(NUM_IMAGES):
        image, mask = _image(i)
        Image.fromarray(image).save(root / "studies" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "PYTHONWARNINGS": "ignore",
        "MONAI_LABEL_SESSION_PATH": str(root / "sessions"),
    }
    srv = AppServer(root, _free_port(), APP_BUNDLES)
    try:
        srv.start(env)
        yield srv
    finally:
        srv.stop()


def test_app_serves_the_bundles_folder(app_server: AppServer):
    info = app_server.get("/info/")
    assert sorted(info["models"]) == APP_BUNDLES, app_server.log_tail()
    assert sorted(info["trainers"]) == APP_BUNDLES, app_server.log_tail()
    stats = app_server.get("/datastore/")
    assert stats["total"] == NUM_IMAGES and stats["completed"] == 0, stats


def test_af_seg_trains_without_labels_then_infers(app_server: AppServer, tmp_path: Path):
    models = app_server.root / "bundles" / "af_seg" / "models"
    seeded = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    params = {"max_epochs": 1, "val_split": 0.2, "multi_gpu": False, "device": "cpu", "overrides": AF_SEG_OVERRIDES}
    app_server.train("af_seg", params)
    assert f"0 labelled for training, 0 for validation, {NUM_IMAGES} unlabelled images" in app_server.log_text()
    assert (models / "checkpoint_epoch=1.pt").is_file(), sorted(p.name for p in models.iterdir())
    trained = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    trained = trained.get("model", trained)
    assert any(not torch.equal(seeded[k], trained[k]) for k in seeded), "model.pt was not rewritten by the training"
    out = tmp_path / "mask.png"
    out.write_bytes(app_server.infer("af_seg", "img3"))
    with Image.open(out) as mask:
        _check_mask("af_seg", np.asarray(mask), SIZE, app_server)


def test_adversarial_semi_seg_trains_on_labels_and_unlabelled_images(app_server: AppServer):
    for image_id in LABELLED:
        app_server.upload_label(image_id, app_server.root / "masks" / f"{image_id}.png")
    assert app_server.get("/datastore/")["completed"] == len(LABELLED)
    params = {
        "max_epochs": 1,
        "val_split": 0.5,
        "multi_gpu": False,
        "device": "cpu",
        "overrides": ADVERSARIAL_OVERRIDES,
    }
    start = len(app_server.log_text())
    app_server.train("adversarial_semi_seg", params)
    log = app_server.log_text()[start:]
    unlabelled = NUM_IMAGES - len(LABELLED)
    assert f"1 labelled for training, 1 for validation, {unlabelled} unlabelled images" in log, log[-4000:]
    # the bundle prepared exactly those images as its unlabelled split ...
    outputs = app_server.root / "bundles" / "adversarial_semi_seg" / "outputs"
    prepared = max((outputs / "prepared").glob("*/datalist.json"), key=lambda p: p.stat().st_mtime)
    datalists = json.loads(prepared.read_text(encoding="utf-8"))
    assert len(datalists["training"]) == 1 and len(datalists["validation"]) == 1, prepared
    assert len(datalists["unlabeled"]) == unlabelled, datalists["unlabeled"]
    # ... and trained on them: the discriminator's confidence on their predictions and the pseudo-label loss on them
    # are logged every iteration (both exactly 0 without unlabelled data)
    for term in ("confidence_mean", "loss_semi"):
        values = [float(v) for v in re.findall(rf"{term}: ([0-9.eE+-]+)", log)]
        assert values and all(v > 0 for v in values), (term, log[-4000:])


def test_batch_preannotation_of_every_unlabelled_image(app_server: AppServer):
    final = {p.name.split(".")[0] for p in (app_server.studies / "labels" / "final").glob("*")}
    unlabelled = {f"img{i}" for i in range(NUM_IMAGES)} - final
    params = {"device": "cpu", "multi_gpu": False, "label_tag": "original", "max_workers": 1}
    content, _ = app_server.request(
        "POST", "/batch/infer/af_seg", query={"images": "unlabeled", "run_sync": "true"}, body=params
    )
    assert set(json.loads(content)) == unlabelled, content[:2000]
    written = sorted((app_server.studies / "labels" / "original").glob("*"))
    assert {p.name.split(".")[0] for p in written} == unlabelled, written
    for path in written:
        with Image.open(path) as mask:
            _check_mask("af_seg", np.asarray(mask), SIZE, app_server)
    stats = app_server.get("/datastore/")
    assert stats["label_tags"] == {"final": len(final), "original": len(unlabelled)}, stats
    assert stats["completed"] == len(final), stats  # pre-annotations are not final labels
