"""The repository's MONAI Label app (``monailabel_app/``) on a real server: label-free and semi-supervised training
with the datastore's unlabelled images, and batch pre-annotation of every unlabelled image.

Runs on the harness of common/monailabel_harness.py (``AppServer``, ``prepare_app_root``, ``server_env``), like
tests/test_monailabel.py: monailabel 0.8.5 from its own environment (``.venv/monailabel`` or ``MONAILABEL_PYTHON``), on
127.0.0.1 at a free port. The app folder and the bundles are copied into a temporary folder in the repository's layout
(``<root>/monailabel_app``, ``<root>/bundles``), so the app finds the bundles where it finds the repository's by
default, and weights (untrained networks') never land in ``bundles/``. The studies folder starts as a folder of 5 PNG
images without any label. The tests run in file order on one server: af_seg trains with no label, then
adversarial_semi_seg with 2 final labels and 3 unlabelled images (one held out for validation, then none: it keeps its
last network), then af_seg pre-annotates the images that still have no final label, MC-dropout scoring ranks them, and
last 50 concurrent inference requests all get a valid mask (the harness's ``concurrent_inference``, which
benchmarks/monailabel_load.py also runs). One test runs the app's train task alone, without a server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.monailabel_harness import (
    NUM_IMAGES,
    REPO,
    SERVER_PYTHON,
    SETUP_HINT,
    SIZE,
    TRAIN_TIMEOUT,
    AppServer,
    check_mask,
    concurrent_inference,
    free_port,
    prepare_app_root,
    server_env,
)

APP_BUNDLES = ["acwe_unsup_seg", "adversarial_semi_seg", "af_seg"]
UNTRAINED = "acwe_unsup_seg"  # served without models/model.pt: trainable, then served for inference
LABELLED = ["img0", "img1"]
EPISTEMIC_BUNDLE = "adversarial_semi_seg"  # a U-Net: takes a dropout rate
LOAD_BUNDLE = "adversarial_semi_seg"  # concurrent inference requests (issue 18: 50 at once, all succeed)
LOAD_REQUESTS = 50
LOAD_CONCURRENCY = 10
# tiny trainings: one epoch, small patches, a few prior steps (architectures unchanged: inference loads the weights)
AF_SEG_OVERRIDES = {
    "patch_size": [32, 32],
    "val_interval": 1,
    "dip_steps": 3,
    "background#dsp_max_steps": 3,
    "coarse#level_set_iterations": 20,
}
ACWE_OVERRIDES = {"patch_size": [32, 32], "val_interval": 1, "batch_size": 4}
ADVERSARIAL_OVERRIDES = {
    "val_interval": 1,
    "batch_size": 1,
    "unlabeled_batch_size": 2,
    "semi_start_epoch": 0,
}


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("monailabel_app")
    prepare_app_root(root, APP_BUNDLES, untrained=(UNTRAINED,))
    srv = AppServer(
        root, free_port(), APP_BUNDLES, {"epistemic_model": EPISTEMIC_BUNDLE, "epistemic_simulation_size": "4"}
    )
    try:
        srv.start(server_env(root))
        yield srv
    finally:
        srv.stop()


def test_app_serves_the_bundles_folder(app_server: AppServer):
    info = app_server.get("/info/")
    assert sorted(info["models"]) == [b for b in APP_BUNDLES if b != UNTRAINED], app_server.log_tail()
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
        check_mask("af_seg", np.asarray(mask), SIZE, app_server)


def test_acwe_unsup_seg_trains_without_labels_and_is_then_served(app_server: AppServer, tmp_path: Path):
    assert UNTRAINED not in app_server.get("/info/")["models"]
    params = {"max_epochs": 1, "val_split": 0.2, "multi_gpu": False, "device": "cpu", "overrides": ACWE_OVERRIDES}
    app_server.train(UNTRAINED, params)
    assert (app_server.root / "bundles" / UNTRAINED / "models" / "model.pt").is_file()
    assert UNTRAINED in app_server.get("/info/")["models"], app_server.log_tail()  # no restart needed
    out = tmp_path / "mask.png"
    out.write_bytes(app_server.infer(UNTRAINED, "img3"))
    with Image.open(out) as mask:
        check_mask(UNTRAINED, np.asarray(mask), SIZE, app_server)


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


def test_adversarial_semi_seg_without_validation_keeps_its_last_network(app_server: AppServer):
    """``val_split`` 0: both final labels train and none validates, so the app switches the bundle's validation off
    (no ``val_interval`` in the request) and has it write its last network to ``models/model.pt``. MONAI Label loads
    ``model.pt`` as the pretrained start, so a changed tensor means the training wrote it (the validation's saver,
    the only writer before, does not run)."""
    models = app_server.root / "bundles" / "adversarial_semi_seg" / "models"
    before = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    before = before.get("model", before)
    overrides = {k: v for k, v in ADVERSARIAL_OVERRIDES.items() if k != "val_interval"}
    # no "resume" here: the app makes every training a new run (else it would resume at the previous test's last
    # epoch and train nothing)
    params = {"max_epochs": 1, "val_split": 0.0, "multi_gpu": False, "device": "cpu", "overrides": overrides}
    start = len(app_server.log_text())
    app_server.train("adversarial_semi_seg", params)
    log = app_server.log_text()[start:]
    expected = f"{len(LABELLED)} labelled for training, 0 for validation, {NUM_IMAGES - len(LABELLED)} unlabelled"
    assert expected in log, log[-4000:]
    assert "does not validate and keeps its last network" in log, log[-4000:]
    trained = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    trained = trained.get("model", trained)
    assert trained.keys() == before.keys()
    assert any(not torch.equal(before[k], trained[k]) for k in before), "model.pt was not rewritten by the training"


NO_VALIDATION_SCRIPT = """
import json, sys
from lib.train import LabelEfficientTrainTask
task = LabelEfficientTrainTask(sys.argv[1], {})
item = {"image": "a.png", "label": "a_label.png"}
cases = {
    "no_validation": ([item, item], [], {}),
    "bundle_default_split": ([item, item], None, {}),
    "validation": ([item], [item], {}),
    "label_free": ([], [], {}),
    "request_overrides": ([item], [], {"val_interval": 1, "select_by_key_metric": True}),
}
out = {}
for name, (train, val, extra) in cases.items():
    task._request = {"overrides": extra}
    overrides = {task.const.key_train_trainer_max_epochs(): 3, task.const.key_train_dataset_data(): train}
    if val is not None:
        overrides[task.const.key_validate_dataset_data()] = val
    result = task._update_overrides(overrides)
    out[name] = {k: result[k] for k in ("select_by_key_metric", "val_interval") if k in result}
print(json.dumps(out))
"""


def test_update_overrides_without_a_validation_image(tmp_path: Path):
    """``LabelEfficientTrainTask._update_overrides`` alone (no server; MONAI Label's environment): labelled training
    items without a validation item (``val_split`` 0, or -1 with the bundle's split switched off) get
    ``select_by_key_metric`` false and ``val_interval`` ``max_epochs + 1``; a validation item or no labelled item at
    all (the label-free path) leaves both alone; the request's own overrides still win."""
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    bundle = tmp_path / "adversarial_semi_seg"
    shutil.copytree(REPO / "bundles" / "adversarial_semi_seg" / "configs", bundle / "configs")
    app = REPO / "monailabel_app"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(REPO)]), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(SERVER_PYTHON), "-c", NO_VALIDATION_SCRIPT, str(bundle)],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    off = {"select_by_key_metric": False, "val_interval": 4}
    assert out == {
        "no_validation": off,
        "bundle_default_split": off,
        "validation": {},
        "label_free": {},
        "request_overrides": {"select_by_key_metric": True, "val_interval": 1},
    }, out


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
            check_mask("af_seg", np.asarray(mask), SIZE, app_server)
    stats = app_server.get("/datastore/")
    assert stats["label_tags"] == {"final": len(final), "original": len(unlabelled)}, stats
    assert stats["completed"] == len(final), stats  # pre-annotations are not final labels


def test_epistemic_scoring_and_most_uncertain_image_first(app_server: AppServer):
    final = {p.name.split(".")[0] for p in (app_server.studies / "labels" / "final").glob("*")}
    unlabelled = sorted({f"img{i}" for i in range(NUM_IMAGES)} - final)
    info = app_server.get("/info/")
    assert "epistemic" in info["scoring"] and "epistemic" in info["strategies"], app_server.log_tail()
    params = {"device": "cpu", "max_workers": 1}
    content, _ = app_server.request("POST", "/scoring/epistemic", query={"run_sync": "true"}, body=params)
    summary = json.loads(content)
    assert summary["total"] == len(unlabelled) and summary["executed"] == len(unlabelled), summary
    scores = {}
    for image_id in unlabelled:
        image_info = app_server.get("/datastore/image/info", image=image_id)
        scores[image_id] = image_info["epistemic_entropy"]
        assert -1e-6 <= image_info["epistemic_mutual_information"] <= scores[image_id] + 1e-6, image_info
    assert all(0.0 < s <= np.log(3) for s in scores.values()), scores  # 3 classes: at most ln 3 nats
    assert len(set(scores.values())) == len(scores), scores  # dropout passes differ per image
    served = []
    for _ in unlabelled:
        sample = json.loads(app_server.request("POST", "/activelearning/epistemic", body={})[0])
        served.append(sample["id"])
    assert served == sorted(scores, key=scores.get, reverse=True), (served, scores)


def test_concurrent_inference_requests_all_succeed(app_server: AppServer):
    """50 inference requests from 10 threads at once (loopback): every one answers HTTP 200 with a valid mask. No
    timing is asserted (the figures are in docs/performance.md, from benchmarks/monailabel_load.py)."""
    images = [f"img{i}" for i in range(NUM_IMAGES)]
    results, wall = concurrent_inference(app_server, LOAD_BUNDLE, images, LOAD_REQUESTS, LOAD_CONCURRENCY)
    failed = [r for r in results if r.error is not None]
    assert not failed, f"{len(failed)} of {len(results)} requests failed, first: {failed[0]}" + app_server.log_tail()
    assert len(results) == LOAD_REQUESTS and all(r.latency > 0 for r in results), results
    assert {r.image for r in results} == set(images)
    assert wall >= max(r.latency for r in results)


def test_a_bad_final_label_fails_the_training_naming_the_file(app_server: AppServer, tmp_path: Path):
    """An RGB mask uploaded as a final label (a viewer's screenshot, not a class map): the training through the app
    ends in ``ERROR`` whose details name the uploaded label and what was expected, and no ``model.pt`` is written.
    Last in the file: it leaves a labelled image behind."""
    bad = tmp_path / "img4_rgb.png"
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[10:20, 10:20] = (255, 0, 0)
    Image.fromarray(rgb).save(bad)
    app_server.upload_label("img4", bad)
    models = app_server.root / "bundles" / "adversarial_semi_seg" / "models"
    before = (models / "model.pt").stat().st_mtime_ns
    params = {
        "max_epochs": 1,
        "val_split": 0.0,
        "multi_gpu": False,
        "device": "cpu",
        "overrides": ADVERSARIAL_OVERRIDES,
    }
    started = json.loads(app_server.request("POST", "/train/adversarial_semi_seg", body=params)[0])
    deadline, status = time.monotonic() + TRAIN_TIMEOUT, {}
    while time.monotonic() < deadline:
        status = app_server.get("/train/", all="false")
        if status.get("id") == started["id"] and status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(2)
    details = "\n".join(status.get("details", []))
    assert status.get("status") == "ERROR", status
    assert re.search(r"img4\.png.*channel", details), details[-3000:]
    assert (models / "model.pt").stat().st_mtime_ns == before
