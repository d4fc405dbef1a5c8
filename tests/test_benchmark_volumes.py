"""common.benchmark on volumes: the sparse_stack task, the per-volume classical arms and the Dice per test volume."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.benchmark.arms import ARMS, not_applicable
from common.benchmark.cli import main
from common.benchmark.dataset import read_dataset
from common.benchmark.protocol import Budget, write_run_datalists
from common.benchmark.results import read_rows
from common.benchmark.runner import _classical, plan
from common.benchmark.tasks import TASKS
from common.benchmark.volumes import VolumeReport, report_per_volume, volume_of
from common.bundle import load_workflow
from common.classical.baselines import classical_segmentation, classical_segmentation_3d
from common.data.sparse_stack import sparse_stack_arrays
from common.metrics import read_metrics

BUDGET = Budget("quick", steps=4, epochs=2, batch_size=4, image_size=32)


def clean_stack(seed: int, size: int = 32, depth: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A stack where one global threshold is right: image ``(size, size, depth)`` float32 (a bright ball in the middle
    slices over a background with a drift across the image and along the stack, some noise), label uint8."""
    rng = np.random.default_rng(seed)
    yy, xx, zz = np.meshgrid(np.arange(size), np.arange(size), np.arange(depth), indexing="ij")
    cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
    label = ((yy - cy) / 6) ** 2 + ((xx - cx) / 6) ** 2 + ((zz - depth / 2) / 2.5) ** 2 <= 1.0
    image = 0.2 + 0.12 * xx / size + 0.08 * zz / depth + 0.6 * label + 0.03 * rng.standard_normal(label.shape)
    return (image * 1000).astype(np.float32), label.astype(np.uint8)


def stack_folder(root: Path, cases: int = 4, classes: int = 2) -> Path:
    """An MSD folder of :func:`clean_stack` volumes, the last two the labelled test list."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    items = []
    for i in range(cases):
        image, label = clean_stack(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"vol{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"vol{i}.nii.gz")
        items.append({"image": f"imagesTr/vol{i}.nii.gz", "label": f"labelsTr/vol{i}.nii.gz"})
    labels = {str(k): name for k, name in enumerate(["background", "ball", "rim"][:classes])}
    content = {"labels": labels, "training": items[:-2], "test": items[-2:]}
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    return float(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))


@pytest.mark.parametrize("quick, volumes, test", [(True, 5, 2), (False, 10, 3)])
def test_sparse_stack_task_writes_an_msd_folder_of_volumes(
    tmp_path: Path, quick: bool, volumes: int, test: int
) -> None:
    task = TASKS["sparse_stack"]
    folder = task.prepare(tmp_path, quick)
    data = read_dataset(folder)
    assert (data.spatial_dims, data.num_classes, data.class_names, data.num_channels) == (3, 2, ("nucleus",), 1)
    assert data.test_given and len(data.test) == test and len(data.pool) == volumes - test
    assert max(task.labelled) <= len(data.pool_cases)
    image = nib.load(data.test[0]["image"]).get_fdata()
    label = nib.load(data.test[0]["label"]).get_fdata()
    assert image.shape == label.shape and image.shape[-1] == (12 if quick else 24)
    assert 0 < (label.any(axis=(0, 1))).sum() < image.shape[-1]  # the nuclei fill a minority of the slices
    stamp = (folder / "dataset.json").stat().st_mtime_ns
    assert task.prepare(tmp_path, quick) == folder and (folder / "dataset.json").stat().st_mtime_ns == stamp
    assert not any(arm in not_applicable(data) for arm in ("otsu_3d", "chan_vese_3d", "otsu", "acwe_unsup", "af_seg"))


def test_volume_arms_apply_to_volumes_only(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    training = []
    for i in range(5):
        image, label = clean_stack(i, depth=1)
        Image.fromarray((image[..., 0] / 4).astype(np.uint8)).save(tmp_path / "flat" / f"im{i}.png")
        Image.fromarray(label[..., 0]).save(tmp_path / "flat" / f"lab{i}.png")
        training.append({"image": f"im{i}.png", "label": f"lab{i}.png"})
    (tmp_path / "flat" / "dataset.json").write_text(
        json.dumps({"labels": {"0": "bg", "1": "ball"}, "training": training})
    )
    flat = not_applicable(read_dataset(tmp_path / "flat"))
    assert "3D volume" in flat["otsu_3d"] and "2D images" in flat["chan_vese_3d"] and "otsu" not in flat
    assert all(
        ARMS[k].role == "classical" and ARMS[k].bundle is None and not ARMS[k].labels
        for k in ("otsu_3d", "chan_vese_3d")
    )
    three = not_applicable(read_dataset(stack_folder(tmp_path / "three", classes=3)))
    assert "otsu_3d" not in three and "two-phase" in three["chan_vese_3d"]
    specs = plan(read_dataset(tmp_path / "flat"), "flat", BUDGET, ["otsu", "otsu_3d"], [2], [0], tmp_path / "r", flat)
    assert [s["arm"] for s in specs] == ["otsu"]


def test_otsu_3d_is_right_where_a_global_threshold_is_and_leaves_empty_slices_empty() -> None:
    image, label = clean_stack(0)
    volume, truth = image.transpose(2, 0, 1), label.transpose(2, 0, 1)  # (S, H, W)
    pred = classical_segmentation_3d(volume, "otsu_3d")
    assert pred.shape == volume.shape and dice(pred, truth) > 0.9
    empty = ~truth.any(axis=(1, 2))
    assert empty.sum() >= 4 and not pred[empty].any()
    per_slice = np.stack([classical_segmentation(s, "otsu") for s in volume])
    assert per_slice[empty].any(axis=(1, 2)).all()  # per slice, the drift is split in every object-free slice


def test_chan_vese_3d_scores_well_above_chance_on_sparse_stacks() -> None:
    for seed in (0, 1):
        image, label = sparse_stack_arrays(size=48, depth=24, object_slices=10, num_nuclei=4, seed=seed)
        volume, truth = image.transpose(2, 0, 1).astype(np.float64), label.transpose(2, 0, 1)
        pred = classical_segmentation_3d(volume, "chan_vese_3d")
        chance = truth.mean()  # the Dice of a mask drawn at random with the truth's share
        assert pred.shape == volume.shape and dice(pred, truth) > 0.6 > 20 * chance
        assert not pred[~truth.any(axis=(1, 2))].any()
    with pytest.raises(ValueError, match="two-phase"):
        classical_segmentation_3d(volume, "chan_vese_3d", num_classes=3)


def test_volume_report_scores_each_restacked_volume_as_one_image() -> None:
    assert volume_of("/x/0001_stack_008_0012_image.npy") == ("0001_stack_008", 12)
    assert volume_of("/x/case.png") == ("case.png", 0)
    rng = np.random.default_rng(0)
    truth, pred = rng.random((2, 2, 5, 8, 8)) > 0.6  # (volume, slice, H, W)
    report = VolumeReport(2, ["fg"])
    for v in range(2):
        for k in (3, 0, 1, 4, 2):  # any slice order within a volume
            report.add_slice(f"{v:04d}_vol_{k:04d}_image.npy", pred[v, k][None], torch.as_tensor(truth[v, k][None]))
    result = report.finish().per_image()
    assert [r["name"] for r in result] == ["0000_vol", "0001_vol"]
    for v in range(2):
        assert result[v]["dice"]["fg"] == pytest.approx(dice(pred[v], truth[v]), abs=1e-6)
    again = VolumeReport(2)
    again.add_slice("0000_a_0000_image.npy", pred[0, 0][None], truth[0, 0][None])
    again.add_slice("0001_b_0000_image.npy", pred[0, 0][None], truth[0, 0][None])
    with pytest.raises(ValueError, match="one after another"):
        again.add_slice("0000_a_0001_image.npy", pred[0, 0][None], truth[0, 0][None])


def test_classical_runs_on_volumes_report_per_slice_and_per_volume(tmp_path: Path) -> None:
    data = read_dataset(stack_folder(tmp_path / "stacks"))
    arms = ["otsu_3d", "otsu"]
    specs = plan(data, "stacks", BUDGET, arms, [2], [0], tmp_path / "runs", not_applicable(data))
    scores = {}
    for spec in specs:
        run_dir = Path(spec["run_dir"])
        write_run_datalists(data, spec["_cases"], run_dir)
        eval_dir = _classical(spec, run_dir, run_dir / "datalist_eval.json")
        slices, volumes = read_metrics(eval_dir), read_metrics(eval_dir / "volumes.json")
        assert len(slices.per_image) == 2 * 12 and len(volumes.per_image) == 2
        assert set(volumes.by_image()) == {"0000_vol2", "0001_vol3"}
        scores[spec["arm"]] = volumes.mean()
        if spec["arm"] == "otsu_3d":  # nothing marked in the object-free slices: Dice undefined there, not 0
            assert sum(r["dice"]["ball"] is None for r in slices.per_image) >= 8
    assert scores["otsu_3d"] > 0.9 and scores["otsu"] < 0.6


@pytest.mark.parametrize("arm", sorted({a.key for a in ARMS.values() if a.bundle}))
def test_every_bundle_evaluation_can_report_per_volume(arm: str) -> None:
    configs = [*ARMS[arm].configs, "evaluate.json"]
    workflow = load_workflow(ARMS[arm].bundle, configs, "eval")
    report_per_volume(workflow)
    targets = [h.get("_target_") for h in workflow.parser["validate#handlers"] if isinstance(h, dict)]
    assert targets.count("common.benchmark.volumes.VolumeReportHandler") == 1
    assert not any(t.endswith(".SegmentationReportHandler") for t in targets)


@pytest.mark.slow
def test_quick_sparse_stack_run_scores_every_row_per_test_volume(tmp_path: Path) -> None:
    arms = ["acwe_unsup", "otsu_3d", "chan_vese_3d", "otsu"]
    assert main(["--task", "sparse_stack", "--quick", "--arms", *arms, "--seeds", "0", "--out", str(tmp_path)]) == 0
    rows = {r["arm"]: r for r in read_rows(tmp_path / "results" / "sparse_stack_quick" / "runs.jsonl.gz")}
    assert set(rows) == set(arms)
    for row in rows.values():
        assert row["status"] == "ok", row.get("error")
        assert row["spatial_dims"] == 3 and row["test_cases"] == 2 and "slice_dice_mean" in row
        assert set(row["dice_per_image"]) == {"0000_stack_003", "0001_stack_004"}
    assert rows["otsu_3d"]["dice_mean"] > 0.9 and rows["acwe_unsup"]["segmenter_steps"] == 4
    table = (tmp_path / "sparse_stack_quick" / "label_efficiency.md").read_text()
    assert "otsu_3d" in table and "chan_vese_3d" in table
    assert "nothing to recommend" in (tmp_path / "sparse_stack_quick" / "recommendation.md").read_text()
