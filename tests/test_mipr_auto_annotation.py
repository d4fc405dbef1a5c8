"""MIPR: ISIC datalist, pair files, one annotation round, and three loop rounds of the bundle on tiny demo data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_utils import (
    assert_epoch_checkpoint,
    assert_panel,
    assert_report_consistent,
    make_workflow,
    missing_properties,
    network_state,
    parameters_differ,
    run_workflow,
    same_state,
)
from monai.bundle import ConfigWorkflow
from monai.transforms import LoadImage
from PIL import Image
from torch import nn

from common.atomic_write import save_png_atomic
from common.data.isic import write_isic_datalist
from common.engines.mipr_annotation import annotate_round, new_layout, reconstruction_threshold, to_uint8_image

BUNDLE = "mipr_auto_annotation"


class _ThresholdSegmenter(nn.Module):
    """Two-class logits: foreground where the first channel is positive."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([-image[:, :1], image[:, :1]], dim=1)


class _CopyGenerator(nn.Module):
    """G(x, t) = x: the pair is consistent exactly when S(x) already matches the cleaned label."""

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return image


class _BlankGenerator(nn.Module):
    """G(x, t) = a negative constant: S finds nothing, so every pair is rejected."""

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.full_like(image, -0.5)


def _disk_items(tmp: Path, n: int, size: int = 16) -> list[dict]:
    yy, xx = np.mgrid[:size, :size]
    items = []
    for i in range(n):
        disk = ((yy - size / 2) ** 2 + (xx - size / 2 - i) ** 2 < (size / 4) ** 2).astype(np.float32)
        image = np.stack([2 * disk - 1, np.zeros_like(disk), disk], 0).astype(np.float32)
        np.save(tmp / f"case{i}.npy", image)
        items.append({"image": str(tmp / f"case{i}.npy")})
    return items


def _load(item: dict) -> dict:
    return {"image": torch.as_tensor(np.load(item["image"]))}


def test_isic_datalist_pairs_images_and_masks(tmp_path: Path):
    images, masks = tmp_path / "ISIC2018_Task1-2_Training_Input", tmp_path / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir()
    masks.mkdir()
    for name in ("ISIC_0000000", "ISIC_0000001"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"{name}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / f"{name}_segmentation.png")
    out = json.loads(Path(write_isic_datalist(str(tmp_path), str(tmp_path / "list.json"))).read_text())
    assert out["label_scale"] == 255 and len(out["training"]) == 2
    assert out["training"][1]["label"].endswith("ISIC_0000001_segmentation.png")
    (masks / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(ValueError, match="ISIC_0000001_segmentation.png"):
        write_isic_datalist(str(tmp_path), str(tmp_path / "list2.json"))
    assert not (tmp_path / "list2.json").exists()
    with pytest.raises(FileNotFoundError, match="ISIC2018_Task1-2_Training_Input"):
        write_isic_datalist(str(tmp_path / "elsewhere"), str(tmp_path / "list3.json"))


def test_pair_png_reads_back_as_the_same_array(tmp_path: Path):
    image = torch.rand(3, 12, 20) * 2 - 1
    label = (torch.rand(1, 12, 20) > 0.5).byte()
    save_png_atomic(tmp_path / "image.png", to_uint8_image(image))
    save_png_atomic(tmp_path / "label.png", label.numpy())
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    back = loader(str(tmp_path / "image.png"))
    assert back.shape == (3, 12, 20)
    assert torch.allclose(back.float() / 127.5 - 1, image, atol=1 / 127.5)
    assert torch.equal(loader(str(tmp_path / "label.png")).byte(), label)
    with Image.open(tmp_path / "image.png") as png:  # a viewer sees the source orientation: width 12, height 20
        assert png.size == (12, 20)


def test_annotation_round_accepts_consistent_pairs_and_writes_them(tmp_path: Path):
    items = _disk_items(tmp_path, 3)
    items.append({"image": str(tmp_path / "blank.npy")})
    np.save(items[-1]["image"], -np.ones((3, 16, 16), np.float32))  # S finds nothing: empty pseudo-label

    def clean(label: torch.Tensor) -> torch.Tensor:
        return label

    out_dir = tmp_path / "round1"
    pairs = annotate_round(_ThresholdSegmenter(), _CopyGenerator(), items, _load, clean, out_dir, acceptance_dice=0.9)
    assert pairs["counts"] == {
        "unlabelled": 4,
        "accepted": 3,
        "rejected_empty": 1,
        "rejected_check": 0,
        "new_layouts": 0,
    }
    for pair in pairs["training"]:
        assert pair["dice"] == 1.0 and Path(pair["image"]).is_file() and Path(pair["label"]).is_file()
        label = LoadImage(image_only=True, ensure_channel_first=True)(pair["label"])
        assert label.shape == (1, 16, 16) and set(label.unique().tolist()) == {0, 1}
    assert json.loads((out_dir / "datalist.json").read_text())["counts"]["accepted"] == 3
    assert not list(tmp_path.glob(".round1.tmp-*"))
    # a finished round is read back, not redone
    again = annotate_round(_ThresholdSegmenter(), _BlankGenerator(), items, _load, clean, out_dir)
    assert again["counts"]["accepted"] == 3

    rejected = annotate_round(_ThresholdSegmenter(), _BlankGenerator(), items, _load, clean, tmp_path / "round2")
    assert rejected["counts"]["accepted"] == 0 and rejected["counts"]["rejected_check"] == 3
    assert not list((tmp_path / "round2" / "images").iterdir())


def test_annotation_round_leaves_nothing_behind_on_error(tmp_path: Path):
    items = _disk_items(tmp_path, 2) + [{"image": str(tmp_path / "missing.npy")}]
    with pytest.raises(FileNotFoundError):
        annotate_round(_ThresholdSegmenter(), _CopyGenerator(), items, _load, lambda t: t, tmp_path / "round1")
    assert not (tmp_path / "round1").exists() and not list(tmp_path.glob(".round1.tmp-*"))


class _SpotFooledSegmenter(nn.Module):
    """Foreground where channel 0 is positive, and (its systematic error) wherever channel 1 marks a spot."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        fg = torch.maximum(image[:, :1], image[:, 1:2])
        return torch.cat([-fg, fg], dim=1)


class _PaintGenerator(nn.Module):
    """G(x, t) paints channel 0 from the label (2t - 1) and keeps channel 1: x' matches t' exactly, so S recovers
    any t' it made (S's check always passes), and |x' - x| is large exactly where t' contradicts the image."""

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.cat([2 * label[:, 1:2] - 1, image[:, 1:2]], dim=1)


def _spot_items(tmp: Path, n: int, spots: set[int], size: int = 16) -> list[dict]:
    """2-channel images: channel 0 a disk (the truth), channel 1 a 4 x 4 spot (an artefact) on items ``spots``."""
    yy, xx = np.mgrid[:size, :size]
    items = []
    for i in range(n):
        disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
        spot = np.zeros((size, size), bool)
        if i in spots:
            spot[:4, :4] = True
        image = np.stack([2 * disk - 1.0, 2 * spot - 1.0]).astype(np.float32)
        np.save(tmp / f"case{i}.npy", image)
        np.save(tmp / f"case{i}_label.npy", disk[None].astype(np.int64))
        items.append({"image": str(tmp / f"case{i}.npy"), "label": str(tmp / f"case{i}_label.npy")})
    return items


def _load_labelled(item: dict) -> dict:
    return {"image": torch.as_tensor(np.load(item["image"])), "label": torch.as_tensor(np.load(item["label"]))}


def _truth(item: dict, shape) -> torch.Tensor:
    return torch.as_tensor(np.load(item["image"].replace(".npy", "_label.npy")))


def test_reconstruction_acceptance_rejects_the_errors_the_segmenter_passes(tmp_path: Path):
    """S's spot error passes S's own check (self-training); G's reconstruction error, calibrated on right pairs,
    rejects it, and the hidden truth shows which pairs were wrong."""
    calibration = _spot_items(tmp_path, 2, spots=set())
    threshold = reconstruction_threshold(_PaintGenerator(), calibration, _load_labelled, num_classes=2)
    assert threshold == pytest.approx(0.0)  # right labels: G moves nothing
    (tmp_path / "u").mkdir()
    items = [{"image": i["image"]} for i in _spot_items(tmp_path / "u", 4, spots={1, 3})]
    rounds = {}
    for rule in ("segmenter", "reconstruction", "both"):
        rounds[rule] = annotate_round(
            _SpotFooledSegmenter(),
            _PaintGenerator(),
            items,
            _load,
            lambda t: t,
            tmp_path / rule,
            acceptance=rule,
            max_reconstruction_error=threshold + 1e-6,
            truth=_truth,
        )
    by_segmenter = rounds["segmenter"]
    assert by_segmenter["counts"]["accepted"] == 4 and all(p["dice"] == 1.0 for p in by_segmenter["training"])
    assert by_segmenter["counts"]["true_dice_accepted"] < 0.97  # two of its four pairs carry the spot
    for rule in ("reconstruction", "both"):
        kept = sorted(Path(p["source"]).name for p in rounds[rule]["training"])
        assert kept == ["case0.npy", "case2.npy"], rule
        assert rounds[rule]["counts"]["true_dice_accepted"] == 1.0
        assert rounds[rule]["counts"]["true_dice_rejected"] < 1.0
        assert all(r["reconstruction_error"] > 0.05 for r in rounds[rule]["rejected"])
    with pytest.raises(ValueError, match="max_reconstruction_error"):
        annotate_round(
            _SpotFooledSegmenter(), _PaintGenerator(), items, _load, lambda t: t, tmp_path / "x", acceptance="both"
        )
    with pytest.raises(ValueError, match="acceptance must be one of"):
        annotate_round(
            _SpotFooledSegmenter(), _PaintGenerator(), items, _load, lambda t: t, tmp_path / "x", acceptance="s"
        )


def test_new_layouts_make_pairs_with_moved_labels(tmp_path: Path):
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[0, 2:6, 3:10] = 1
    rng = np.random.default_rng(0)
    moved = [new_layout(label, rng) for _ in range(8)]
    assert all(m.shape == label.shape and int(m.sum()) == int(label.sum()) for m in moved)
    assert sum(not torch.equal(m, label) for m in moved) >= 7  # new layouts, same object
    items = [{"image": i["image"]} for i in _spot_items(tmp_path, 3, spots=set())]
    pairs = annotate_round(
        _SpotFooledSegmenter(), _PaintGenerator(), items, _load, lambda t: t, tmp_path / "r", new_layouts=2, seed=3
    )
    assert pairs["counts"]["accepted"] == 3 and pairs["counts"]["new_layouts"] == 6
    layouts = [p for p in pairs["training"] if p.get("new_layout")]
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    disk_area = int(np.load(tmp_path / "case0_label.npy").sum())
    for pair in layouts:
        image, mask = loader(pair["image"]), loader(pair["label"])
        assert int(mask.sum()) == disk_area  # the accepted label, moved
        assert torch.equal((image[0] > 127).long(), mask[0].long())  # G drew the image that fits it


TINY = {
    "demo_kwargs": {"num_cases": 16, "image_size": 32},
    "image_size": [32, 32],
    "labelled_fraction": 0.5,
    "val_fraction": 0.15,
    "test_fraction": 0.2,
    "max_epochs": 2,
    "val_interval": 1,
    "batch_size": 4,
    "generator_epochs": 2,
    "generator_batch_size": 2,
    "generator_channels": [8, 16],
    "spade_hidden_channels": 8,
    "discriminator_channels": 8,
    "discriminator_layers": 2,
    "discriminator_num_d": 1,
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "acceptance_dice": 0.0,
}


def _overrides(tmp: Path, **extra: object) -> dict:
    return {"output_dir": str(tmp / "outputs"), "ckpt_dir": str(tmp / "models"), **TINY, **extra}


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConfigWorkflow, dict[str, dict]]:
    """The bundle's loop run once for three rounds on tiny demo data: its folder, the finished workflow and the
    initial weights of the segmenter (``network``) and the generator (``generator#network``)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("mipr")
    workflow = make_workflow(BUNDLE, ["train.json"], **_overrides(tmp))
    workflow.initialize()
    initial = {key: network_state(workflow.parser.get_parsed_content(key)) for key in ("network", "generator#network")}
    workflow.run()
    workflow.finalize()
    return tmp, workflow, initial


@pytest.fixture(scope="module")
def trained(training) -> tuple[Path, int]:
    """The loop's folder and its unlabelled count."""
    tmp, workflow, _ = training
    return tmp, len(workflow.parser.get_parsed_content("datalists")["unlabeled"])


def test_properties_complete(tmp_path: Path):
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_three_rounds_write_pairs_models_and_counts(trained, training):
    """Per round: the counts add up, the accepted pairs are the round's training additions, S_k is a network of its
    own trained from the initial weights (every round's differs from the initialisation and from the others), the
    panel shows its pseudo-labels and G's images; model.pt is the last round's network and generator.pt G trained
    for the planned epochs."""
    tmp, unlabelled = trained
    _, workflow, initial = training
    rounds = json.loads((tmp / "outputs" / "mipr" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    for r in rounds[1:]:
        counts = r["counts"]
        assert (
            counts["unlabelled"]
            == unlabelled
            == counts["accepted"] + counts["rejected_empty"] + counts["rejected_check"]
        )
        pairs = json.loads((tmp / "outputs" / "mipr" / f"round{r['round']}" / "datalist.json").read_text())
        assert len(pairs["training"]) == r["pairs"] == counts["accepted"]
        assert r["train_items"] == rounds[0]["train_items"] + r["pairs"]
        # image | pseudo-label | rearranged (G's image) | its label | truth
        assert_panel(tmp / "outputs" / "mipr" / f"panel_round{r['round']}.png", "rcrcc")
    segmenter = workflow.parser.get_parsed_content("network")
    models = [torch.load(tmp / "models" / f"round{k}" / "model.pt", weights_only=True) for k in range(4)]
    assert all(parameters_differ(segmenter, m, initial["network"]) for m in models)
    assert all(parameters_differ(segmenter, a, b) for i, a in enumerate(models) for b in models[i + 1 :])
    final = torch.load(tmp / "models" / "model.pt", weights_only=True)
    assert same_state(final, models[3]) and same_state(final, network_state(segmenter))
    generator = workflow.parser.get_parsed_content("generator#network")
    saved = torch.load(tmp / "models" / "generator.pt", weights_only=True)
    assert same_state(saved, network_state(generator))
    assert parameters_differ(generator, saved, initial["generator#network"])
    g_trainer = workflow.parser.get_parsed_content("generator#trainer")
    epochs, steps = TINY["generator_epochs"], len(g_trainer.data_loader)
    assert g_trainer.state.epoch == epochs and g_trainer.state.iteration == epochs * steps
    assert_epoch_checkpoint(tmp / "models" / "generator_training", epochs, epochs * steps, {"generator": generator})


def test_restart_skips_finished_rounds(trained):
    tmp, _ = trained
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "models").glob("round*/model.pt")}
    generator = (tmp / "models" / "generator.pt").stat().st_mtime_ns
    run_workflow(BUNDLE, ["train.json"], **_overrides(tmp))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (tmp / "models" / "generator.pt").stat().st_mtime_ns == generator


def test_every_round_evaluates_on_the_test_split(trained):
    tmp, _ = trained
    for k in (0, 3):
        eval_dir = tmp / f"eval{k}"
        run_workflow(
            BUNDLE,
            ["train.json", "evaluate.json"],
            "eval",
            **_overrides(tmp),
            ckpt_path=str(tmp / "models" / f"round{k}" / "model.pt"),
            eval_dir=str(eval_dir),
        )
        report = json.loads((eval_dir / "metrics.json").read_text())
        assert_report_consistent(report)
        assert_panel(eval_dir / "panel.png", "rcc")  # RGB image | label | prediction


def test_inference_on_an_rgb_image_keeps_its_size(trained, tmp_path: Path):
    tmp, _ = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 36, 3)) * 255).astype(np.uint8)).save(inputs / "img.png")
    out = tmp_path / "pred"
    run_workflow(
        BUNDLE,
        ["inference.json"],
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_dir=str(tmp / "models"),
        image_size=[32, 32],
        network_def=_tiny_unet(),
    )
    with Image.open(out / "img_seg.png") as png:  # a mask over the input's pixels, in its orientation
        pred = np.asarray(png)
    assert pred.shape == (40, 36) and set(np.unique(pred)) <= {0, 1}


def _tiny_unet() -> dict:
    return {
        "_target_": "UNet",
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 2,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 2,
        "norm": "batch",
    }


def test_bundle_refuses_missing_unlabelled_data(tmp_path: Path):
    with pytest.raises(RuntimeError) as excinfo:  # the config wraps the loop's error
        run_workflow(BUNDLE, ["train.json"], **_overrides(tmp_path, labelled_fraction=1.0))
    assert "unlabelled list is empty" in str(excinfo.value.__cause__)
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]  # refused before any training


def test_bundle_runs_the_reconstruction_rule_new_layouts_and_a_hidden_truth(tmp_path: Path):
    torch.set_num_threads(1)
    demo = run_workflow(BUNDLE, ["train.json"], **_overrides(tmp_path / "demo", num_rounds=0))
    dataset_json = next((tmp_path / "demo" / "outputs" / "demo_data").rglob("dataset.json"))
    del demo
    truth = {"_target_": "common.data.HiddenTruth", "datalist_file": str(dataset_json)}
    overrides = _overrides(tmp_path, dataset_dir=str(dataset_json.parent), num_rounds=1, new_layouts=1)
    run_workflow(BUNDLE, ["train.json"], **overrides, acceptance="both", diagnostic_truth=truth)
    rounds = json.loads((tmp_path / "outputs" / "mipr" / "rounds.json").read_text())
    assert rounds[1]["max_reconstruction_error"] > 0  # calibrated on the validation pairs
    pairs = json.loads((tmp_path / "outputs" / "mipr" / "round1" / "datalist.json").read_text())
    assert pairs["acceptance"] == "both"
    scored = pairs["training"] + pairs["rejected"]
    assert scored and all("true_dice" in p for p in scored if not p.get("new_layout"))
    for p in pairs["training"]:
        if not p.get("new_layout"):
            assert p["reconstruction_error"] <= rounds[1]["max_reconstruction_error"]
    assert rounds[1]["pairs"] == pairs["counts"]["accepted"] + pairs["counts"]["new_layouts"]
