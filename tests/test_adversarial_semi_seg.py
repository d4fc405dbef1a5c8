"""adversarial_semi_seg: discriminator shapes, pseudo-labels of a fixed discriminator, bundle smoke runs and resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bundle_utils import (
    assert_panel,
    assert_report_consistent,
    config_path,
    make_workflow,
    missing_properties,
    run_workflow,
)
from ignite.engine import Events
from monai.handlers import StatsHandler
from torch import nn

from common.data.folds import cross_validation_datalists
from common.engines.adversarial_semi import AdversarialSemiTrainer, confident_pseudo_labels
from common.engines.utils import ScalarTerms, endless
from common.networks.fc_discriminator import FCDiscriminator

BUNDLE = "adversarial_semi_seg"
SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"


def _overrides(tmp: Path) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
        "max_epochs": 2,
        "semi_start_epoch": 0,
        "val_interval": 2,
        "patch_size": [32, 32],
        "batch_size": 4,
        "unlabeled_batch_size": 4,
        "network_def#channels": [8, 16, 32],
        "network_def#strides": [2, 2],
        "discriminator_channels": [8, 16, 32, 64],
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two semi-supervised epochs (the pseudo-label phase from the start) with every iteration's output kept."""
    tmp = tmp_path_factory.mktemp("adversarial")
    workflow = make_workflow(BUNDLE, ["train.json"], **_overrides(tmp))
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    outputs: list[dict] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: outputs.append(ScalarTerms(["coverage"])(e.state.output))
    )
    workflow.run()
    workflow.finalize()
    return tmp, outputs


def test_discriminator_shapes():
    """Paper default: 6 stride-2 layers; logits upsampled to the input size; too small inputs are refused."""
    d = FCDiscriminator(in_channels=3)
    assert sum(isinstance(m, nn.Conv2d) for m in d.modules()) == 6
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d)) for m in d.modules())
    x = torch.softmax(torch.randn(2, 3, 64, 96), dim=1)
    assert d(x).shape == (2, 1, 64, 96)
    assert FCDiscriminator(3, upsample=False)(x).shape == (2, 1, 1, 1)
    assert FCDiscriminator(3, channels=(8, 16))(x[..., :40, :40]).shape == (2, 1, 40, 40)
    with pytest.raises(ValueError, match="at least 64"):
        d(x[..., :32, :32])


def test_confident_pseudo_labels():
    probs = torch.softmax(torch.randn(2, 3, 4, 4), dim=1)
    confidence = torch.rand(2, 1, 4, 4)
    labels, mask = confident_pseudo_labels(probs, confidence, 0.4, ignore_index=255)
    assert torch.equal(mask, confidence[:, 0] > 0.4)
    assert torch.equal(labels[mask], probs.argmax(1)[mask])
    assert (labels[~mask] == 255).all()


class _FixedDiscriminator(nn.Module):
    """Confident (logit +4) on the left half of every image, unconfident (-4) on the right half."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full_like(x[:, :1], -4.0)
        logits[..., : x.shape[-1] // 2] = 4.0
        return logits + 0 * self.unused


def test_semi_phase_uses_only_confident_pixels():
    """With a fixed D the pseudo-label loss equals the CE on the confident half only, and coverage is 0.5."""
    torch.manual_seed(0)
    segmenter = nn.Conv2d(1, 3, 3, padding=1)
    before = copy.deepcopy(segmenter)
    discriminator = _FixedDiscriminator()
    labelled = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))}]
    unlabelled = [{"image": torch.randn(2, 1, 8, 8)}]
    trainer = AdversarialSemiTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=labelled,
        network=segmenter,
        optimizer=torch.optim.SGD(segmenter.parameters(), lr=0.1),
        num_classes=3,
        d_network=discriminator,
        d_optimizer=torch.optim.SGD(discriminator.parameters(), lr=0.1),
        unlabeled_data_loader=unlabelled,
        semi_threshold=0.2,
        semi_start_epoch=0,
    )
    trainer.run()
    out = trainer.state.output
    assert out["coverage"] == pytest.approx(0.5)
    logits = before(unlabelled[0]["image"])
    target = logits.argmax(1)
    target[..., 4:] = 255
    assert out["loss_semi"].item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-5)
    assert out["confidence"].shape == (2, 1, 8, 8)


@pytest.mark.parametrize("amp", [False, True])
def test_warm_up_has_no_pseudo_labels(amp: bool):
    """Before semi_start_epoch the pseudo-label loss is off and coverage is 0 (also under autocast)."""
    net = nn.Conv2d(1, 3, 1)
    disc = FCDiscriminator(3, channels=(4,))
    trainer = AdversarialSemiTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))}],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        num_classes=3,
        d_network=disc,
        d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.1),
        unlabeled_data_loader=[{"image": torch.randn(2, 1, 8, 8)}],
        semi_start_epoch=1,
        amp=amp,
    )
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"])
    assert trainer.state.output["coverage"] == 0.0 and trainer.state.output["loss_semi"].item() == 0.0
    assert trainer.state.output["loss_semi_adv"].item() > 0.0


def test_metadata_and_properties(tmp_path: Path):
    """metadata.json validates against MONAI's schema; train and infer properties are complete."""
    metadata = json.loads(Path(config_path(BUNDLE, "metadata.json")).read_text(encoding="utf-8"))
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_semi_training_uses_unlabelled_data(trained: tuple[Path, list[dict]]):
    tmp, outputs = trained
    assert (tmp / "models" / "model.pt").is_file()
    assert (tmp / "models" / "checkpoint_epoch=2.pt").is_file()
    assert outputs and all(0.0 < o["coverage"] <= 1.0 for o in outputs)
    datalist = json.loads(next((tmp / "outputs" / "prepared").glob("*/datalist.json")).read_text(encoding="utf-8"))
    assert datalist["unlabeled"] and all("label" not in item for item in datalist["unlabeled"])


def test_resume_and_coverage_logged(trained: tuple[Path, list[dict]]):
    """A rerun with max_epochs 3 trains epoch 3 only (a fresh run would train 1-3 and end at epoch 3 too); StatsHandler
    and TensorBoard log the coverage. That the resumed run equals an uninterrupted one, weight for weight, is
    ``test_resume_exact.py``'s."""
    tmp, _ = trained
    workflow = make_workflow(BUNDLE, ["train.json"], **{**_overrides(tmp), "max_epochs": 3, "val_interval": 5})
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trained_epochs: list[int] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: trained_epochs.append(e.state.epoch))
    workflow.run()
    workflow.finalize()
    assert trained_epochs == [3]
    assert trainer.state.epoch == 3 and trainer.state.iteration == 3 * len(trainer.data_loader)
    assert (tmp / "models" / "checkpoint_epoch=3.pt").is_file()
    assert not (tmp / "models" / "checkpoint_epoch=2.pt").exists()
    stats = [h for h in workflow.parser.get_parsed_content("train#handlers") if isinstance(h, StatsHandler)]
    assert trainer.has_event_handler(stats[0].iteration_completed, Events.ITERATION_COMPLETED)
    logged = stats[0].output_transform(trainer.state.output)
    assert 0.0 < logged["coverage"] <= 1.0 and "loss_semi" in logged and "loss_d" in logged


def test_evaluate_reports_per_class(trained: tuple[Path, list[dict]]):
    tmp, _ = trained
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], **_overrides(tmp))
    report = json.loads((tmp / "outputs" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    for metric in ("iou", "dice", "specificity", "precision"):
        assert set(report["summary"][metric]) == {"aorta", "pulmonary artery", "mean"}
    assert_report_consistent(report)
    assert_panel(tmp / "outputs" / "eval" / "panel.png", "icc")  # image | label | prediction


@pytest.mark.parametrize("variant", ["supervised_only.json", "full_adversarial.json", "attention_unet.json"])
def test_variants_train(variant: str, tmp_path: Path):
    overrides = {**_overrides(tmp_path), "max_epochs": 1, "val_interval": 1}
    if variant == "attention_unet.json":
        overrides.update({"network_def#channels": [8, 16, 32], "network_def#strides": [2, 2]})
    workflow = run_workflow(BUNDLE, ["train.json", variant], **overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert (trainer.d_network is None) == (variant == "supervised_only.json")
    assert trainer.unlabeled_data_loader is None or variant == "attention_unet.json"
    assert (tmp_path / "models" / "model.pt").is_file()


def test_inference_writes_masks(trained: tuple[Path, list[dict]], tmp_path: Path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).normal(size=(32, 32, 3)).astype(np.float32), np.eye(4)),
        inputs / "vol.nii.gz",
    )
    tmp, _ = trained
    overrides = {
        "dataset_dir": str(inputs),
        "output_dir": str(tmp_path / "pred"),
        "ckpt_dir": str(tmp / "models"),
        "patch_size": [32, 32],
        "network_def#channels": [8, 16, 32],
        "network_def#strides": [2, 2],
    }
    run_workflow(BUNDLE, ["inference.json"], "infer", **overrides)
    mask = np.asarray(nib.load(tmp_path / "pred" / "vol_seg.nii.gz").dataobj)
    assert mask.shape[:3] == (32, 32, 3) and set(np.unique(mask)) <= {0, 1, 2}


def test_five_fold_datalists(tmp_path: Path):
    """Tan et al.'s protocol: per round 1 test fold, 2 labelled, 2 unlabelled (labels removed), split by volume."""
    items = [{"image": f"/data/v{i}.nii.gz", "label": f"/data/l{i}.nii.gz"} for i in range(10)]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    rounds = cross_validation_datalists(tmp_path / "dataset.json", tmp_path / "folds", seed=1)
    assert len(rounds) == 5
    tests = []
    for paths in rounds:
        semi = json.loads(paths["semi"].read_text(encoding="utf-8"))
        full = json.loads(paths["full"].read_text(encoding="utf-8"))
        sets = [{i["image"] for i in semi[key]} for key in ("test", "training", "unlabeled")]
        assert [len(s) for s in sets] == [2, 4, 4] and len(set.union(*sets)) == 10
        assert all("label" not in i for i in semi["unlabeled"])
        assert {i["image"] for i in full["training"]} == sets[1] | sets[2]
        tests += sets[0]
    assert len(set(tests)) == 10


def test_endless_reiterates_and_rejects_an_empty_loader():
    batches = endless([1, 2], "unlabelled")
    assert [next(batches) for _ in range(5)] == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="unlabelled data loader is empty"):
        next(endless([], "unlabelled"))
