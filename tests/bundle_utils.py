"""Running a bundle's workflows in-process with outputs redirected to a temporary folder."""

from __future__ import annotations

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
