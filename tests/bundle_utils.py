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


def assert_panel(path: str | Path, kinds: str) -> None:
    """``path`` is a ``common.visualize.save_panel`` picture whose columns are, left to right, ``kinds``: ``i`` an
    image drawn in grey, ``r`` an RGB image, ``c`` a class map drawn in colour (viridis). Each column's vertical strip
    must show its kind: a grey image strip is grey with many grey levels, an RGB strip has many colours, a class-map
    strip is mostly coloured; none (nearly) empty."""
    import numpy as np
    from PIL import Image

    panel = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    for column, (kind, strip) in enumerate(zip(kinds, np.array_split(panel, len(kinds), axis=1))):
        pixels = strip.reshape(-1, 3)
        drawn = pixels[~(pixels == 255).all(1)]  # not the white background
        assert len(drawn) > 0.2 * len(pixels), f"{path}: column {column} is (nearly) empty"
        grey = (drawn[:, 0] == drawn[:, 1]) & (drawn[:, 1] == drawn[:, 2])
        if kind == "i":
            levels = len(np.unique(drawn[grey, 0]))
            assert (
                grey.mean() > 0.9 and levels >= 16
            ), f"{path}: column {column} should be a grey image: {grey.mean():.0%} grey, {levels} grey levels"
        elif kind == "r":
            colours = len(np.unique(drawn[~grey], axis=0))
            assert colours >= 16, f"{path}: column {column} should be an RGB image, has {colours} colours"
        else:
            assert (~grey).mean() > 0.5, f"{path}: column {column} should be a coloured class map"


def assert_report_consistent(report: dict) -> None:
    """An evaluation ``metrics.json`` (``common.handlers.SegmentationReport``) agrees with itself: one record per
    image, each image's Dice equal to ``2 IoU / (1 + IoU)`` (where both are defined) and in [0, 1], and each summary
    mean and count those of the per-image values."""
    import math

    per_image, summary = report["per_image"], report["summary"]
    assert per_image and len(per_image) == report["num_images"]
    for item in per_image:
        for name, dice in item["dice"].items():
            iou = item["iou"][name]
            if dice is not None and iou is not None and not (math.isnan(dice) or math.isnan(iou)):
                assert 0.0 <= dice <= 1.0 and math.isclose(dice, 2 * iou / (1 + iou), abs_tol=1e-5), (item, name)
    for metric, classes in summary.items():
        for name, entry in classes.items():
            if name == "mean" or not isinstance(entry, dict) or "n" not in entry:
                continue
            values = [item[metric][name] for item in per_image if metric in item and name in item[metric]]
            values = [v for v in values if v is not None and not math.isnan(v)]
            assert entry["n"] == len(values), (metric, name)
            if values:
                assert math.isclose(entry["mean"], sum(values) / len(values), abs_tol=1e-6), (metric, name)
