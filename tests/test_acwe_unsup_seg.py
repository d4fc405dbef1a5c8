"""Smoke runs of the acwe_unsup_seg bundle on tiny demo data: the four modes, evaluation, inference, export."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import (
    REPO,
    assert_epoch_checkpoint,
    assert_panel,
    assert_report_consistent,
    assert_trained_weights,
    config_path,
    make_workflow,
    missing_properties,
    run_tracked,
    run_workflow,
    same_state,
)
from monai.bundle import ConfigWorkflow, ckpt_export
from PIL import Image

from common.metrics import read_metrics

BUNDLE = "acwe_unsup_seg"
TINY_DEMO = {"num_cases": 4, "image_size": 32, "depth": 8}
SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"


def _overrides(tmp: Path, mode: str = "mode1") -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models" / mode),
        "demo_kwargs": TINY_DEMO,
        "max_epochs": 1,
        "val_interval": 1,
        "batch_size": 8,
    }


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> tuple[Path, dict[str, tuple[ConfigWorkflow, dict[str, torch.Tensor]]]]:
    """Mode 1, then modes 2 (fine-tuned from mode 1) and 4, one epoch each: the folder, and per mode the finished
    workflow and its network's weights before training."""
    tmp = tmp_path_factory.mktemp("acwe")
    runs = {"mode1": run_tracked(BUNDLE, ["train.json"], **_overrides(tmp))}
    assert all("label" not in item for item in runs["mode1"][0].parser.get_parsed_content("train_data"))
    pretrained = str(tmp / "models" / "mode1" / "model.pt")
    configs = ["train.json", "mode2_finetune.json"]
    runs["mode2"] = run_tracked(BUNDLE, configs, pretrained_ckpt=pretrained, **_overrides(tmp, "mode2"))
    runs["mode4"] = run_tracked(BUNDLE, ["train.json", "mode4_joint.json"], **_overrides(tmp, "mode4"))
    return tmp, runs


@pytest.fixture(scope="module")
def trained(training) -> Path:
    return training[0]


def test_metadata_validates():
    metadata = json.loads(Path(config_path(BUNDLE, "metadata.json")).read_text(encoding="utf-8"))
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))


def test_properties_complete(tmp_path: Path):
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_mode_data_and_losses(tmp_path: Path):
    """Mode 3 takes a seeded sample of N labelled slices; the loss weights follow the mode."""
    overrides = _overrides(tmp_path, "mode3")
    picks = []
    for seed in (0, 0, 1):
        workflow = make_workflow(BUNDLE, ["train.json", "mode3_finetune.json"], num_labelled=5, seed=seed, **overrides)
        picks.append([item["image"] for item in workflow.parser.get_parsed_content("train_data")])
        assert len(picks[-1]) == 5 and all("label" in item for item in workflow.parser.get_parsed_content("train_data"))
    assert picks[0] == picks[1] and picks[0] != picks[2]
    loss = workflow.parser.get_parsed_content("loss")
    assert (loss.acwe_weight, loss.label_weight) == (0.0, 1.0)
    loss = make_workflow(BUNDLE, ["train.json", "mode4_joint.json"], **overrides).parser.get_parsed_content("loss")
    assert (loss.acwe_weight, loss.label_weight, loss.acwe.nu, loss.label_loss.length_weight) == (1.0, 0.4, 0.004, 1.0)


def test_training_writes_the_trained_models_and_checkpoints(training):
    """Each mode's model.pt is its trained network (not the weights it started from), mode 2 starts from mode 1's
    model.pt, and each epoch checkpoint records the one planned epoch (a pass over its loader) and the final network."""
    tmp, runs = training
    mode1_model = torch.load(tmp / "models" / "mode1" / "model.pt", map_location="cpu", weights_only=True)
    assert same_state(runs["mode2"][1], mode1_model)  # fine-tuning starts from mode 1's model
    for mode, (workflow, initial) in runs.items():
        network = workflow.parser.get_parsed_content("network")
        assert_trained_weights(tmp / "models" / mode / "model.pt", network, initial)
        batches = len(workflow.parser.get_parsed_content("train#dataloader"))  # one epoch: a pass over the loader
        assert_epoch_checkpoint(tmp / "models" / mode, 1, batches, {"network": network})


def test_evaluate_writes_report_and_panel(trained: Path):
    run_workflow(BUNDLE, ["train.json", "mode4_joint.json", "evaluate.json"], **_overrides(trained, "mode4"))
    eval_dir = trained / "outputs" / "eval" / "mode4"
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    assert_report_consistent(report)
    assert_panel(eval_dir / "panel.png", "icc")  # image | label | prediction


def test_inference_on_3d_volume_and_2d_image(trained: Path, tmp_path: Path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    nib.save(nib.Nifti1Image((rng.random((40, 48, 5)) * 100).astype(np.float32), affine), inputs / "vol.nii.gz")
    Image.fromarray((rng.random((50, 70)) * 255).astype(np.uint8)).save(inputs / "img.png")
    out = tmp_path / "pred"
    ckpt_dir = str(trained / "models" / "mode1")
    run_workflow(BUNDLE, ["inference.json"], "infer", dataset_dir=str(inputs), output_dir=str(out), ckpt_dir=ckpt_dir)
    volume = nib.load(out / "vol_seg.nii.gz")
    assert volume.shape[:3] == (40, 48, 5)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert set(np.unique(np.asarray(volume.dataobj))) <= {0, 1}
    image = nib.load(out / "img_seg.nii.gz")
    assert np.squeeze(np.asarray(image.dataobj)).shape == (70, 50)


def test_torchscript_export(trained: Path, tmp_path: Path):
    """``monai.bundle ckpt_export`` (called in-process) scripts the network; the export matches eager output."""
    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(trained / "models" / "mode1" / "model.pt"),
        meta_file=config_path(BUNDLE, "metadata.json"),
        config_file=config_path(BUNDLE, "inference.json"),
        bundle_root=str(REPO / "bundles" / BUNDLE),
    )
    scripted = torch.jit.load(str(ts_path)).eval()
    workflow = make_workflow(BUNDLE, ["inference.json"], "infer")
    network = workflow.parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(trained / "models" / "mode1" / "model.pt", weights_only=True))
    x = torch.rand(2, 1, 32, 48)
    torch.testing.assert_close(scripted(x), network.eval()(x))


def test_mode1_finds_the_cells_with_no_label(tmp_path: Path):
    """Mode 1 on the ``cells`` demo with the default schedule, seed 0: the untrained network falls into the dark
    phase, the phase rule complements it after epoch 1, and the test Dice is >= 0.75 (without the rule: 0.003; 3
    seeds in the docs). No label is read until the evaluation."""
    torch.set_num_threads(1)
    common = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"), "demo_task": "cells"}
    workflow = run_workflow(BUNDLE, ["train.json"], **common)
    assert all("label" not in item for item in workflow.parser.get_parsed_content("train_data"))
    assert all("label" not in item for item in workflow.parser.get_parsed_content("val_data"))
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert float(state["phase_decided"]) == 1 and float(state["phase_sign"]) == -1
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "eval", eval_dir=str(tmp_path / "eval"), **common)
    assert read_metrics(tmp_path / "eval" / "metrics.json").mean("dice") >= 0.75


def test_mode4_trains_on_unlabelled_images_too(tmp_path: Path):
    """Mode 4 takes every training image; the unlabelled ones get placeholder labels (ACWE term only)."""
    overrides = {**_overrides(tmp_path, "mode4"), "labelled_fraction": 0.5}
    workflow, initial = run_tracked(BUNDLE, ["train.json", "mode4_joint.json"], **overrides)
    items = workflow.parser.get_parsed_content("train_data")
    assert any("label" in item for item in items) and any("label" not in item for item in items)
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    assert batch["label"].shape == batch["image"].shape
    network = workflow.parser.get_parsed_content("network")
    assert_trained_weights(tmp_path / "models" / "mode4" / "model.pt", network, initial)
