"""The label-free path of af_seg and acwe_unsup_seg: a folder of the user's images, no mask anywhere (issue 16).

Each bundle trains on exactly the folder's images (no demo item, no label), monitors on a held-out share of them,
refuses to evaluate without labels, and segments every image of the folder; a 512 x 512 image trains on random
128 px patches and segments in one call through the sliding window.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import make_workflow, run_workflow
from PIL import Image

SMALL_SCHEDULES = {
    "acwe_unsup_seg": {"max_epochs": 1, "val_interval": 1, "batch_size": 4},
    "af_seg": {
        "max_epochs": 1,
        "val_interval": 1,
        "batch_size": 2,
        "dip_steps": 2,
        "background#dsp_max_steps": 2,
        "background#noise_channels": 4,
    },
}


def _png_folder(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` grey PNGs of bright discs on a darker, noisy background; no mask is written."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for index in range(count):
        image = 0.2 + 0.05 * rng.standard_normal((size, size))
        for _ in range(3):
            cy, cx, r = rng.integers(size // 6, size - size // 6, 2).tolist() + [size // 8]
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += 0.6
        paths.append(folder / f"field_{index}.png")
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(paths[-1])
    return paths


def _chain(error: BaseException) -> str:
    """The messages of an exception and of its causes (MONAI wraps errors raised inside config expressions)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(messages)


def _sources(items: list[dict]) -> set[str]:
    return {str(Path(item["source"]).resolve()) for item in items}


def _train_and_infer(bundle: str, tmp: Path, images: list[Path], **overrides: object) -> tuple[object, Path]:
    outputs, models, preds = tmp / "outputs", tmp / "models", tmp / "preds"
    workflow = run_workflow(
        bundle,
        ["train.json"],
        unlabeled_dir=str(images[0].parent),
        output_dir=str(outputs),
        ckpt_dir=str(models),
        **SMALL_SCHEDULES[bundle],
        **overrides,
    )
    infer = {k: v for k, v in overrides.items() if k == "patch_size"}
    run_workflow(
        bundle,
        ["inference.json"],
        "infer",
        dataset_dir=str(images[0].parent),
        output_dir=str(preds),
        ckpt_dir=str(models),
        **infer,
    )
    return workflow, preds


@pytest.mark.parametrize("bundle", ["acwe_unsup_seg", "af_seg"])
def test_folder_of_images_alone(bundle: str, tmp_path: Path):
    torch.set_num_threads(1)
    images = _png_folder(tmp_path / "my_images", count=6, size=48)
    workflow, preds = _train_and_infer(bundle, tmp_path, images)
    parser = workflow.parser
    datalists = parser.get_parsed_content("datalists")
    assert _sources(datalists["unlabeled"] + datalists["monitor"]) == {str(p.resolve()) for p in images}
    assert datalists["monitor"] and not _sources(datalists["unlabeled"]) & _sources(datalists["monitor"])
    assert not datalists["training"] and not datalists["validation"] and not datalists["test"]
    assert all("label" not in item for split in datalists.values() for item in split)
    assert not (tmp_path / "outputs" / "demo_data").exists()  # the demo data were never generated
    train_key = "train_data" if bundle == "acwe_unsup_seg" else "train_items"
    train_items = parser.get_parsed_content(train_key)
    assert _sources(train_items) == _sources(datalists["unlabeled"])  # the monitor images are held out
    assert all("label" not in item for item in train_items)
    assert (tmp_path / "models" / "model.pt").is_file()
    masks = sorted(preds.glob("*_seg.nii.gz"))
    assert [m.name for m in masks] == [f"{p.stem}_seg.nii.gz" for p in images]
    assert set(np.unique(np.asarray(nib.load(masks[0]).dataobj))) <= {0, 1}
    with pytest.raises(Exception) as error:
        run_workflow(
            bundle,
            ["train.json", "evaluate.json"],
            "eval",
            unlabeled_dir=str(images[0].parent),
            output_dir=str(tmp_path / "outputs"),
            ckpt_dir=str(tmp_path / "models"),
        )
    assert "evaluation needs labelled 'test' items" in _chain(error.value)


@pytest.mark.parametrize("bundle", ["acwe_unsup_seg", "af_seg"])
def test_large_image_patches_and_sliding_window(bundle: str, tmp_path: Path):
    torch.set_num_threads(1)
    images = _png_folder(tmp_path / "fields", count=2, size=512)
    workflow, preds = _train_and_infer(bundle, tmp_path, images, patch_size=[128, 128])
    dataset = workflow.parser.get_parsed_content("train#dataset")
    assert tuple(dataset[0]["image"].shape) == (1, 128, 128)
    masks = sorted(preds.glob("*_seg.nii.gz"))
    assert len(masks) == 2 and np.squeeze(np.asarray(nib.load(masks[0]).dataobj)).shape == (512, 512)
    inferer = make_workflow(bundle, ["inference.json"], "infer", patch_size=[128, 128]).parser.get_parsed_content(
        "inferer"
    )
    assert tuple(inferer.image_inferer.roi_size) == (128, 128)


def test_labels_required_by_the_supervised_modes(tmp_path: Path):
    """Mode 4 (and the supervised bundles) need labels: a folder alone gets an error that says so."""
    images = _png_folder(tmp_path / "my_images", count=3, size=32)
    workflow = make_workflow(
        "acwe_unsup_seg",
        ["train.json", "mode4_joint.json"],
        unlabeled_dir=str(images[0].parent),
        output_dir=str(tmp_path / "outputs"),
    )
    with pytest.raises(Exception) as error:
        workflow.parser.get_parsed_content("datalists")
    assert "needs labelled training images" in _chain(error.value)
