"""Running a bundle's workflows in-process with outputs redirected to a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from common.bundle import load_workflow

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"


def config_path(bundle: str, name: str) -> str:
    return str(BUNDLES / bundle / "configs" / name)


def make_workflow(bundle: str, configs: list[str], workflow_type: str = "train", **overrides: Any) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``configs`` (names in the bundle's configs folder), not yet initialised."""
    return load_workflow(bundle, configs, workflow_type, bundle_root=str(BUNDLES / bundle), **overrides)


def run_workflow(bundle: str, configs: list[str], workflow_type: str = "train", **overrides: Any) -> ConfigWorkflow:
    workflow = make_workflow(bundle, configs, workflow_type, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def missing_properties(bundle: str, configs: list[str], workflow_type: str, **overrides: Any) -> list[str]:
    """The properties MONAI Label and the zoo need that ``configs`` lack (checking instantiates them)."""
    workflow = make_workflow(bundle, configs, workflow_type, **overrides)
    workflow.initialize()
    return workflow.check_properties()


def run_torchrun(bundle: str, overrides: dict[str, Any], port: int, timeout: int = 600) -> tuple[int, str]:
    """``torchrun --nproc_per_node=2`` of ``train.json`` + ``multi_gpu_train.json`` on CPU (gloo), one thread per rank.

    Returns the exit code and the tail of stdout + stderr (for assertion messages).
    """
    configs = [config_path(bundle, "train.json"), config_path(bundle, "multi_gpu_train.json")]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    args += [f"--master_port={port}", "-m", "monai.bundle", "run", "--config_file", json.dumps(configs)]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout
    )
    return result.returncode, result.stdout[-4000:] + result.stderr[-4000:]
