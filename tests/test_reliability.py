"""Reliability of training: SIGKILL and resume, non-finite loss, determinism (supervised_seg as the example)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_utils import REPO, config_path, run_workflow

BUNDLE = "supervised_seg"


def _overrides(tmp: Path, **extra) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "demo_kwargs": {"num_cases": 6, "image_size": 64},
        "max_epochs": 1,
        "val_interval": 1,
        "patch_size": [64, 64],
        "batch_size": 2,
        **extra,
    }


def _cli(tmp: Path, **extra) -> list[str]:
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_path(BUNDLE, "train.json")]
    for key, value in _overrides(tmp, **extra).items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


# The first run of the SIGKILL test: the bundle's training with one extra handler that, at the first iteration of
# epoch 2 (after epoch 1's checkpoint is on disk), touches a marker file and blocks. The kill then always lands
# mid-training, however fast the machine (polling for the checkpoint raced with fast epochs: n_saved=1 removes it).
_TRAIN_THEN_BLOCK_IN_EPOCH_2 = """
import json, sys, time
from pathlib import Path
from ignite.engine import Events
from common import bundle

overrides, marker = json.loads(sys.argv[1]), Path(sys.argv[2])
workflow = bundle.load_workflow("supervised_seg", ["train.json"], "train", **overrides)
workflow.initialize()
trainer = workflow.parser.get_parsed_content("train#trainer")

@trainer.on(Events.ITERATION_STARTED)
def block_in_epoch_2(engine):
    if engine.state.epoch == 2:
        marker.touch()
        time.sleep(3600)

workflow.run()
"""


def test_sigkill_mid_training_resumes_to_the_same_final_epoch(tmp_path: Path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = {"max_epochs": 4, "demo_kwargs": {"num_cases": 12, "image_size": 64}}
    overrides = _overrides(tmp_path, **run)
    marker, log = tmp_path / "in_epoch_2", tmp_path / "first_run.log"
    with log.open("w") as log_file:
        first = subprocess.Popen(
            [sys.executable, "-c", _TRAIN_THEN_BLOCK_IN_EPOCH_2, json.dumps(overrides), str(marker)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 300
        while not marker.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the first run never reached epoch 2:\n" + log.read_text(errors="replace")[-2000:]
        assert (tmp_path / "models" / "checkpoint_epoch=1.pt").exists()
    finally:  # blocked, or failed: either way it must not outlive the test
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    # a kill can only leave a hidden ".<name>.partial-<pid>.pt" file; every file under its real name is whole
    saved = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith("."))
    assert all(name.endswith(".pt") for name in saved), f"unexpected files: {saved}"
    for name in saved:
        torch.load(tmp_path / "models" / name, map_location="cpu", weights_only=False)
    args = _cli(tmp_path, **run)
    resumed = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    final = torch.load(tmp_path / "models" / "checkpoint_epoch=4.pt", map_location="cpu", weights_only=False)
    assert final["trainer"]["iteration"] == 4 * final["trainer"]["epoch_length"]
    assert [p.name for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt")] == ["checkpoint_epoch=4.pt"]
    assert not [p.name for p in (tmp_path / "models").iterdir() if ".partial-" in p.name]


def test_nonfinite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path):
    run_workflow(BUNDLE, ["train.json"], **_overrides(tmp_path))
    good = tmp_path / "models" / "checkpoint_epoch=1.pt"
    before = good.read_bytes()
    nan_loss = "$lambda pred, label: (pred * float('nan')).sum()"
    with pytest.raises(RuntimeError) as failure:  # MONAI's config runner wraps the handler's error
        run_workflow(BUNDLE, ["train.json"], **_overrides(tmp_path, max_epochs=2, loss=nan_loss))
    cause = failure.value.__cause__
    assert isinstance(cause, FloatingPointError)
    assert re.search(r"loss is nan at epoch 2.*checkpoint_epoch=1\.pt", str(cause))
    assert good.read_bytes() == before
    assert not (tmp_path / "models" / "checkpoint_epoch=2.pt").exists()


def test_same_seed_same_result_on_cpu(tmp_path: Path):
    weights = []
    for run in ("a", "b"):
        run_workflow(BUNDLE, ["train.json"], **_overrides(tmp_path / run))
        weights.append(torch.load(tmp_path / run / "models" / "model.pt", map_location="cpu"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)
