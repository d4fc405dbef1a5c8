"""Smoke runs of the supervised_seg bundle: train one epoch on tiny demo data, evaluate, infer 3D and 2D."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import REPO, assert_panel, assert_report_consistent, config_path, missing_properties, run_workflow
from PIL import Image

BUNDLE = "supervised_seg"
TINY_DEMO = {"num_cases": 6, "image_size": 64}


def _overrides(tmp: Path) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "demo_kwargs": TINY_DEMO,
        "max_epochs": 1,
        "val_interval": 1,
        "patch_size": [64, 64],
        "batch_size": 4,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("supervised")
    run_workflow(BUNDLE, ["train.json"], **_overrides(tmp))
    return tmp


def test_properties_complete(tmp_path: Path):
    """Every property MONAI Label and the zoo need is present (checking instantiates them: tiny data)."""
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_training_writes_checkpoints(trained: Path):
    assert (trained / "models" / "model.pt").is_file()
    assert (trained / "models" / "checkpoint_epoch=1.pt").is_file()
    datalists = list((trained / "outputs" / "prepared").glob("*/datalist.json"))
    assert len(datalists) == 1


def test_trains_on_raw_3d_volumes_as_monai_label_hands_them(tmp_path: Path):
    """MONAI Label overrides ``train#dataset#data`` / ``validate#dataset#data`` with its own labelled images, here 3D
    NIfTI volumes in raw intensities (~100): the datasets slice and normalise them as the bundle's own preparation
    does, so the 2D network trains on normalised (C, H, W) slices."""
    rng = np.random.default_rng(0)
    items = []
    for case in range(2):
        label = np.zeros((64, 64, 5), np.uint8)
        label[20:40, 20:40, 1:4] = 1
        volume = rng.normal(100.0, 20.0, label.shape).astype(np.float32) + 80.0 * label
        for name, array in (("image", volume), ("label", label)):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}_{case}.nii.gz")
        items.append({"image": str(tmp_path / f"image_{case}.nii.gz"), "label": str(tmp_path / f"label_{case}.nii.gz")})
    overrides = {**_overrides(tmp_path), "train#dataset#data": items, "validate#dataset#data": items[:1]}
    workflow = run_workflow(BUNDLE, ["train.json"], **overrides)
    dataset = workflow.parser.get_parsed_content("train#dataset")
    assert len(dataset) == 2 * 5  # every axial slice of both volumes
    sample = dataset[0]
    assert tuple(sample["image"].shape) == (1, 64, 64) and float(sample["image"].abs().max()) <= 1.0
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.parametrize("select_by_key_metric", [True, False])
def test_model_pt_without_validation(select_by_key_metric: bool, tmp_path: Path):
    """No validation runs (``val_interval`` past ``max_epochs``, as MONAI Label sets it with ``val_split`` 0): with
    ``select_by_key_metric`` true (default) or false, ``models/model.pt`` holds the network at the end of training
    (``common.handlers.FinalModelSaver``; issue 29: no validation, so no best model to keep)."""
    overrides = {**_overrides(tmp_path), "val_interval": 2, "select_by_key_metric": select_by_key_metric}
    workflow = run_workflow(BUNDLE, ["train.json"], **overrides)
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "model.pt"]
    saved = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    network = workflow.parser.get_parsed_content("network").state_dict()
    assert saved.keys() == network.keys() and all(torch.equal(saved[k], network[k]) for k in network)


def test_resume_continues_from_checkpoint(trained: Path):
    """A second run with max_epochs 2 starts at epoch 2, not 1."""
    workflow = run_workflow(BUNDLE, ["train.json"], **{**_overrides(trained), "max_epochs": 2})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * len(trainer.data_loader)
    assert (trained / "models" / "checkpoint_epoch=2.pt").is_file()
    assert not (trained / "models" / "checkpoint_epoch=1.pt").exists()


def test_evaluate_writes_report_and_panel(trained: Path):
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], **_overrides(trained))
    report = json.loads((trained / "outputs" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert_report_consistent(report)
    assert (trained / "outputs" / "eval" / "metrics.md").read_text(encoding="utf-8").count("|") > 4
    assert_panel(trained / "outputs" / "eval" / "panel.png", "icc")  # image | label | prediction


def test_inference_on_3d_volume_and_2d_image(trained: Path, tmp_path: Path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    nib.save(nib.Nifti1Image(rng.random((40, 48, 5)).astype(np.float32), affine), inputs / "vol.nii.gz")
    Image.fromarray((rng.random((50, 70)) * 255).astype(np.uint8)).save(inputs / "img.png")
    out = tmp_path / "pred"
    run_workflow(
        BUNDLE,
        ["inference.json"],
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_dir=str(trained / "models"),
        patch_size=[64, 64],
    )
    volume = nib.load(out / "vol_seg.nii.gz")
    assert volume.shape[:3] == (40, 48, 5)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert set(np.unique(np.asarray(volume.dataobj))) <= {0, 1}
    image = nib.load(out / "img_seg.nii.gz")
    assert np.squeeze(np.asarray(image.dataobj)).shape == (70, 50)  # MONAI's PIL reader indexes PNGs as (W, H)


def test_cli_run_training(tmp_path: Path):
    """The documented command line works (one epoch on tiny data)."""
    overrides = _overrides(tmp_path)
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_path(BUNDLE, "train.json")]
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
