"""Where a bundle of this collection lives (so configs work from the repository root and from the bundle folder),
and loading its workflows from Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def bundle_path(name: str) -> str:
    """Absolute folder of bundle ``name``.

    Tried in order: the current folder when it is that bundle (named ``name`` with a ``configs`` folder, as
    when a user runs from inside the bundle), ``./bundles/<name>`` (the repository root), and the ``bundles/`` folder
    next to this package (an editable install). MONAI Label sets ``bundle_root`` itself and skips this.
    """
    cwd = Path.cwd()
    if cwd.name == name and (cwd / "configs").is_dir():
        return str(cwd)
    for root in (cwd, Path(__file__).resolve().parent.parent):
        candidate = root / "bundles" / name
        if (candidate / "configs").is_dir():
            return str(candidate)
    raise FileNotFoundError(
        f"bundle '{name}' not found from {cwd}; run from the repository root or the bundle folder, "
        "or set bundle_root (e.g. --bundle_root /path/to/bundles/<name>)."
    )


def load_workflow(bundle: str, configs: Sequence[str], workflow_type: str = "train", **overrides: Any):
    """A ``monai.bundle.ConfigWorkflow`` of bundle ``bundle`` (not yet initialised).

    Args:
        bundle: bundle name (folder under ``bundles/``).
        configs: config file names in the bundle's ``configs`` folder, merged in order (e.g. ``["train.json",
            "evaluate.json"]``).
        workflow_type: "train" or "infer" (which properties ``check_properties`` checks).
        overrides: config ids and values, as on the command line (``bundle_root`` defaults to the bundle folder).
    """
    from monai.bundle import ConfigWorkflow

    root = Path(overrides.pop("bundle_root", None) or bundle_path(bundle))
    folder = root / "configs"
    return ConfigWorkflow(
        config_file=[str(folder / c) for c in configs],
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )
