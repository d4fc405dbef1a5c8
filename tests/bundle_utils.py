"""Running a bundle's workflows in-process with outputs redirected to a temporary folder (``common.bundle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from common import bundle

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"


def config_path(name: str, config: str) -> str:
    return str(BUNDLES / name / "configs" / config)


def make_workflow(name: str, configs: list[str], workflow_type: str = "train", **overrides: Any) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` over ``configs`` (names in the bundle's configs folder), not yet initialised."""
    return bundle.load_workflow(name, configs, workflow_type, bundle_root=str(BUNDLES / name), **overrides)


def run_workflow(name: str, configs: list[str], workflow_type: str = "train", **overrides: Any) -> ConfigWorkflow:
    """Initialise, run and finalise a workflow of this checkout's bundle ``name``."""
    return bundle.run_workflow(name, configs, workflow_type, bundle_root=str(BUNDLES / name), **overrides)


def missing_properties(name: str, configs: list[str], workflow_type: str, **overrides: Any) -> list[str]:
    """The properties MONAI Label and the zoo need that ``configs`` lack (checking instantiates them)."""
    workflow = make_workflow(name, configs, workflow_type, **overrides)
    workflow.initialize()
    return workflow.check_properties()
