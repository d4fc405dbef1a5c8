"""torchrun with two CPU processes (gloo) trains supervised_seg with multi_gpu_train.json; rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bundle_utils import REPO, config_path


def test_torchrun_two_processes(tmp_path: Path):
    overrides = {
        "output_dir": str(tmp_path / "outputs"),
        "ckpt_dir": str(tmp_path / "models"),
        "demo_kwargs": {"num_cases": 6, "image_size": 64},
        "max_epochs": 1,
        "val_interval": 1,
        "patch_size": [64, 64],
        "batch_size": 2,
        "val_fraction": 0.34,  # two validation images: DistributedSampler needs one per rank
    }
    configs = [config_path("supervised_seg", "train.json"), config_path("supervised_seg", "multi_gpu_train.json")]
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        "--master_port=29517",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(configs),
    ]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600
    )
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").is_file(), log
    assert (tmp_path / "models" / "model.pt").is_file(), log
    assert len(list((tmp_path / "models").glob("*.pt"))) == 2, list((tmp_path / "models").iterdir())
