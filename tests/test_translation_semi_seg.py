"""Smoke runs of the translation_semi_seg bundle on a tiny cluttered MNIST: every training config, evaluation with
the translation panel, PNG inference and the workflow properties."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import (
    assert_epoch_checkpoint,
    assert_panel,
    assert_report_consistent,
    assert_trained_weights,
    missing_properties,
    network_state,
    run_tracked,
    run_workflow,
    same_state,
)
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image
from test_cluttered_mnist import write_small_mnist

BUNDLE = "translation_semi_seg"
CONFIGS = Path(__file__).resolve().parent.parent / "bundles" / BUNDLE / "configs"
# variant -> the trainer its train#trainer builds (and its directions, for the proposed model's)
TRAINERS = {
    "seg_only.json": ("SegmentationOnlyTrainer", None),
    "ae_baseline.json": ("AutoencoderTrainer", None),
    "mean_teacher.json": ("MeanTeacherTrainer", None),
    "sep_dec.json": ("TranslationModelTrainer", "both"),
    "p_to_a_only.json": ("TranslationModelTrainer", "p_to_a"),
    "no_translation.json": ("TranslationModelTrainer", "none"),
    "segmentation_path_only.json": ("SegmentationOnlyTrainer", None),
}
VARIANTS = list(TRAINERS)
# variant -> the inference configs (after inference.json) and overrides that load its model.pt (bundle docs)
INFERENCE = {
    "seg_only.json": (["inference_baseline.json"], {}),
    "ae_baseline.json": (["inference_baseline.json"], {"reconstruction_decoder": True}),
    "mean_teacher.json": (["inference_baseline.json"], {}),
    "sep_dec.json": (["sep_dec.json"], {}),
    "p_to_a_only.json": ([], {}),
    "no_translation.json": ([], {}),
    "segmentation_path_only.json": ([], {}),
}


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"), num_train=200, num_test=20)


# a run of two iterations on 40 P + 40 A images (also test_distributed's)
SMALL_RUN = {
    "num_train": 40,
    "num_val": 6,
    "num_test": 8,
    "labelled_fraction": 0.1,
    "network_width": 0.125,
    "batch_size": 4,
    "absent_batch_size": 4,
    "max_epochs": 1,
    "epoch_length": 2,
}


def _overrides(tmp: Path, mnist_dir: Path) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "mnist_source": str(mnist_dir),
        **SMALL_RUN,
    }


@pytest.fixture(scope="module")
def training(tmp_path_factory, mnist_dir: Path) -> tuple[Path, ConfigWorkflow, dict[str, torch.Tensor]]:
    """The small run: its folder, its workflow (finished) and its network's initial weights."""
    tmp = tmp_path_factory.mktemp("translation")
    workflow, initial = run_tracked(BUNDLE, ["train.json"], **_overrides(tmp, mnist_dir))
    return tmp, workflow, initial


@pytest.fixture(scope="module")
def trained(training) -> Path:
    return training[0]


def test_properties_complete(tmp_path: Path, mnist_dir: Path):
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path, mnist_dir)) == []
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "img.png")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path), network_width=0.125) == []


def test_training_writes_the_trained_model_and_checkpoint(training):
    """model.pt is the trained network (not its initialisation); the epoch checkpoint records the planned schedule
    (1 epoch of ``epoch_length`` 2) and holds the final networks."""
    tmp, workflow, initial = training
    network = workflow.parser.get_parsed_content("network")
    assert_trained_weights(tmp / "models" / "model.pt", network, initial)
    discriminators = {k: workflow.parser.get_parsed_content(k) for k in ("discriminator_a", "discriminator_p")}
    assert_epoch_checkpoint(tmp / "models", 1, SMALL_RUN["epoch_length"], {"network": network, **discriminators})


def test_evaluate_reports_soft_dice_and_writes_translation_panel(trained: Path, mnist_dir: Path):
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], **_overrides(trained, mnist_dir))
    report = json.loads((trained / "outputs" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert report["num_images"] == 8
    assert 0.0 <= report["soft_dice_accumulated"]["digit"] <= 1.0
    assert_report_consistent(report)
    # input | healthy (translated) | residual | segmentation | truth
    assert_panel(trained / "outputs" / "eval" / "panel.png", "iiicc")


def test_inference_png(trained: Path, tmp_path: Path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(inputs / "digit.png")
    out = tmp_path / "pred"
    run_workflow(
        BUNDLE,
        ["inference.json"],
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_dir=str(trained / "models"),
        network_width=0.125,
    )
    mask = np.squeeze(np.asarray(nib.load(out / "digit_seg.nii.gz").dataobj))
    assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains(variant: str, tmp_path: Path, mnist_dir: Path):
    overrides = {**_overrides(tmp_path, mnist_dir), "epoch_length": 1}
    workflow, initial = run_tracked(BUNDLE, ["train.json", variant], **overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and np.isfinite(float(trainer.state.output["loss"]))
    name, directions = TRAINERS[variant]
    assert type(trainer).__name__ == name and getattr(trainer, "directions", None) == directions
    trained = workflow.parser.get_parsed_content("network")
    assert_trained_weights(tmp_path / "models" / "model.pt", trained, initial)  # the one step changed it
    # its model.pt loads into the inference network the docs give for it (strict: every key, every shape)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(inputs / "digit.png")
    configs, overrides = INFERENCE[variant]
    inference = run_workflow(
        BUNDLE,
        ["inference.json", *configs],
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(tmp_path / "pred"),
        ckpt_dir=str(tmp_path / "models"),
        network_width=SMALL_RUN["network_width"],
        **overrides,
    )
    assert same_state(network_state(inference.parser.get_parsed_content("network")), network_state(trained))
    mask = np.squeeze(np.asarray(nib.load(tmp_path / "pred" / "digit_seg.nii.gz").dataobj))
    assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1}


@pytest.mark.parametrize(
    "variant, weights",
    [
        ("seg_only.json", {"seg_weight": 1.0}),
        ("ae_baseline.json", {"seg_weight": 1.0, "rec_weight": 1.0}),
        ("mean_teacher.json", {"seg_weight": 1.0, "consistency_weight": 0.01}),
        (
            None,
            {"adv_weight": 3.0, "rec_weight": 50.0, "cyc_weight": 50.0, "lat_weight": 1.0, "seg_weight": 0.01}
            | {"weight_sum": None},  # as given (the authors' code); 1.0 normalises them as paper Sec. 4 states
        ),
    ],
)
def test_loss_weights_are_the_authors_per_method(variant: str | None, weights: dict[str, float]):
    """The baselines use the authors' own weights (genseg ae_006_seg.py, ae_006.py, mean_teacher_006.py: segmentation
    1, reconstruction 1), not the proposed model's (bds3_003.py: 3, 50, 50, 1, 0.01)."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")] + ([str(CONFIGS / variant)] if variant else []))
    assert {key: parser[key] for key in weights} == weights
