"""The repository's MONAI Label app started as on a fresh checkout, with no weights, on a real server (issue 29).

The harness of common/monailabel_harness.py (monailabel 0.8.5 from its own environment, 127.0.0.1, a free port) with
one bundle, ``adversarial_semi_seg``, copied without ``models/model.pt`` and served through ``--conf bundles_dir``,
as the epistemic (MC-dropout) model, on 5 tiny PNG images. The tests run in file order on one server:

- before any weights, ``POST /scoring/epistemic`` (in the background or ``run_sync``) and the ``epistemic`` strategy
  answer HTTP 409 saying that the bundle has no weights yet, and MONAI Label's automatic scoring at start is skipped;
- a training through HTTP writes ``model.pt`` and its end starts the automatic scoring with those weights (the server
  runs with ``MONAI_LABEL_AUTO_UPDATE_SCORING`` on, as a Slicer user runs it; no restart); then the image served
  first is the one with the highest ``epistemic_entropy`` among the unlabelled images, and so on down;
- an image uploaded afterwards has no score from the current weights: the strategy answers 409 naming it (and starts
  the scoring) until it is scored, then serves again;
- a value that MONAI's config parser would run or resolve (``"$__import__('pathlib').Path(marker).touch() or 1"``,
  ``"@device"``, an object with ``_target_``) in any field the app forwards, of a train, infer, batch infer or
  scoring request, is answered with HTTP 400 naming the field, and the marker file is never created.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_monailabel_app import ADVERSARIAL_OVERRIDES, LABELLED

from common.monailabel_harness import (
    NUM_IMAGES,
    REQUEST_TIMEOUT,
    SERVER_PYTHON,
    SETUP_HINT,
    TRAIN_TIMEOUT,
    AppServer,
    free_port,
    prepare_app_root,
    server_env,
)

BUNDLE = "adversarial_semi_seg"  # a U-Net: takes a dropout rate; served with no weights at start
UNLABELLED = sorted(f"img{i}" for i in range(NUM_IMAGES) if f"img{i}" not in LABELLED)
TRAIN_PARAMS = {
    "max_epochs": 1,
    "val_split": 0.5,
    "multi_gpu": False,
    "device": "cpu",
    "overrides": ADVERSARIAL_OVERRIDES,
}
SCORING_PARAMS = {"device": "cpu", "max_workers": 1}
NEW_IMAGE = f"img{NUM_IMAGES}.png"


def _ask(
    server: AppServer,
    method: str,
    path: str,
    query: dict | None = None,
    body: dict | None = None,
    fields: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Send a request and return its HTTP status and body text, error statuses included (``Server.request`` raises
    on them). ``fields``: a multipart form of text fields; ``body``: JSON."""
    if fields is not None:
        boundary = "----fresh-test-boundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        data = ("".join(parts) + f"--{boundary}--\r\n").encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    elif body is not None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
    else:
        data, headers = None, {}
    url = server.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", errors="replace")


def _detail(text: str) -> str:
    """The ``detail`` of a FastAPI error answer (the text itself if it is not one)."""
    try:
        return str(json.loads(text).get("detail", text))
    except (ValueError, AttributeError):
        return text


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    root = tmp_path_factory.mktemp("monailabel_fresh")
    prepare_app_root(root, [BUNDLE], untrained=(BUNDLE,), num_images=NUM_IMAGES + 1)
    (root / "new").mkdir()
    (root / "studies" / NEW_IMAGE).rename(root / "new" / NEW_IMAGE)  # uploaded after the first scoring
    conf = {"epistemic_model": BUNDLE, "epistemic_simulation_size": "4", "bundles_dir": str(root / "bundles")}
    srv = AppServer(root, free_port(), [BUNDLE], conf)
    try:
        srv.start({**server_env(root), "MONAI_LABEL_AUTO_UPDATE_SCORING": "true"})  # as a Slicer user runs it
        yield srv
    finally:
        srv.stop()


def _scoring_tasks(server: AppServer) -> list[dict]:
    """MONAI Label's scoring tasks so far (background ones), oldest first."""
    status, text = _ask(server, "GET", "/scoring/", {"all": "true"})
    return json.loads(text) if status == 200 else []


def _wait_for_scoring(server: AppServer, after: int) -> dict:
    """Wait until the scoring tasks after the first ``after`` have all ended; returns the last (asserted DONE)."""
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while time.monotonic() < deadline:
        tasks = _scoring_tasks(server)[after:]
        if tasks and all(t["status"] not in ("SUBMITTED", "RUNNING") for t in tasks):
            assert tasks[-1]["status"] == "DONE", json.dumps(tasks[-1])[-3000:] + server.log_tail()
            return tasks[-1]
        time.sleep(1)
    raise AssertionError("no automatic scoring ended in time" + server.log_tail())


def _scored_infos(server: AppServer, images: list[str], model_ts: int, timeout: float = 60) -> dict[str, dict]:
    """The image infos of ``images`` once each has a score from the weights of time ``model_ts`` (the server reloads
    the datastore file that the scoring process wrote a moment after that process ends)."""
    deadline = time.monotonic() + timeout
    while True:
        infos = {i: server.get("/datastore/image/info", image=i) for i in images}
        if all(info.get("epistemic_ts") == model_ts for info in infos.values()) or time.monotonic() > deadline:
            return infos
        time.sleep(1)


def test_scoring_and_strategy_say_there_are_no_weights_yet(fresh_server: AppServer):
    assert not (fresh_server.root / "bundles" / BUNDLE / "models" / "model.pt").exists()
    info = fresh_server.get("/info/")
    assert BUNDLE not in info["models"] and BUNDLE in info["trainers"], fresh_server.log_tail()
    assert info["scoring"]["epistemic"]["ready"] is False, info["scoring"]
    assert "epistemic" in info["strategies"], info["strategies"]
    # the automatic scoring at start was skipped (the server started: it did not fail on it)
    assert (
        "Automatic scoring skipped: epistemic scoring: adversarial_semi_seg has no weights" in fresh_server.log_text()
    )
    for query in ({}, {"run_sync": "true"}):  # a background task and a synchronous one
        status, text = _ask(fresh_server, "POST", "/scoring/epistemic", query=query, body=SCORING_PARAMS)
        assert status == 409 and "has no weights yet" in _detail(text), (query, status, text)
    status, text = _ask(fresh_server, "POST", "/activelearning/epistemic", body={})
    assert status == 409 and "has no weights yet" in _detail(text), (status, text)
    assert "Scoring Task is not Initialized" not in fresh_server.log_text()
    assert _scoring_tasks(fresh_server) == []


def test_training_writes_weights_then_scores_rank_the_next_image(fresh_server: AppServer):
    """The training's end starts MONAI Label's automatic scoring (``MONAI_LABEL_AUTO_UPDATE_SCORING``) with the new
    weights, without a restart; the strategy then serves the unlabelled images by decreasing entropy."""
    for image_id in LABELLED:
        fresh_server.upload_label(image_id, fresh_server.root / "masks" / f"{image_id}.png")
    fresh_server.train(BUNDLE, TRAIN_PARAMS)
    model = fresh_server.root / "bundles" / BUNDLE / "models" / "model.pt"
    assert model.is_file() and fresh_server.get("/info/")["scoring"]["epistemic"]["ready"] is True
    summary = _wait_for_scoring(fresh_server, after=0)
    assert summary["request"]["method"] == "epistemic", summary
    infos = _scored_infos(fresh_server, UNLABELLED, int(model.stat().st_mtime))
    assert all(i.get("epistemic_ts") == int(model.stat().st_mtime) for i in infos.values()), infos
    scores = {i: info["epistemic_entropy"] for i, info in infos.items()}
    assert all(0.0 < s <= np.log(3) for s in scores.values()), scores
    assert len(set(scores.values())) == len(scores), scores
    served = [json.loads(fresh_server.request("POST", "/activelearning/epistemic", body={})[0]) for _ in scores]
    assert served[0]["id"] == max(scores, key=scores.get), (served, scores)
    assert [s["id"] for s in served] == sorted(scores, key=scores.get, reverse=True), (served, scores)


def test_an_unscored_image_is_not_ranked_until_scored(fresh_server: AppServer):
    """A new image has no score from the current weights: the strategy refuses (409, naming it) and starts the
    automatic scoring; once that has ended, the strategy serves again and the new image has its score."""
    _wait_for_scoring(fresh_server, after=0)  # the rescoring each served sample started
    before = len(_scoring_tasks(fresh_server))
    fresh_server.upload_image(NEW_IMAGE.split(".")[0], fresh_server.root / "new" / NEW_IMAGE)
    status, text = _ask(fresh_server, "POST", "/activelearning/epistemic", body={})
    unlabelled = len(UNLABELLED) + 1
    assert status == 409 and f"1 of {unlabelled} unlabelled images" in _detail(text), (status, text)
    assert NEW_IMAGE.split(".")[0] in _detail(text), text
    _wait_for_scoring(fresh_server, after=before)
    model_ts = int((fresh_server.root / "bundles" / BUNDLE / "models" / "model.pt").stat().st_mtime)
    info = _scored_infos(fresh_server, [NEW_IMAGE.split(".")[0]], model_ts)[NEW_IMAGE.split(".")[0]]
    assert info.get("epistemic_ts") == model_ts and info.get("epistemic_entropy", 0) > 0, info
    status, text = _ask(fresh_server, "POST", "/activelearning/epistemic", body={})
    assert status == 200 and json.loads(text)["id"], (status, text)


def _injections(marker: Path) -> dict[str, object]:
    """Values MONAI's config parser would run (``$``), resolve (``@``) or instantiate (``_target_``), each of which
    creates ``marker`` or refers to another config item if it ever reaches a bundle config."""
    return {
        "expression": f"$__import__('pathlib').Path({str(marker)!r}).touch() or 1",
        "reference": "@device",
        "component": {"_target_": "pathlib.Path.touch", "self": str(marker)},
    }


TRAIN_FIELDS = [
    "max_epochs",
    "device",
    "val_split",
    "run_id",
    "tracking",
    "tracking_uri",
    "tracking_experiment_name",
    "tracking_run_name",
    "model_filename",
    "pretrained",
    "gpus",
    "displayable_setting",  # any other field: MONAI Label copies a bundle's displayable configs from the request
]
INFER_FIELDS = ["device", "model_filename", "label_tag", "displayable_setting"]
BATCH_FIELDS = ["device", "label_tag", "multi_gpu", "gpus", "max_workers", "max_batch_size", "images", "extra"]
SCORING_FIELDS = ["device", "max_samples", "simulation_size", "max_workers", "multi_gpu", "gpus", "extra"]


def test_requests_carrying_code_or_references_are_refused(fresh_server: AppServer, tmp_path: Path):
    """Every field of every request kind, each value: 400 naming the field, nothing run. The overrides of a train
    request too, as a value and nested in a list; and the synchronous (``run_sync``) paths."""
    marker = tmp_path / "marker"
    if _scoring_tasks(fresh_server):  # a running task of the kind answers 429 before any check: let it end
        _wait_for_scoring(fresh_server, after=0)
    trained = _ask(fresh_server, "GET", "/train/", {"all": "true"})
    failures = []

    def expect_400(kind: str, field: str, status: int, text: str) -> None:
        detail = _detail(text)
        if status != 400 or not detail.startswith(field.split("#")[0]):
            failures.append(f"{kind} {field}: HTTP {status}: {detail[:300]}")

    for name, value in _injections(marker).items():
        for field in TRAIN_FIELDS:
            params = {**TRAIN_PARAMS, field: value}
            expect_400("train", field, *_ask(fresh_server, "POST", f"/train/{BUNDLE}", body=params))
        for overrides in ({"val_interval": value}, {"patch_size": [32, value]}):
            params = {**TRAIN_PARAMS, "overrides": overrides}
            for query in ({}, {"run_sync": "true"}):
                status, text = _ask(fresh_server, "POST", f"/train/{BUNDLE}", query=query, body=params)
                expect_400("train", "overrides", status, text)
        for field in INFER_FIELDS:
            form = {"params": json.dumps({field: value})}
            query = {"image": UNLABELLED[0], "output": "image"}
            expect_400("infer", field, *_ask(fresh_server, "POST", f"/infer/{BUNDLE}", query=query, fields=form))
        for field in BATCH_FIELDS:
            params = {"device": "cpu", "multi_gpu": False, "max_workers": 1, field: value}
            for query in ({"images": "unlabeled"}, {"images": "unlabeled", "run_sync": "true"}):
                expect_400("batch infer", field, *_ask(fresh_server, "POST", f"/batch/infer/{BUNDLE}", query, params))
        for field in SCORING_FIELDS:
            params = {**SCORING_PARAMS, field: value}
            for query in ({}, {"run_sync": "true"}):
                expect_400("scoring", field, *_ask(fresh_server, "POST", "/scoring/epistemic", query, params))
    time.sleep(2)  # a task that had started anyway would have run by now
    assert not failures, "\n".join(failures) + fresh_server.log_tail()
    assert not marker.exists(), "a request value was run by a bundle config" + fresh_server.log_tail()
    assert _ask(fresh_server, "GET", "/train/", {"all": "true"}) == trained, "a refused request started a training"
