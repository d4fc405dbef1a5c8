"""A MONAI Label server (monailabel 0.8.5) for the tests and the benchmarks that drive one over HTTP.

The server runs from its own virtual environment: monailabel needs a torchvision that imports, numpy<2 and pydicom
2.4.4, none of which fits the main environment (see docs/monailabel.md). The environment is ``.venv/monailabel`` (made
by the README's test command, :data:`SETUP_HINT`) or the Python named by ``MONAILABEL_PYTHON``. It is started on
127.0.0.1 at a free port (:func:`free_port`), in a temporary folder:

- :class:`Server`: MONAI Label's ``monaibundle`` sample app with this collection's bundles as local models
  (``--conf zoo_source local``; tests/test_monailabel.py);
- :class:`AppServer`: the repository's own app (``monailabel_app/``), copied with the bundles into a folder laid out by
  :func:`prepare_app_root` and started with :func:`server_env` (tests/test_monailabel_app.py and the other app tests,
  benchmarks/monailabel_load.py, benchmarks/experiments/annotation_effort.py).

Weights are the untrained networks' (:func:`add_bundle`), written into copies of the bundles, never into
``bundles/``. This module needs the repository's checkout (``bundles/``, ``monailabel_app/``), not only the installed
``common`` package.
"""

from __future__ import annotations

import io
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SERVER_PYTHON = Path(os.environ.get("MONAILABEL_PYTHON") or REPO / ".venv" / "monailabel" / "bin" / "python")
SETUP_HINT = (
    "python -m venv .venv/monailabel && .venv/monailabel/bin/pip install torch==2.14.1 torchvision==0.29.1 wheel "
    '&& SAM2_BUILD_CUDA=0 .venv/monailabel/bin/pip install --no-build-isolation -e ".[monailabel]"'
)
START_TIMEOUT = 300
REQUEST_TIMEOUT = 300
TRAIN_TIMEOUT = 600


NUM_IMAGES = 5  # images :func:`prepare_app_root` writes by default
SIZE = (48, 56)  # (height, width) of those images


def bundle_metadata(bundle: str) -> dict:
    """``bundles/<bundle>/configs/metadata.json``."""
    return json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


def label_values(bundle: str) -> set[int]:
    """The label values of ``bundle``'s output (its metadata's ``channel_def``)."""
    return {int(k) for k in bundle_metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"]}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk(height: int, width: int, shift: int = 0) -> np.ndarray:
    """A centred disk mask (radius a quarter of the smaller side), moved ``shift`` pixels right."""
    yy, xx = np.mgrid[:height, :width]
    return (yy - height // 2) ** 2 + (xx - width // 2 - shift) ** 2 < (min(height, width) // 4) ** 2


def add_bundle(bundle: str, model_dir: Path) -> None:
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


def check_mask(bundle: str, mask: np.ndarray, shape: tuple[int, ...], server: Server) -> None:
    """Raise ``AssertionError`` unless ``mask`` (a returned mask) has ``shape`` and only ``bundle``'s label values."""
    if mask.shape != shape:
        raise AssertionError(f"{bundle}: mask shape {mask.shape}, image shape {shape}" + server.log_tail())
    if not np.array_equal(mask, np.round(mask)):
        raise AssertionError(f"{bundle}: mask values are not integers")
    values = {int(v) for v in np.unique(mask)}
    if not values <= label_values(bundle):
        raise AssertionError(f"{bundle}: mask values {values}, labels {label_values(bundle)}")


class AppServer(Server):
    """``Server`` started with the repository's app (copied to ``root/monailabel_app``) instead of ``monaibundle``,
    with the app's own ``--conf`` settings ``conf``."""

    def __init__(self, root: Path, port: int, models: list[str], conf: dict[str, str]) -> None:
        super().__init__(root, port, models)
        self.app = root / "monailabel_app"
        self.conf = conf

    def command(self) -> list[str]:
        """``Server``'s command line with this app and ``--conf`` from ``self.conf`` (its own are the monaibundle
        app's)."""
        cmd = [str(SERVER_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(self.app)]
        cmd += ["--studies", str(self.studies), "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]]
        for key, value in {"models": ",".join(self.models), **self.conf}.items():
            cmd += ["--conf", key, value]
        return cmd

    def train(self, model: str, params: dict) -> dict:
        """Start a training over HTTP and wait for its end; returns the final status (asserted ``DONE``)."""
        started = json.loads(self.request("POST", f"/train/{model}", body=params)[0])
        if started.get("status") not in ("SUBMITTED", "RUNNING", "DONE"):
            raise AssertionError(f"{model}: training not started: {started}" + self.log_tail())
        deadline = time.monotonic() + TRAIN_TIMEOUT
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.get("/train/", all="false")
            if status.get("id") == started["id"] and status.get("status") not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(2)
        details = "\n".join(status.get("details", [])[-40:])
        if status.get("status") != "DONE":
            raise AssertionError(f"{model}: training {status.get('status')}:\n{details}" + self.log_tail())
        return status

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def app_image(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a noisy background (grey uint8) and its mask; the disk moves with ``index``."""
    mask = disk(*SIZE, shift=2 * index - 4)
    rng = np.random.default_rng(index)
    return np.clip(50 + 130 * mask + rng.normal(0, 8, SIZE), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def prepare_app_root(
    root: Path, bundles: list[str], untrained: tuple[str, ...] = (), num_images: int = NUM_IMAGES
) -> None:
    """Lay out ``root`` for an :class:`AppServer`: the app in ``root/monailabel_app``, copies of ``bundles`` with their
    untrained networks' weights in ``root/bundles`` (no ``models/model.pt`` for those in ``untrained``), ``num_images``
    grey PNG images without labels in ``root/studies`` and their true masks in ``root/masks``."""
    shutil.copytree(
        REPO / "monailabel_app",
        root / "monailabel_app",
        ignore=shutil.ignore_patterns("logs", "model", "bin", "__pycache__"),
    )
    for bundle in bundles:
        add_bundle(bundle, root / "bundles")
    for bundle in untrained:
        (root / "bundles" / bundle / "models" / "model.pt").unlink()
    (root / "studies").mkdir()
    (root / "masks").mkdir()
    for i in range(num_images):
        image, mask = app_image(i)
        Image.fromarray(image).save(root / "studies" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")


def server_env(root: Path) -> dict[str, str]:
    """The server's environment: this one with the repository on ``PYTHONPATH``, ``OMP_NUM_THREADS`` (default 1),
    sessions under ``root`` and no automatic rescoring."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "PYTHONWARNINGS": "ignore",
        "MONAI_LABEL_SESSION_PATH": str(root / "sessions"),
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",  # score when the test asks, not after every training/next sample
    }


@dataclass
class InferResult:
    """One inference request of :func:`concurrent_inference`: its image, latency in seconds (send to full answer),
    and the error it met (``None``: HTTP 200 and a valid mask)."""

    image: str
    latency: float
    error: str | None = None


def concurrent_inference(
    server: AppServer, model: str, images: list[str], requests: int, concurrency: int
) -> tuple[list[InferResult], float]:
    """Send ``requests`` inference requests of ``model`` (cycling over ``images``) from a pool of ``concurrency``
    threads, each waiting for its answer before taking the next, and check every answer is a mask of the image's size
    with the bundle's label values; returns the results in submission order and the wall time of the whole loop."""

    def one(image: str) -> InferResult:
        start = time.perf_counter()
        try:
            content = server.infer(model, image)
        except Exception as error:  # an HTTP error status, a refused connection, a timeout: a failed request
            return InferResult(image, time.perf_counter() - start, f"{type(error).__name__}: {str(error)[:300]}")
        latency = time.perf_counter() - start
        try:
            with Image.open(io.BytesIO(content)) as mask:
                check_mask(model, np.asarray(mask), SIZE, server)
        except Exception as error:  # not an image, or a wrong size or label value
            return InferResult(image, latency, f"invalid mask: {type(error).__name__}: {str(error)[:300]}")
        return InferResult(image, latency)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, [images[i % len(images)] for i in range(requests)]))
    return results, time.perf_counter() - start
