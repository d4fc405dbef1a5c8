"""unimatch_semi_seg (UniMatch, Yang et al., CVPR 2023): losses on known batches, CutMix boxes, the feature
perturbation stream, a small task it learns, the bundle's configs and variants, inference, MONAI Label and torchrun."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import (
    assert_epoch_checkpoint,
    assert_panel,
    config_path,
    make_workflow,
    missing_properties,
    network_state,
    run_workflow,
    same_state,
)
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import StatsHandler
from monai.transforms import Compose, CopyItemsd, EnsureTyped
from monai.utils import set_determinism
from PIL import Image
from torch import nn

from common.engines.unimatch import UniMatchTrainer, cutmix_partners
from common.losses.unimatch import ConfidentDiceLoss, confident_pseudo_labels, supervised_loss, unimatch_loss
from common.networks.feature_perturbation import FeaturePerturbationUNet
from common.transforms import RandCutMixBoxd, cutmix, strong_augmentation, weak_augmentation

BUNDLE = "unimatch_semi_seg"
SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"
TERMS = ("loss", "loss_sup", "loss_strong", "loss_fp", "coverage")
SMALL_NET = [8, 16, 16, 32, 32, 8]


def _overrides(tmp: Path) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
        "labelled_fraction": 0.5,
        "max_epochs": 2,
        "val_interval": 2,
        "patch_size": [32, 32],
        "batch_size": 4,
        "unlabeled_batch_size": 4,
        "semi_threshold": 0.0,  # every pixel confident: the unlabelled terms are in the loss from the first step
        "network_def#features": SMALL_NET,
    }


def _record(trainer, outputs: list[dict]) -> None:
    keys = TERMS + ("loss_strong1", "loss_strong2")
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: outputs.append({k: float(e.state.output[k]) for k in keys if k in e.state.output}),
    )


def _train(tmp: Path, variant: list[str], **extra) -> tuple[list[dict], UniMatchTrainer]:
    workflow = make_workflow(BUNDLE, ["train.json", *variant], **{**_overrides(tmp), **extra})
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    outputs: list[dict] = []
    _record(trainer, outputs)
    workflow.run()
    workflow.finalize()
    return outputs, trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two UniMatch epochs on the tiny demo, every iteration's terms kept."""
    tmp = tmp_path_factory.mktemp("unimatch")
    outputs, _ = _train(tmp, [])
    return tmp, outputs


# ---------------------------------------------------------------- losses on known batches


def test_confident_dice_on_a_known_batch():
    """Two classes, two pixels: pixel A (p = 0.75 / 0.25, pseudo-label 0, confidence 0.95: kept, the threshold is
    inclusive), pixel B (p = 0.5 / 0.5, pseudo-label 1, confidence 0.9: ignored). Only A enters the batch Dice."""
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    pseudo = torch.tensor([[[0, 1]]])
    confidence = torch.tensor([[[0.95, 0.9]]])
    s = 1e-5
    # class 0: intersection 0.75, sum p^2 = 0.5625, sum y^2 = 1; class 1: intersection 0, sum p^2 = 0.0625, sum y^2 = 0
    expected = ((1 - (1.5 + s) / (1.5625 + s)) + (1 - s / (0.0625 + s))) / 2
    loss = ConfidentDiceLoss(num_classes=2, threshold=0.95)(logits, pseudo, confidence)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # both pixels kept (threshold 0.9): class 0: I = 0.75 + 0 (B's target is 1), p^2 = 0.5625 + 0.25, y = 1;
    # class 1: I = 0.5, p^2 = 0.0625 + 0.25, y = 1
    both = ((1 - (1.5 + s) / (1.8125 + s)) + (1 - (1.0 + s) / (1.3125 + s))) / 2
    assert ConfidentDiceLoss(2, threshold=0.9)(logits, pseudo, confidence).item() == pytest.approx(both, rel=1e-5)
    # no confident pixel: every pixel ignored, the loss is exactly 0
    assert ConfidentDiceLoss(2, threshold=0.99)(logits, pseudo, confidence).item() == 0.0


def test_supervised_loss_is_half_ce_plus_dice():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    labels = torch.tensor([[[[0, 1]]]])
    ce = (-math.log(0.75) - math.log(0.5)) / 2
    s = 1e-5
    dice = ((1 - (1.5 + s) / (1.8125 + s)) + (1 - (1.0 + s) / (1.3125 + s))) / 2
    assert supervised_loss()(logits, labels).item() == pytest.approx((ce + dice) / 2, rel=1e-5)


def test_total_loss_weights():
    """The authors' (L_s + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2; FixMatch (L_s + L_s1) / 2; labels only L_s."""
    sup, s1, s2, fp = (torch.tensor(v) for v in (1.0, 2.0, 4.0, 8.0))
    assert unimatch_loss(sup, [s1, s2], fp).item() == pytest.approx((1 + 0.5 + 1 + 4) / 2)
    assert unimatch_loss(sup, [s1], None, strong_weight=1.0).item() == pytest.approx(1.5)
    assert unimatch_loss(sup).item() == 1.0


def test_pseudo_labels_are_argmax_and_max_probability():
    logits = torch.randn(2, 3, 4, 4)
    labels, confidence = confident_pseudo_labels(logits)
    probs = torch.softmax(logits, 1)
    assert torch.equal(labels, probs.argmax(1)) and torch.allclose(confidence, probs.max(1).values)


class _Toy(nn.Module):
    """1 x 1 convolution; its "perturbed" stream is the convolution of x / 2 (no randomness, no batch norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[2.0]]], [[[-2.0]]]]))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, perturb: bool = False):
        return torch.cat([self.conv(x), self.conv(x / 2)]) if perturb else self.conv(x)


def test_one_step_on_a_known_batch():
    """The trainer's loss equals the terms computed by hand: pseudo-labels and confidences of the weak views (the
    threshold decides which pixels count), each strong view pasted with its partner's box in the image and in the
    target, and the weights (L_s + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2."""
    torch.manual_seed(0)
    net = _Toy()
    x, y = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    weak = torch.randn(3, 1, 4, 4)
    strong = [torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)]
    boxes = [torch.zeros(3, 1, 4, 4, dtype=torch.bool) for _ in range(2)]
    boxes[0][0, :, 1:3, 1:4] = True
    boxes[1][2, :, 0:2, 0:2] = True
    unlabelled = {"image": weak, "image_strong1": strong[0], "image_strong2": strong[1]}
    unlabelled.update({"cutmix_box1": boxes[0], "cutmix_box2": boxes[1]})
    trainer = UniMatchTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": x, "label": y}],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
        num_classes=2,
        unlabeled_data_loader=[unlabelled],
        semi_threshold=0.9,
    )
    trainer.run()
    out = trainer.state.output

    dice = ConfidentDiceLoss(2, threshold=0.9)
    with torch.no_grad():
        pseudo, conf = confident_pseudo_labels(net(weak))
        partner = torch.tensor([1, 2, 0])
        losses = []
        for s, box in zip(strong, boxes):
            image = torch.where(box, s[partner], s)
            target = torch.where(box[:, 0], pseudo[partner], pseudo)
            target_conf = torch.where(box[:, 0], conf[partner], conf)
            losses.append(dice(net(image), target, target_conf))
        loss_fp = dice(net(weak / 2), pseudo, conf)
        sup = supervised_loss()(net(x), y)
    expected = (sup + 0.25 * losses[0] + 0.25 * losses[1] + 0.5 * loss_fp) / 2
    assert out["loss_strong1"].item() == pytest.approx(losses[0].item(), rel=1e-5)
    assert out["loss_strong2"].item() == pytest.approx(losses[1].item(), rel=1e-5)
    assert out["loss_fp"].item() == pytest.approx(loss_fp.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["coverage"] == pytest.approx(float((conf >= 0.9).float().mean()))
    assert 0.0 < out["coverage"] < 1.0  # the threshold splits this batch


# ---------------------------------------------------------------- CutMix


def test_cutmix_boxes_agree_in_image_and_target():
    """The box pasted into the strong view is the box whose target takes the partner's pseudo-label and confidence."""
    set_determinism(0)
    boxes = RandCutMixBoxd(["box1", "box2"], prob=1.0)
    boxes.set_random_state(0)
    batch = [boxes({"image": torch.zeros(1, 40, 48)}) for _ in range(4)]
    box = torch.stack([b["box1"] for b in batch])
    assert box.shape == (4, 1, 40, 48) and box.dtype == torch.bool
    assert not torch.equal(box, torch.stack([b["box2"] for b in batch]))  # one draw per view
    image, partner_image = torch.randn(4, 1, 40, 48), torch.randn(4, 1, 40, 48)
    label, partner_label = torch.randint(0, 3, (4, 40, 48)), torch.randint(3, 6, (4, 40, 48))
    conf, partner_conf = torch.rand(4, 40, 48), torch.rand(4, 40, 48) + 2
    mixed_image, mixed_label, mixed_conf = cutmix(
        box, (image, partner_image), (label, partner_label), (conf, partner_conf)
    )
    from_partner_image = mixed_image[:, 0] == partner_image[:, 0]
    assert torch.equal(from_partner_image, box[:, 0])
    assert torch.equal(mixed_label >= 3, box[:, 0]) and torch.equal(mixed_conf >= 2, box[:, 0])
    assert torch.equal(mixed_image[~box], image[~box]) and torch.equal(mixed_label[~box[:, 0]], label[~box[:, 0]])
    for item in box:  # one axis-aligned rectangle, 2-40 % of the image
        rows, cols = item[0].any(1).nonzero(), item[0].any(0).nonzero()
        area = item.sum().item()
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.02 * 40 * 48 * 0.8 <= area <= 0.4 * 40 * 48
    assert torch.equal(cutmix_partners(4), torch.tensor([1, 2, 3, 0]))


def test_cutmix_box_probability():
    boxes = RandCutMixBoxd("box", prob=0.5)
    boxes.set_random_state(1)
    drawn = [boxes({"image": torch.zeros(1, 32, 32)})["box"].any().item() for _ in range(400)]
    assert 0.4 < np.mean(drawn) < 0.6


# ---------------------------------------------------------------- feature perturbation


def test_feature_perturbation_is_active_in_training_only():
    torch.manual_seed(0)
    net = FeaturePerturbationUNet(in_channels=1, out_channels=3, features=SMALL_NET)
    x = torch.randn(2, 1, 32, 32)
    net.train()
    clean, perturbed = net(x, perturb=True).chunk(2)
    _, perturbed_again = net(x, perturb=True).chunk(2)
    assert clean.shape == perturbed.shape == (2, 3, 32, 32)
    assert not torch.allclose(perturbed, perturbed_again)  # a new channel dropout draw each call
    assert not torch.allclose(clean, perturbed)
    net.eval()
    with torch.no_grad():
        clean, perturbed = net(x, perturb=True).chunk(2)
        assert torch.allclose(clean, perturbed) and torch.allclose(perturbed, net(x, perturb=True)[2:])
        assert torch.allclose(net(x), clean, atol=1e-6)
    assert any(isinstance(m, nn.Dropout) for m in FeaturePerturbationUNet(dropout=0.2).modules())  # MC dropout


# ---------------------------------------------------------------- a small task


def _disk_task(n: int, seed: int) -> list[dict]:
    """Bright disks (random centre and radius) on noise, 32 x 32, background -1, disk +1; labels 0 / 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    items = []
    for _ in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(4, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32)
        image = np.clip(2 * mask - 1 + rng.normal(0, 0.3, mask.shape), -1, 1).astype(np.float32)
        items.append({"image": image[None], "label": mask[None].astype(np.int64)})
    return items


def _train_on_disks(strong_weight: float, feature_weight: float) -> tuple[float, list[dict]]:
    set_determinism(0)
    labelled = _disk_task(4, seed=1)
    unlabelled = [{"image": d["image"]} for d in _disk_task(48, seed=2)]
    test = _disk_task(16, seed=3)
    labelled_tf = Compose([EnsureTyped(["image", "label"]), weak_augmentation(["image", "label"])])
    unlabelled_tf = Compose(
        [
            EnsureTyped("image"),
            weak_augmentation("image"),
            CopyItemsd("image", times=2, names=["image_strong1", "image_strong2"]),
            strong_augmentation("image_strong1"),
            strong_augmentation("image_strong2"),
            RandCutMixBoxd(["cutmix_box1", "cutmix_box2"]),
        ]
    )
    net = FeaturePerturbationUNet(in_channels=1, out_channels=2, features=SMALL_NET)
    trainer = UniMatchTrainer(
        device="cpu",
        max_epochs=5,
        train_data_loader=DataLoader(Dataset(labelled, labelled_tf), batch_size=4, shuffle=True),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4),
        num_classes=2,
        unlabeled_data_loader=DataLoader(
            Dataset(unlabelled, unlabelled_tf), batch_size=8, shuffle=True, drop_last=True
        ),
        strong_weight=strong_weight,
        feature_weight=feature_weight,
    )
    outputs: list[dict] = []
    _record(trainer, outputs)
    trainer.run()
    net.eval()
    with torch.no_grad():
        pred = net(torch.stack([torch.as_tensor(d["image"]) for d in test])).argmax(1)
    truth = torch.stack([torch.as_tensor(d["label"][0]) for d in test])
    dice = 2 * (pred * truth).sum() / (pred.sum() + truth.sum())
    return float(dice), outputs


def test_learns_a_small_task_and_uses_the_unlabelled_images():
    """Four labelled 32 x 32 disk images and 48 unlabelled ones, 30 iterations (well under a minute on 2 cores): the
    test Dice is far above chance (an all-foreground guess scores about 0.2), the weak predictions become confident
    (coverage > 0 at 0.95) and the unlabelled Dice terms are in the loss; with the unlabelled weights 0 (the
    supervised control) the same schedule has both exactly 0. On this task the labels alone also pass the Dice
    threshold: what the unlabelled terms change is asserted, not that they are needed."""
    dice, outputs = _train_on_disks(0.5, 0.5)
    assert dice > 0.8, dice
    assert len(outputs) == 30
    assert max(o["coverage"] for o in outputs[-5:]) > 0.0
    assert any(o["loss_strong"] > 0 for o in outputs) and any(o["loss_fp"] > 0 for o in outputs)
    _, control = _train_on_disks(0.0, 0.0)
    assert len(control) == len(outputs)
    assert all(o["coverage"] == 0.0 and o["loss_strong"] == 0.0 and o["loss_fp"] == 0.0 for o in control)


# ---------------------------------------------------------------- the bundle


def test_metadata_and_properties(tmp_path: Path):
    """metadata.json validates against MONAI's schema; train and infer properties are complete."""
    metadata = json.loads(Path(config_path(BUNDLE, "metadata.json")).read_text(encoding="utf-8"))
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_paper_settings_are_the_defaults():
    train = json.loads(Path(config_path(BUNDLE, "train.json")).read_text(encoding="utf-8"))
    expected = {
        "batch_size": 12,
        "unlabeled_batch_size": 12,
        "learning_rate": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "lr_power": 0.9,
        "semi_threshold": 0.95,
        "strong_weight": 0.5,
        "feature_weight": 0.5,
        "num_strong_views": 2,
        "feature_dropout": 0.5,
        "max_epochs": 300,
        "paper_patch_size": [256, 256],
        "select_by_key_metric": False,
    }
    assert {k: train[k] for k in expected} == expected
    assert train["optimizer"]["_target_"] == "torch.optim.SGD"
    assert train["strong_augmentation"]["jitter_prob"] == 0.8 and train["strong_augmentation"]["cutmix_prob"] == 0.5


def test_training_uses_the_unlabelled_images(trained: tuple[Path, list[dict]]):
    tmp, outputs = trained
    assert_epoch_checkpoint(tmp / "models", 2, len(outputs))  # two epochs of every unlabelled batch
    datalist = json.loads(next((tmp / "outputs" / "prepared").glob("*/datalist.json")).read_text(encoding="utf-8"))
    assert datalist["unlabeled"] and all("label" not in item for item in datalist["unlabeled"])
    # an epoch is a pass over the unlabelled slices (full batches of 4)
    assert len(outputs) == 2 * (len(datalist["unlabeled"]) // 4)
    assert all(o["coverage"] == 1.0 and o["loss_strong"] > 0 and o["loss_fp"] > 0 for o in outputs)
    assert all(
        o["loss"] == pytest.approx((o["loss_sup"] + 0.5 * o["loss_strong"] + 0.5 * o["loss_fp"]) / 2, rel=1e-4)
        for o in outputs
    )


def test_resume_and_terms_logged(trained: tuple[Path, list[dict]]):
    """A rerun with max_epochs 3 continues at epoch 3; StatsHandler logs the terms and the coverage."""
    tmp, outputs = trained
    workflow = run_workflow(BUNDLE, ["train.json"], **{**_overrides(tmp), "max_epochs": 3, "val_interval": 5})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 3 and trainer.state.iteration == 3 * len(outputs) // 2
    assert trainer.data_loader is trainer.unlabeled_data_loader
    assert_epoch_checkpoint(tmp / "models", 3, trainer.state.iteration, {"network": trainer.network})
    stats = [h for h in workflow.parser.get_parsed_content("train#handlers") if isinstance(h, StatsHandler)]
    logged = stats[0].output_transform(trainer.state.output)
    assert set(TERMS) <= set(logged)


def test_evaluate_reports_per_class(trained: tuple[Path, list[dict]]):
    tmp, _ = trained
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], **_overrides(tmp))
    summary = json.loads((tmp / "outputs" / "eval" / "metrics.json").read_text(encoding="utf-8"))["summary"]
    assert set(summary["dice"]) == {"aorta", "pulmonary artery", "mean"}
    assert_panel(tmp / "outputs" / "eval" / "panel.png", "icc")


def test_supervised_only_is_the_same_schedule_without_the_unlabelled_terms(trained, tmp_path: Path):
    _, semi = trained
    outputs, trainer = _train(tmp_path, ["supervised_only.json"])
    assert len(outputs) == len(semi)  # the unlabelled loader still counts the iterations
    assert not trainer.uses_unlabeled
    assert all(o["coverage"] == 0.0 and o["loss_strong"] == 0.0 and o["loss_fp"] == 0.0 for o in outputs)
    assert all(o["loss"] == o["loss_sup"] for o in outputs)
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert same_state(saved, network_state(trainer.network))  # the last network (no validation ran)


def test_fixmatch_has_one_strong_view_and_no_feature_term(tmp_path: Path):
    outputs, _ = _train(tmp_path, ["fixmatch.json"], max_epochs=1, val_interval=1)
    assert outputs and all("loss_strong2" not in o and o["loss_fp"] == 0.0 and o["loss_strong"] > 0 for o in outputs)
    assert all(o["loss"] == pytest.approx((o["loss_sup"] + o["loss_strong"]) / 2, rel=1e-4) for o in outputs)


def test_inference_writes_masks_for_volumes_and_images(trained, tmp_path: Path):
    tmp, _ = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(40, 36, 3)).astype(np.float32), np.eye(4)), inputs / "vol.nii.gz")
    Image.fromarray(rng.integers(0, 255, (30, 44), dtype=np.uint8)).save(inputs / "slice.png")
    overrides = {
        "dataset_dir": str(inputs),
        "output_dir": str(tmp_path / "pred"),
        "ckpt_dir": str(tmp / "models"),
        "patch_size": [32, 32],
        "network_def#features": SMALL_NET,
    }
    run_workflow(BUNDLE, ["inference.json"], "infer", **overrides)
    volume = np.asarray(nib.load(tmp_path / "pred" / "vol_seg.nii.gz").dataobj)
    assert volume.shape[:3] == (40, 36, 3) and set(np.unique(volume)) <= {0, 1, 2}
    image = np.asarray(nib.load(tmp_path / "pred" / "slice_seg.nii.gz").dataobj)
    assert image.shape[:2] == (44, 30) and set(np.unique(image)) <= {0, 1, 2}  # MONAI reads a PNG as (W, H)


# ---------------------------------------------------------------- MONAI Label and torchrun

UNIMATCH_APP_OVERRIDES = {"val_interval": 1, "batch_size": 1, "unlabeled_batch_size": 2, "patch_size": [32, 32]}


@pytest.mark.slow
def test_monailabel_app_trains_and_serves_unimatch(tmp_path: Path):
    """The repository's MONAI Label app on a real server: one-epoch training over HTTP on 2 final labels (one held
    out for validation) and 3 unlabelled PNGs (which reach the loss: ``loss_strong`` and ``loss_fp`` are logged),
    then inference of one image with the new weights."""
    from common.monailabel_harness import (
        NUM_IMAGES,
        SERVER_PYTHON,
        SETUP_HINT,
        SIZE,
        AppServer,
        check_mask,
        free_port,
        prepare_app_root,
        server_env,
    )

    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}", pytrace=False)
    prepare_app_root(tmp_path, [BUNDLE])
    server = AppServer(tmp_path, free_port(), [BUNDLE], {})
    try:
        server.start(server_env(tmp_path))
        info = server.get("/info/")
        assert BUNDLE in info["models"] and BUNDLE in info["trainers"], server.log_tail()
        for image_id in ("img0", "img1"):
            server.upload_label(image_id, tmp_path / "masks" / f"{image_id}.png")
        models = tmp_path / "bundles" / BUNDLE / "models"
        before = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
        params = {"max_epochs": 1, "val_split": 0.5, "multi_gpu": False, "device": "cpu"}
        # semi_threshold 0: the untrained network's weak predictions all count, so the terms are > 0 in one epoch
        server.train(BUNDLE, {**params, "overrides": {**UNIMATCH_APP_OVERRIDES, "semi_threshold": 0.0}})
        log = server.log_text()
        assert f"1 labelled for training, 1 for validation, {NUM_IMAGES - 2} unlabelled images" in log, log[-4000:]
        for term in ("loss_strong", "loss_fp", "coverage"):
            values = [float(v) for v in re.findall(rf"{term}: ([0-9.eE+-]+)", log)]
            assert values and all(v > 0 for v in values), (term, log[-4000:])
        trained = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
        trained = trained.get("model", trained)
        assert any(not torch.equal(before[k], trained[k]) for k in before), "model.pt was not rewritten"
        out = tmp_path / "mask.png"
        out.write_bytes(server.infer(BUNDLE, "img3"))
        with Image.open(out) as mask:
            check_mask(BUNDLE, np.asarray(mask), SIZE, server)
    finally:
        server.stop()


TORCHRUN_OVERRIDES = {
    "demo_kwargs": {"num_cases": 8, "image_size": 32, "depth": 4},
    "labelled_fraction": 0.5,
    "val_fraction": 0.25,
    "test_fraction": 0.25,
    "epoch_length": 2,
    "patch_size": [32, 32],
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "semi_threshold": 0.0,
    "network_def#features": SMALL_NET,
    "max_epochs": 1,
    "val_interval": 1,
}


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path):
    """``train.json`` + ``multi_gpu_train.json`` on 2 gloo ranks for one epoch (DDP through the feature-perturbed
    forward and two more forwards per step): both finish, rank 0 writes the weights and the checkpoint, and each
    rank frees its process group (as ``tests/test_distributed.py`` checks for the other bundles)."""
    from common.bundle import torchrun

    overrides = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"), **TORCHRUN_OVERRIDES}
    result = torchrun(
        BUNDLE,
        ["train.json", "multi_gpu_train.json"],
        overrides,
        nproc=2,
        port=29611,
        timeout=600,
        log_dir=tmp_path / "torchrun_logs",
    )
    assert result.ok, result.report()
    for name in ("model.pt", "checkpoint_epoch=1.pt"):
        assert (tmp_path / "models" / name).is_file(), result.report()
    assert sorted(result.rank_logs) == [0, 1], result.report()
    for rank, log in result.rank_logs.items():
        assert "process group destroyed; its worker threads are joined" in log, f"rank {rank}\n{log[-3000:]}"
    assert re.search(r"loss_strong: [0-9.]*[1-9]", result.rank_logs[0]), result.rank_logs[0][-3000:]


def test_stopped_and_resumed_equals_uninterrupted(tmp_path: Path):
    """Resume is exact (``tests/test_resume_exact.py``'s check): a run stopped after epoch 1 and resumed to 3 ends
    bit-identical to an uninterrupted run of 3, with the unlabelled loader driving the epochs and the labelled one
    drawn from an endless pass (its place and the random states are in the checkpoint)."""
    from test_resume_exact import Case, assert_resume_exact

    # labelled batches of 3 of 8 slices: the labelled pass is mid-way at the stop (2 unlabelled batches per epoch)
    overrides = {"val_interval": 1, "batch_size": 3}
    case = Case(
        BUNDLE,
        ["train.json"],
        lambda tmp, _: {**_overrides(tmp), **overrides},
        ["network", "optimizer", "lr_scheduler"],
    )
    torch.set_num_threads(1)
    assert_resume_exact(case, tmp_path, tmp_path)
