"""A real MONAI Label server serves this collection's bundles: inference for every bundle, training of supervised_seg.

The server is monailabel 0.8.5 with its ``monaibundle`` sample app and the bundles as local models
(``--conf zoo_source local``), started on 127.0.0.1 at a free port from its own virtual environment:
monailabel needs a torchvision that imports, numpy<2 and pydicom 2.4.4, none of which fits the main environment
(see docs/monailabel.md). The environment is ``.venv/monailabel`` (made by the README's test command) or the Python
named by ``MONAILABEL_PYTHON``. Weights are the untrained networks' (this checks the plumbing: shapes, label values,
a finished training run), written into copies of the bundles in a temporary app folder, never into ``bundles/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SERVER_PYTHON = Path(os.environ.get("MONAILABEL_PYTHON") or REPO / ".venv" / "monailabel" / "bin" / "python")
SETUP_HINT = (
    "python -m venv .venv/monailabel && .venv/monailabel/bin/pip install torch==2.14.1 torchvision==0.29.1 wheel "
    '&& SAM2_BUILD_CUDA=0 .venv/monailabel/bin/pip install --no-build-isolation -e ".[monailabel]"'
)
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/inference.json"))
TRAIN_BUNDLE = "supervised_seg"
START_TIMEOUT = 300
REQUEST_TIMEOUT = 300
TRAIN_TIMEOUT = 600
VOLUME_SHAPE = (48, 40, 5)
IMAGE_SIZE = (56, 64)  # (height, width) of the 2D images


def _metadata(bundle: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


def _num_channels(bundle: str) -> int:
    return int(_metadata(bundle)["network_data_format"]["inputs"]["image"].get("num_channels", 1))


def _label_values(bundle: str) -> set[int]:
    return {int(k) for k in _metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"]}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _disk(height: int, width: int, shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - height // 2) ** 2 + (xx - width // 2 - shift) ** 2 < (min(height, width) // 4) ** 2


def _write_inputs(folder: Path) -> dict[str, Path]:
    """A 3D NIfTI volume, a 2D NIfTI image with its label, and grey and RGB PNGs: bright disks on noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    masks = np.stack([_disk(*VOLUME_SHAPE[:2], shift=z) for z in range(VOLUME_SHAPE[2])], axis=-1)
    volume = (100.0 * masks + rng.normal(0, 5, VOLUME_SHAPE)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), folder / "volume.nii.gz")
    mask2d = _disk(*IMAGE_SIZE)
    image2d = (100.0 * mask2d + rng.normal(0, 5, IMAGE_SIZE)).astype(np.float32)
    nib.save(nib.Nifti1Image(image2d, np.eye(4)), folder / "slice.nii.gz")
    nib.save(nib.Nifti1Image(mask2d.astype(np.uint8), np.eye(4)), folder / "slice_label.nii.gz")
    grey = np.clip(60 + 120 * mask2d + rng.normal(0, 8, IMAGE_SIZE), 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1)).save(folder / "rgb.png")
    return {p.name.split(".")[0]: p for p in folder.iterdir()}


def _add_bundle(bundle: str, model_dir: Path) -> None:
    """Copy ``bundle`` into the app's model folder with ``models/model.pt`` holding its untrained inference network."""
    dst = model_dir / bundle
    shutil.copytree(
        REPO / "bundles" / bundle,
        dst,
        ignore=shutil.ignore_patterns("outputs", "eval", "__pycache__", "*.pt", "*.ts"),
    )
    parser = ConfigParser()
    parser.read_config(str(dst / "configs" / "inference.json"))
    parser["bundle_root"] = str(dst)
    network = parser.get_parsed_content("network_def", instantiate=True)
    (dst / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), dst / "models" / "model.pt")


class Server:
    """A MONAI Label server process and a minimal HTTP client for it (standard library only)."""

    def __init__(self, root: Path, port: int, models: list[str]) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{port}"
        self.app = root / "apps" / "monaibundle"
        self.studies = root / "studies"
        self.log_path = root / "server.log"
        self.models = models
        self.process: subprocess.Popen | None = None
        self._log = None

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n--- MONAI Label server log (tail) ---\n" + text[-chars:]

    def command(self) -> list[str]:
        """The ``start_server`` command line (the monaibundle app with the bundles as local models)."""
        return [
            str(SERVER_PYTHON),
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(self.app),
            "--studies",
            str(self.studies),
            "--host",
            "127.0.0.1",
            "--port",
            self.url.rsplit(":", 1)[1],
            "--conf",
            "models",
            ",".join(self.models),
            "--conf",
            "zoo_source",
            "local",
            "--conf",
            "sam2",
            "false",
        ]

    def start(self, env: dict[str, str]) -> None:
        """Start the server and wait until it answers ``/info/`` (raises with the log's tail if it does not)."""
        cmd = self.command()
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MONAI Label server exited with {self.process.returncode}" + self.log_tail())
            try:
                self.get("/info/", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise RuntimeError(f"MONAI Label server did not answer within {START_TIMEOUT} s" + self.log_tail())

    def stop(self) -> None:
        """End the server and the training processes it started (its own process group)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()

    def request(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        fields: dict[str, str] | None = None,
        files: dict[str, Path] | None = None,
        body: dict | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[bytes, str]:
        """Send a request (multipart form when ``fields``/``files`` are given, JSON when ``body`` is) and return the
        response bytes and content type; an HTTP error status raises with the server's answer and log."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers, data = {}, None
        if fields or files:
            boundary = uuid.uuid4().hex
            parts = []
            for name, value in (fields or {}).items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                )
            for name, file in (files or {}).items():
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{file.name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n"
                )
                parts.append(head.encode() + file.read_bytes() + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            answer = error.read().decode("utf-8", errors="replace")[:2000]
            raise AssertionError(f"{method} {path} {query or ''}: HTTP {error.code}: {answer}" + self.log_tail())

    def get(self, path: str, timeout: float = REQUEST_TIMEOUT, **query) -> dict:
        return json.loads(self.request("GET", path, query=query or None, timeout=timeout)[0])

    def upload_image(self, image_id: str, file: Path) -> None:
        self.request("PUT", "/datastore/", query={"image": image_id}, files={"file": file})

    def upload_label(self, image_id: str, file: Path) -> None:
        self.request("PUT", "/datastore/label", query={"image": image_id, "tag": "final"}, files={"label": file})

    def infer(self, model: str, image_id: str) -> bytes:
        """The mask MONAI Label returns for ``image_id`` (as a viewer asks: no parameters)."""
        content, _ = self.request(
            "POST", f"/infer/{model}", query={"image": image_id, "output": "image"}, fields={"params": "{}"}
        )
        return content


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
        _add_bundle(bundle, root / "apps" / "monaibundle" / "model")
    srv = Server(root, _free_port(), BUNDLES)
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
            for k, v in _metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"].items()
            if v.lower() != "background"
        }
        assert labels == expected, (bundle, labels)


def _check_mask(bundle: str, mask: np.ndarray, shape: tuple[int, ...], server: Server) -> None:
    assert mask.shape == shape, f"{bundle}: mask shape {mask.shape}, image shape {shape}" + server.log_tail()
    assert np.array_equal(mask, np.round(mask)), f"{bundle}: mask values are not integers"
    values = {int(v) for v in np.unique(mask)}
    assert values <= _label_values(bundle), f"{bundle}: mask values {values}, labels {_label_values(bundle)}"


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if _num_channels(b) == 1])
def test_inference_on_nifti_volume(server: Server, bundle: str, tmp_path: Path):
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(server.infer(bundle, "volume"))
    mask = nib.load(out)
    _check_mask(bundle, np.asarray(mask.dataobj), VOLUME_SHAPE, server)
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
        _check_mask(bundle, np.asarray(image), IMAGE_SIZE, server)


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
