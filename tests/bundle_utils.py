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


def network_state(module: Any) -> dict[str, Any]:
    """A CPU copy of ``module``'s state dict (a DDP wrapper's inner network)."""
    module = getattr(module, "module", module)
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two state dicts have the same keys and bit-identical tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def run_tracked(
    name: str, configs: list[str], network_key: str = "network", **overrides: Any
) -> tuple[ConfigWorkflow, dict[str, Any]]:
    """Like :func:`run_workflow` (training); also returns the state of ``network_key`` before the run: its
    initialisation (or the weights the config's ``initialize`` loaded)."""
    workflow = make_workflow(name, configs, **overrides)
    workflow.initialize()
    initial = network_state(workflow.parser.get_parsed_content(network_key))
    workflow.run()
    workflow.finalize()
    return workflow, initial


def parameters_differ(network: Any, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Some learnable parameter of ``network`` (not a buffer: batch-norm statistics change in a forward pass alone)
    differs between its state dicts ``a`` and ``b``."""
    import torch

    names = [name for name, _ in getattr(network, "module", network).named_parameters()]
    assert names and all(name in a and name in b for name in names), "a state dict lacks the network's parameters"
    return any(not torch.equal(a[name].cpu(), b[name].cpu()) for name in names)


def assert_trained_weights(path: str | Path, network: Any, initial: dict[str, Any]) -> None:
    """The weights file ``path`` (a state dict, or ``{"model": state dict}``) holds exactly ``network``'s final
    weights, and training changed them: some learnable parameter (not only a buffer such as batch-norm statistics,
    which a forward pass alone updates) differs from ``initial``."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    saved = saved["model"] if set(saved) == {"model"} else saved
    assert same_state(saved, network_state(network)), f"{path} is not the trained network's weights"
    assert saved.keys() == initial.keys(), f"{path} does not hold the network's keys"
    assert parameters_differ(network, saved, initial), f"{path} holds the initial parameters: no step reached them"


def assert_epoch_checkpoint(
    ckpt_dir: str | Path, epochs: int, iterations: int, networks: dict[str, Any] | None = None
) -> None:
    """``ckpt_dir/checkpoint_epoch=<epochs>.pt`` (``common.handlers.ResumableCheckpoint``) records the trainer after
    ``epochs`` epochs of ``iterations`` iterations in all, and holds each of ``networks`` (save_dict name -> module)
    as it ended."""
    import torch

    checkpoint = torch.load(Path(ckpt_dir) / f"checkpoint_epoch={epochs}.pt", map_location="cpu", weights_only=False)
    trainer = checkpoint["trainer"]
    assert trainer["iteration"] == iterations and trainer["iteration"] // trainer["epoch_length"] == epochs, trainer
    for key, module in (networks or {}).items():
        assert same_state(checkpoint[key], network_state(module)), f"the checkpoint's {key!r} is not the final one"
