"""The app's train task (``monailabel_app/lib/train.py``) end to end for ``supervised_seg`` and
``mipr_auto_annotation``, as MONAI Label's server calls it but without a server or HTTP.

Each test runs a short script in MONAI Label's environment (monailabel 0.8.5: ``.venv/monailabel`` or
``MONAILABEL_PYTHON``). The script builds a ``LocalDatastore`` on a studies folder of 5 small PNG images, saves 2 of
the true masks through ``save_label`` as final labels, and calls
``LabelEfficientTrainTask(bundle, {})(request, datastore)``. The request is the one the server hands the task
(``{"model": <name>, **params}``) with tiny ``overrides``. Bundles are copies with their untrained networks' weights
(``prepare_app_root``), in a temporary folder. Checked on the results:

- ``supervised_seg`` (``val_split`` 0.5): the app's datalist and the bundle's prepared datalist hold exactly the 2
  final labels (1 trains, 1 validates) and the 3 unlabelled images; ``models/model.pt`` was rewritten.
- ``mipr_auto_annotation`` (RGB images, ``val_split`` 0, one annotation round): the bundle's unlabelled split is the
  3 images without a final label, and its round 1 pseudo-labelled exactly those 3 (``outputs/mipr/rounds.json`` and
  ``round1/datalist.json``: accepted + rejected == 3). Round 0 trained on the 2 final labels and ``models/model.pt``
  was rewritten.
- A second MIPR training after one more final label retrains on the new labels: the loop fingerprints its inputs
  (``models/mipr_inputs.json``) and starts afresh when they changed, instead of resuming the first run's rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_monailabel_app import LABELLED

from common.monailabel_harness import NUM_IMAGES, REPO, SERVER_PYTHON, SETUP_HINT, prepare_app_root

TIMEOUT = 600
UNLABELLED = sorted(f"img{i}" for i in range(NUM_IMAGES) if f"img{i}" not in LABELLED)
SUPERVISED_OVERRIDES = {"patch_size": [32, 32], "batch_size": 1, "val_interval": 1}
# one annotation round on 32 x 32 samples with a tiny generator; the segmenter keeps its architecture (model.pt is
# the inference network's weights)
MIPR_OVERRIDES = {
    "image_size": [32, 32],
    "batch_size": 2,
    "num_rounds": 1,
    "generator_epochs": 1,
    "generator_batch_size": 1,
    "generator_channels": [8, 16],
    "spade_hidden_channels": 8,
    "discriminator_channels": 8,
    "discriminator_layers": 2,
    "discriminator_num_d": 1,
    "acceptance_dice": 0.0,
}

MIPR_PARAMS = {"max_epochs": 1, "val_split": 0.0, "multi_gpu": False, "device": "cpu", "overrides": MIPR_OVERRIDES}

TRAIN_SCRIPT = """
import json, logging, sys
from monailabel.datastore.local import LocalDatastore
from lib.train import LabelEfficientTrainTask

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
studies, masks, bundle, request = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
datastore = LocalDatastore(studies, extensions=["*.png"])
for image_id in sys.argv[5].split(","):
    datastore.save_label(image_id, f"{masks}/{image_id}.png", "final", {})
print(json.dumps({
    "labelled": sorted(datastore.get_labeled_images()),
    "unlabelled": sorted(datastore.get_unlabeled_images()),
    "result": LabelEfficientTrainTask(bundle, {})(request, datastore),
}))
"""


def _state(path: Path) -> dict[str, torch.Tensor]:
    """The network state in ``path`` (a bare state dict, or one under ``"model"``)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("model", state)


def _rewritten(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """Whether ``after`` is the same network as ``before`` with at least one tensor changed."""
    assert after.keys() == before.keys()
    return any(not torch.equal(before[k], after[k]) for k in before)


def _train(root: Path, bundle: str, params: dict, labelled: list[str] = LABELLED) -> tuple[dict, str, float]:
    """Run the app's train task for ``bundle`` in MONAI Label's environment on ``root`` with the images ``labelled``
    given final labels first; returns the script's JSON, its log and the wall time in seconds."""
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    app = root / "monailabel_app"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(app), str(REPO)]),
        "PYTHONWARNINGS": "ignore",
        "MONAI_LABEL_SESSION_PATH": str(root / "sessions"),
    }
    request = {"model": bundle, **params}
    args = [str(root / "studies"), str(root / "masks"), str(root / "bundles" / bundle), json.dumps(request)]
    start = time.perf_counter()
    result = subprocess.run(
        [str(SERVER_PYTHON), "-c", TRAIN_SCRIPT, *args, ",".join(labelled)],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    seconds = time.perf_counter() - start
    log = result.stdout[-3000:] + result.stderr[-6000:]
    assert result.returncode == 0, log
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["labelled"] == sorted(labelled) and out["unlabelled"] == sorted(set(UNLABELLED) - set(labelled)), out
    return out, result.stderr, seconds


def _paths(folder: Path, ids: list[str]) -> set[str]:
    return {os.path.realpath(folder / f"{i}.png") for i in ids}


def _prepared(outputs: Path) -> dict[str, list[dict]]:
    """The bundle's only prepared datalist under ``outputs/prepared``."""
    found = sorted((outputs / "prepared").glob("*/datalist.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text(encoding="utf-8"))


def _sources(items: list[dict]) -> list[str]:
    return sorted(os.path.realpath(item["source"]) for item in items)


def test_supervised_seg_trains_on_the_final_labels(tmp_path: Path):
    prepare_app_root(tmp_path, ["supervised_seg"])
    bundle = tmp_path / "bundles" / "supervised_seg"
    before = _state(bundle / "models" / "model.pt")
    params = {
        "max_epochs": 1,
        "val_split": 0.5,
        "multi_gpu": False,
        "device": "cpu",
        "overrides": SUPERVISED_OVERRIDES,
    }
    _, log, seconds = _train(tmp_path, "supervised_seg", params)
    print(f"supervised_seg train task: {seconds:.1f} s")
    assert f"1 labelled for training, 1 for validation, {len(UNLABELLED)} unlabelled images" in log, log[-4000:]
    studies, final = tmp_path / "studies", tmp_path / "studies" / "labels" / "final"
    written = json.loads((bundle / "outputs" / "monailabel_datalist.json").read_text(encoding="utf-8"))
    labelled = written["training"] + written["validation"]
    assert len(written["training"]) == 1 and len(written["validation"]) == 1, written
    assert {os.path.realpath(item["image"]) for item in labelled} == _paths(studies, LABELLED), written
    assert {os.path.realpath(item["label"]) for item in labelled} == _paths(final, LABELLED), written
    assert {os.path.realpath(item["image"]) for item in written["unlabeled"]} == _paths(studies, UNLABELLED)
    prepared = _prepared(bundle / "outputs")
    for split in ("training", "validation"):
        assert _sources(prepared[split]) == sorted(os.path.realpath(i["image"]) for i in written[split]), prepared
    assert all("label" in item for item in prepared["training"] + prepared["validation"])
    assert prepared["test"] == [] and _sources(prepared["unlabeled"]) == sorted(_paths(studies, UNLABELLED))
    assert _rewritten(before, _state(bundle / "models" / "model.pt")), "model.pt was not rewritten by the training"


def _prepare_mipr(root: Path) -> Path:
    """``prepare_app_root`` for ``mipr_auto_annotation`` with RGB copies of the images (MIPR segments RGB
    dermoscopy images); returns the bundle's folder."""
    prepare_app_root(root, ["mipr_auto_annotation"])
    for path in (root / "studies").glob("*.png"):
        with Image.open(path) as grey:
            grey.convert("RGB").save(path)
    return root / "bundles" / "mipr_auto_annotation"


def test_mipr_auto_annotation_pseudo_labels_the_unlabelled_images(tmp_path: Path):
    bundle = _prepare_mipr(tmp_path)
    studies = tmp_path / "studies"
    before = _state(bundle / "models" / "model.pt")
    _, log, seconds = _train(tmp_path, "mipr_auto_annotation", MIPR_PARAMS)
    print(f"mipr_auto_annotation train task: {seconds:.1f} s")
    expected = f"{len(LABELLED)} labelled for training, 0 for validation, {len(UNLABELLED)} unlabelled images"
    assert expected in log, log[-4000:]
    prepared = _prepared(bundle / "outputs")
    assert _sources(prepared["training"]) == sorted(_paths(studies, LABELLED)), prepared["training"]
    assert _sources(prepared["unlabeled"]) == sorted(_paths(studies, UNLABELLED)), prepared["unlabeled"]
    mipr = bundle / "outputs" / "mipr"
    rounds = json.loads((mipr / "rounds.json").read_text(encoding="utf-8"))
    assert [r["round"] for r in rounds] == [0, 1], rounds
    assert rounds[0]["train_items"] == len(LABELLED), rounds
    counts = rounds[1]["counts"]
    scored = counts["accepted"] + counts["rejected_empty"] + counts["rejected_check"]
    assert counts["unlabelled"] == scored == len(UNLABELLED), counts
    assert rounds[1]["train_items"] == len(LABELLED) + rounds[1]["pairs"], rounds
    pairs = json.loads((mipr / "round1" / "datalist.json").read_text(encoding="utf-8"))
    assert len(pairs["training"]) == counts["accepted"], pairs
    scored_images = sorted(pair["source"] for pair in pairs["training"] + pairs["rejected"])
    assert scored_images == sorted(item["image"] for item in prepared["unlabeled"]), pairs
    models = bundle / "models"
    assert (models / "round0" / "model.pt").is_file() and (models / "round1" / "model.pt").is_file()
    assert (models / "generator.pt").is_file()
    assert _rewritten(before, _state(models / "model.pt")), "model.pt was not rewritten by the training"


def test_mipr_auto_annotation_retrains_after_a_new_final_label(tmp_path: Path):
    """Train once, give one more image a final label, train again: the second run should start round 0 on the 3
    labels and pseudo-label only the 2 images still unlabelled."""
    bundle = _prepare_mipr(tmp_path)
    _train(tmp_path, "mipr_auto_annotation", MIPR_PARAMS)
    first = _state(bundle / "models" / "round0" / "model.pt")
    first_g = _state(bundle / "models" / "generator.pt")
    more = LABELLED + [UNLABELLED[0]]
    _, log, _ = _train(tmp_path, "mipr_auto_annotation", MIPR_PARAMS, labelled=more)
    assert f"{len(more)} labelled for training, 0 for validation, {NUM_IMAGES - len(more)} unlabelled" in log
    rounds = json.loads((bundle / "outputs" / "mipr" / "rounds.json").read_text(encoding="utf-8"))
    assert rounds[1]["counts"]["unlabelled"] == NUM_IMAGES - len(more), rounds
    assert _rewritten(first, _state(bundle / "models" / "round0" / "model.pt")), "round 0 was not retrained"
    assert _rewritten(first_g, _state(bundle / "models" / "generator.pt")), "G resumed the old training"


def test_a_second_training_with_the_same_max_epochs_trains_again(tmp_path: Path):
    """The annotation loop retrains with the same request after each correction: the app makes every training a new
    run (``resume`` false), fine-tuned from ``models/model.pt``, instead of resuming the previous run's
    ``checkpoint_epoch=1.pt`` at its last epoch and training nothing."""
    prepare_app_root(tmp_path, ["supervised_seg"])
    models = tmp_path / "bundles" / "supervised_seg" / "models"
    params = {"max_epochs": 1, "val_split": 0.0, "multi_gpu": False, "device": "cpu", "overrides": SUPERVISED_OVERRIDES}
    _train(tmp_path, "supervised_seg", params)
    first = _state(models / "model.pt")
    assert (models / "checkpoint_epoch=1.pt").is_file(), sorted(p.name for p in models.iterdir())
    _, log, _ = _train(tmp_path, "supervised_seg", params, labelled=LABELLED + UNLABELLED[:1])
    assert "supervised_seg: a new run (resume false)" in log, log[-3000:]
    assert _rewritten(first, _state(models / "model.pt")), "the second training did not train"


NEW_RUN_SCRIPT = """
import json, sys
from lib.train import LabelEfficientTrainTask
task = LabelEfficientTrainTask(sys.argv[1], {})
print(json.dumps({str(n): task._new_run_overrides(n) for n in (0, 3, 8, 20)}))
"""


def test_new_run_overrides_turn_resume_off_and_fit_the_unlabelled_batch(tmp_path: Path):
    """No server: ``resume`` false always; ``unlabeled_batch_size`` (adversarial_semi_seg: 8) lowered to the number
    of unlabelled images when there are fewer (and more than 0), else left alone."""
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    app = REPO / "monailabel_app"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(REPO)]), "PYTHONWARNINGS": "ignore"}
    bundle = REPO / "bundles" / "adversarial_semi_seg"
    result = subprocess.run(
        [str(SERVER_PYTHON), "-c", NEW_RUN_SCRIPT, str(bundle)], cwd=app, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "0": {"resume": False},
        "3": {"resume": False, "unlabeled_batch_size": 3},
        "8": {"resume": False},
        "20": {"resume": False},
    }, out


MULTI_GPU_SCRIPT = """
import json, os, sys
from lib.train import LabelEfficientTrainTask, TrainingFailed

task = LabelEfficientTrainTask(sys.argv[1], {})
task.run_multi_gpu({}, [sys.executable, "-c", "print('all ranks fine')"], os.environ)
try:
    task.run_multi_gpu({}, [sys.executable, "-c", "import sys; print('rank 1: CUDA out of memory'); sys.exit(3)"],
                       os.environ)
except TrainingFailed as error:
    print(json.dumps({"failed": str(error)}))
else:
    print(json.dumps({"failed": None}))
"""


def test_multi_gpu_training_that_fails_is_reported(tmp_path: Path):
    """MONAI Label's ``BundleTrainTask`` only logs ``torchrun``'s return code; the app's task raises with it and the
    last lines of the output (commands stand in for torchrun: no GPU here)."""
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    prepare_app_root(tmp_path, ["supervised_seg"])
    app = tmp_path / "monailabel_app"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(REPO)]), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(SERVER_PYTHON), "-c", MULTI_GPU_SCRIPT, str(tmp_path / "bundles" / "supervised_seg")],
        cwd=app, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all ranks fine" in result.stdout
    failed = json.loads(result.stdout.strip().splitlines()[-1])["failed"]
    assert failed is not None and "torchrun return code 3" in failed and "CUDA out of memory" in failed, failed
