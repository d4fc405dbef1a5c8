"""BraTS / LiTS preparation of the translation bundle (Vorontsov et al. 2022) on small MSD-layout volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from bundle_utils import assert_report_consistent, run_workflow

from common.data.cluttered_mnist import cluttered_mnist_datalists
from common.data.msd_translation import brats_half_slices, lits_slices, prepare_brats, prepare_lits, sample_by_position


def _write_msd(folder: Path, images: list[np.ndarray], labels: list[np.ndarray]) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    items = []
    for i, (image, label) in enumerate(zip(images, labels)):
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), folder / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / "labelsTr" / f"case_{i}.nii.gz")
        items.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    return folder


def _brain(rng: np.random.Generator, tumour: bool, shape: tuple[int, int] = (32, 24)) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, 6, 4) volume: brain in the middle slices 1-4, a tumour in the left hemisphere of slices 2-3."""
    x, y = shape
    image = np.zeros((x, y, 6, 4), np.float32)
    image[2 : x - 2, 2 : y - 2, 1:5] = rng.random((x - 4, y - 4, 4, 4)) + 1.0
    label = np.zeros((x, y, 6), np.uint8)
    if tumour:
        label[4:10, 5:12, 2:4] = 2
    return image, label


def test_brats_half_slices_filters_and_domains():
    image, label = _brain(np.random.default_rng(0), tumour=True)
    p_img, p_mask, a_img, p_pos, a_pos = brats_half_slices(image, label)
    assert len(p_img) == 2 and len(a_img) == 6  # slices 1-4 x 2 halves; slices 0 and 5 hold no brain
    assert p_img[0].shape == (4, 24, 16) and p_mask[0].shape == (1, 24, 16) and p_mask[0].sum() == 6 * 7
    assert np.abs(p_img[0]).max() <= 1.0 and p_pos == [2 / 6, 3 / 6]
    assert np.all(a_img[0][:, :2] == 0) and np.all(a_img[0][:, :, :2] == 0)  # zero outside the brain


def test_brats_normalisation_pools_the_channels_as_the_authors():
    """One mean and std over the non-zero voxels of all four channels (the authors' prepare_brats_data_hemispheres),
    so a channel brighter than the others stays brighter after normalisation."""
    image, label = _brain(np.random.default_rng(2), tumour=False)
    image[..., 3] *= 3.0
    _, _, a_img, _, _ = brats_half_slices(image, label)
    values = image[image != 0]
    expected = np.clip((image - values.mean()) / (5 * values.std()), -1, 1) * np.any(image != 0, axis=-1)[..., None]
    half = image.shape[0] // 2
    np.testing.assert_allclose(a_img[0], expected[:half, :, 1].transpose(2, 1, 0), atol=1e-5)
    assert a_img[0][3][a_img[0][3] != 0].mean() > 0 > a_img[0][0][a_img[0][0] != 0].mean()


def test_prepare_brats_writes_datalists(tmp_path: Path):
    rng = np.random.default_rng(1)
    vols = [_brain(rng, tumour=i % 2 == 0) for i in range(10)]
    msd = _write_msd(tmp_path / "Task01_BrainTumour", [v[0] for v in vols], [v[1] for v in vols])
    folder = prepare_brats(msd, tmp_path / "out", labelled_fraction=0.25, seed=0)
    lists = cluttered_mnist_datalists(folder)
    assert lists["present"][0]["image"].shape == (4, 24, 16)
    assert len(lists["present"]) + len(lists["validation"]) + len(lists["test"]) == 5 * 2
    assert 0 < len(lists["training"]) < len(lists["present"])
    assert prepare_brats(msd, tmp_path / "out", labelled_fraction=0.25, seed=0) == folder  # cached


def _liver(rng: np.random.Generator, z0: int = 3) -> tuple[np.ndarray, np.ndarray]:
    image = rng.normal(0, 50, (40, 40, 10)).astype(np.float32)
    label = np.zeros((40, 40, 10), np.uint8)
    label[8:32, 10:30, 1:9] = 1
    label[12:20, 14:22, z0 : z0 + 2] = 2  # 8x8 lesion: P
    label[25:28, 25:27, 6] = 2  # 3x2 lesion: too small, slice dropped
    return image, label


def test_lits_slices_crop_resize_and_lesion_width():
    image, label = _liver(np.random.default_rng(0))
    p_img, p_mask, a_img, p_pos, a_pos = lits_slices(image, label, size=32)
    assert len(p_img) == 2 and len(a_img) == 5  # liver slices 1-8; slice 6 has only a small lesion
    assert p_img[0].shape == p_mask[0].shape == (1, 32, 32) and p_mask[0].sum() > 0
    assert np.abs(p_img[0]).max() <= 1.0


def test_lits_statistics_come_from_liver_tissue_without_lesions():
    """The authors' prepare_lits.py normalises by the mean and std of label 1 only: very bright lesions do not inflate
    the std, so healthy liver tissue (std 50) keeps a spread of about 1/5 (it would be ~0.006 with the lesions in)."""
    image, label = _liver(np.random.default_rng(1))
    image[label == 2] += 1e4
    _, _, a_img, _, _ = lits_slices(image, label, size=40)
    spreads = [float(a[a != 0].std()) for a in a_img]
    assert len(spreads) == 5 and min(spreads) > 0.1 and max(spreads) < 0.3


def test_sample_by_position_follows_present_histogram():
    rng = np.random.default_rng(0)
    chosen = sample_by_position([0.12, 0.13, 0.5], [0.11, 0.14, 0.14, 0.52, 0.9, 0.91], rng)
    assert len(chosen) == 3 and 3 in chosen and not {4, 5} & set(chosen)


def test_prepare_lits(tmp_path: Path):
    rng = np.random.default_rng(2)
    vols = [_liver(rng, z0=1 + 2 * i) for i in range(5)]  # lesions at different heights
    msd = _write_msd(tmp_path / "Task03_Liver", [v[0] for v in vols], [v[1] for v in vols])
    folder = prepare_lits(msd, tmp_path / "out", split_fractions=(0.6, 0.2, 0.2), size=32)
    lists = cluttered_mnist_datalists(folder)
    # A slices are drawn only from position bins that hold P slices, at most as many as P per bin
    assert len(lists["present"]) >= 4 and 0 < len(lists["absent"]) <= len(lists["present"])
    assert lists["test"][0]["image"].shape == (1, 32, 32)


def test_bundle_trains_and_evaluates_on_brats_layout(tmp_path: Path):
    rng = np.random.default_rng(3)
    vols = [_brain(rng, tumour=True, shape=(64, 64)) for _ in range(10)]  # half-slices 64x32; P in every split
    msd = _write_msd(tmp_path / "Task01_BrainTumour", [v[0] for v in vols], [v[1] for v in vols])
    overrides = {
        "dataset_dir": str(msd),
        "output_dir": str(tmp_path / "outputs"),
        "ckpt_dir": str(tmp_path / "models"),
        "labelled_fraction": 0.5,
        "network_width": 0.125,
        "batch_size": 2,
        "absent_batch_size": 2,
        "max_epochs": 1,
        "epoch_length": 1,
    }
    run_workflow("translation_semi_seg", ["train.json", "brats.json"], **overrides)
    run_workflow("translation_semi_seg", ["train.json", "brats.json", "evaluate.json"], **overrides)
    report = json.loads((tmp_path / "outputs" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert report["num_images"] >= 1 and 0.0 <= report["soft_dice_accumulated"]["tumour"] <= 1.0
    assert_report_consistent(report)


def test_bundle_trains_on_lits_layout(tmp_path: Path):
    rng = np.random.default_rng(4)
    vols = [_liver(rng, z0=1 + i % 6) for i in range(10)]
    msd = _write_msd(tmp_path / "Task03_Liver", [v[0] for v in vols], [v[1] for v in vols])
    overrides = {
        "dataset_dir": str(msd),
        "output_dir": str(tmp_path / "outputs"),
        "ckpt_dir": str(tmp_path / "models"),
        "lits_size": 64,
        "labelled_fraction": 0.5,
        "network_width": 0.125,
        "batch_size": 2,
        "absent_batch_size": 2,
        "max_epochs": 1,
        "epoch_length": 1,
    }
    workflow = run_workflow("translation_semi_seg", ["train.json", "lits.json"], **overrides)
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 1
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    trained = workflow.parser.get_parsed_content("network").state_dict()  # one epoch: the best is the last
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in trained)
