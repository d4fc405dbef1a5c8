"""MNI152 grey / white matter slice task: label rule, crop and resampling, slab split, cache, labelled fraction, on a
synthetic template written here, and the real template of the nilearn wheel."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.data import load_array, mni_tissue, prepare_datalists, select_labelled
from common.data.mni_tissue import (
    INSTALL_HINT,
    SOURCE_FILES,
    find_source_dir,
    labelled_fraction_for,
    prepare_mni_tissue,
    slab_split,
    split_of_slab,
    split_summary,
    tissue_labels,
)

torch.set_num_threads(1)

SHAPE = (40, 48, 36)  # canonical (X, Y, Z) = (left -> right, posterior -> anterior, inferior -> superior)
SPLITS = ("training", "validation", "test")


def _toy_brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical RAS ``(X, Y, Z)`` T1 (float32, unique value per voxel inside the brain) and uint8 grey / white maps
    (max 255 as in the converted files): an ellipsoid with a white core (r < 0.55), a grey shell (r < 0.85) and an
    outer band below the tissue threshold (r < 1), off-centre along Z."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    r = np.sqrt(((x - 19.5) / 15) ** 2 + ((y - 23.5) / 18) ** 2 + ((z - 20.0) / 13) ** 2)
    gm = np.select([r < 0.55, r < 0.85, r < 1.0], [25, 255, 102], 0).astype(np.uint8)
    wm = np.select([r < 0.55, r < 0.85, r < 1.0], [255, 51, 76], 0).astype(np.uint8)
    t1 = np.where(r < 1.0, 100 + x + 2 * y + 3 * z, 0).astype(np.float32)
    return t1, gm, wm


def _write_source(folder: Path) -> Path:
    """The toy brain stored in (S, A, L) voxel order, so the preparation has to reorient it to RAS."""
    folder.mkdir(parents=True, exist_ok=True)
    # disk[i, j, k] = canonical[X - 1 - k, j, i]
    affine = np.array([[0, 0, -1, SHAPE[0] - 1 - 20], [0, 1, 0, -24], [1, 0, 0, -18], [0, 0, 0, 1]], np.float64)
    assert nib.aff2axcodes(affine) == ("S", "A", "L")
    for role, volume in zip(("t1", "gm", "wm"), _toy_brain()):
        disk = np.ascontiguousarray(volume[::-1].transpose(2, 1, 0))
        nib.save(nib.Nifti1Image(disk, affine), folder / SOURCE_FILES[role])
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _write_source(tmp_path / "source")


def _content(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text(encoding="utf-8"))


def _canonical_slices(volume: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(Z, H, W)`` with rows anterior -> posterior, columns left -> right."""
    return volume[:, ::-1, :].transpose(2, 1, 0)


def test_label_rule_on_known_values():
    gm = np.array([0.9, 0.2, 0.4, 0.5, 0.6, 0.3, 0.0])
    wm = np.array([0.1, 0.7, 0.3, 0.1, 0.6, 0.5, 0.0])
    # grey, white, below threshold, grey at the threshold, tie -> grey, white at the threshold, empty
    assert tissue_labels(gm, wm, 0.5).tolist() == [1, 2, 0, 1, 1, 2, 0]
    assert tissue_labels(gm, wm, 0.5).dtype == np.uint8


def test_slab_split_and_interleaving():
    assert slab_split(12, 3, 1) == [0, 0, 0, None, 1, 1, 1, None, 2, 2, 2, None]
    assert slab_split(7, 2, 2) == [0, 0, None, None, 1, 1, None]
    with pytest.raises(ValueError):
        slab_split(5, 3, 0)
    splits = [split_of_slab(k) for k in range(100)]
    assert splits.count("test") == 20 and splits.count("validation") == 10 and splits.count("training") == 70
    assert [split_of_slab(k) for k in range(10)] == ["training", "test"] + ["training", "validation"] + [
        "training"
    ] * 2 + ["test"] + ["training"] * 3


def test_prepare_shapes_orientation_and_labels(source: Path, tmp_path: Path):
    """At the crop's own size the resampling is the identity: images and labels equal the cropped volumes."""
    folder = prepare_mni_tissue(tmp_path / "out", image_size=16, slab_thickness=2, source_dir=source)
    content = _content(folder)
    assert content["labels"] == {"0": "background", "1": "grey matter", "2": "white matter"}
    assert content["modality"] == {"0": "T1"}
    for split in SPLITS:
        for item in content[split]:
            image, label = np.load(folder / item["image"]), np.load(folder / item["label"])
            assert image.shape == (1, 16, 16) and image.dtype == np.float32
            assert label.shape == (1, 16, 16) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2}
            loaded = load_array(str(folder / item["image"]))
            assert tuple(loaded.shape) == (1, 16, 16) and np.array_equal(loaded.numpy(), image)
            assert np.array_equal(load_array(str(folder / item["label"]), "label").numpy(), label)
            assert (label > 0).mean() >= 0.05

    crop = content["crop"]
    top, left, side = crop["top"], crop["left"], crop["side"]
    exact = prepare_mni_tissue(tmp_path / "exact", image_size=side, slab_thickness=2, source_dir=source)
    t1, gm, wm = (_canonical_slices(v) for v in _toy_brain())
    expected_labels = tissue_labels(gm / 255.0, wm / 255.0)
    assert top >= 0 and left >= 0 and top + side <= t1.shape[1] and left + side <= t1.shape[2]
    box = (slice(top, top + side), slice(left, left + side))
    items = [i for split in SPLITS for i in _content(exact)[split]]
    for item in items:
        z = item["slice"]
        assert np.array_equal(np.load(exact / item["image"])[0], t1[z][box])
        assert np.array_equal(np.load(exact / item["label"])[0], expected_labels[z][box])
    # the box: the tissue's bounding box over all slices, widened by the margin, centred in a square
    tissue = expected_labels > 0
    rows, cols = np.flatnonzero(tissue.any(axis=(0, 2))), np.flatnonzero(tissue.any(axis=(0, 1)))
    margin = mni_tissue.BOX_MARGIN
    height, width = rows[-1] - rows[0] + 1 + 2 * margin, cols[-1] - cols[0] + 1 + 2 * margin
    assert side == max(height, width) and height != width
    assert top == rows[0] - margin - (side - height) // 2 and left == cols[0] - margin - (side - width) // 2
    # the brain centre is white matter; the outer band (max(gm, wm) = 0.4) is background
    centre = min(items, key=lambda i: abs(i["slice"] - 20))
    middle = np.load(exact / centre["label"])[0]
    assert middle[middle.shape[0] // 2, middle.shape[1] // 2] == 2 and {0, 1, 2} <= set(np.unique(middle))
    assert 0 < min(i["slice"] for i in items) and max(i["slice"] for i in items) < SHAPE[2] - 1


def test_slab_split_of_the_written_datalist(source: Path, tmp_path: Path):
    folder = prepare_mni_tissue(tmp_path / "out", image_size=16, slab_thickness=2, gap=1, source_dir=source)
    content = _content(folder)
    items = sorted((i for split in SPLITS for i in content[split]), key=lambda i: i["slice"])
    kept = content["crop"]["kept"]
    assert len(items) == sum(k is not None for k in slab_split(kept, 2, 1))
    for split in SPLITS:
        for item in content[split]:
            assert split_of_slab(item["slab"]) == split
            assert ("group" in item) == (split != "training")
            if split != "training":
                assert item["group"] == f"slab{item['slab']}"
    slab_of = {i["slice"]: i["slab"] for i in items}
    for z, k in slab_of.items():  # no slice is adjacent to a slice of another slab
        assert slab_of.get(z + 1, k) == k and slab_of.get(z - 1, k) == k
    train = {i["slice"] for i in content["training"]}
    held_out = {i["slice"] for split in ("validation", "test") for i in content[split]}
    assert not any(z + d in train for z in held_out for d in (-1, 0, 1))
    slabs = sorted(set(slab_of.values()))
    assert slabs == list(range(len(slabs))) and len(slabs) >= 7
    assert {split_of_slab(k) for k in slabs} == set(SPLITS)
    assert content["numTraining"] == len(content["training"]) and content["numTest"] == len(content["test"])


def test_deterministic_and_cached(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = prepare_mni_tissue(tmp_path / "a", image_size=16, slab_thickness=2, source_dir=source)
    second = prepare_mni_tissue(tmp_path / "b", image_size=16, slab_thickness=2, source_dir=source)
    assert first.name == second.name
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    stamp = (first / "dataset.json").stat().st_mtime_ns
    monkeypatch.setattr(mni_tissue, "_load_source", lambda folder: pytest.fail("a complete folder was rewritten"))
    assert prepare_mni_tissue(tmp_path / "a", image_size=16, slab_thickness=2, source_dir=source) == first
    assert (first / "dataset.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()

    other = prepare_mni_tissue(tmp_path / "a", image_size=16, slab_thickness=3, source_dir=source)
    assert other != first and _content(other)["preparation"]["slab_thickness"] == 3
    (first / _content(first)["test"][0]["label"]).unlink()  # an incomplete folder is rebuilt in place
    assert prepare_mni_tissue(tmp_path / "a", image_size=16, slab_thickness=2, source_dir=source) == first
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_labelled_fraction_gives_exact_slice_counts(source: Path, tmp_path: Path):
    folder = prepare_mni_tissue(tmp_path / "out", image_size=16, slab_thickness=2, source_dir=source)
    content = _content(folder)
    train = content["training"]
    for count in range(len(train) + 1):
        labelled, unlabelled = select_labelled(train, labelled_fraction_for(count, folder))
        assert len(labelled) == count and len(unlabelled) == len(train) - count
    with pytest.raises(ValueError):
        labelled_fraction_for(len(train) + 1, folder)

    result = prepare_datalists(
        dataset_dir=str(folder),
        work_dir=str(tmp_path / "work"),
        num_channels=1,
        num_classes=3,
        labelled_fraction=labelled_fraction_for(4, folder),
    )
    assert len(result["training"]) == 4 and all("label" in s for s in result["training"])
    assert len(result["unlabeled"]) == len(train) - 4 and not any("label" in s for s in result["unlabeled"])
    for split in ("validation", "test"):
        given = [str((folder / i["image"]).resolve()) for i in content[split]]
        assert [s["source"] for s in result[split]] == given and all("label" in s for s in result[split])
    assert [i["image"] for i in result["test_volumes"]] == [
        str((folder / i["image"]).resolve()) for i in content["test"]
    ]
    sources = {s["source"] for s in result["training"] + result["unlabeled"]}
    assert sources == {str((folder / i["image"]).resolve()) for i in train}


def test_real_template(tmp_path: Path):
    """The MNI152 2009a template of the nilearn wheel (fails with the install hint when it is missing)."""
    find_source_dir()
    folder = prepare_mni_tissue(tmp_path / "out", image_size=48)
    content = _content(folder)
    summary = split_summary(folder)
    kept_range = [i["slice"] for split in SPLITS for i in content[split]]
    low, high = np.percentile(kept_range, [33, 67])
    for split in SPLITS:
        count, (background, grey, white) = summary[split]
        assert count >= 8, split
        assert 0.1 < grey < 0.4 and 0.04 < white < 0.3 and background > 0.4, (split, summary[split])
        labels = [np.load(folder / i["label"]) for i in content[split]]
        assert {0, 1, 2} <= set(np.unique(np.concatenate([lb.ravel() for lb in labels]))), split
        slices = [i["slice"] for i in content[split]]
        assert min(slices) < low and max(slices) > high, split  # every split spans the brain bottom to top
    total = sum(summary[split][0] for split in SPLITS)
    assert 0.15 <= summary["test"][0] / total <= 0.3 and 0.05 <= summary["validation"][0] / total <= 0.2
    image = np.load(folder / content["test"][0]["image"])
    assert image.shape == (1, 48, 48) and image.dtype == np.float32 and image.max() > 0


def test_missing_source_names_the_file_and_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(FileNotFoundError, match=r"mni_icbm152_t1_tal_nlin_sym_09a_converted\.nii\.gz") as info:
        prepare_mni_tissue(tmp_path / "out", source_dir=tmp_path / "empty")
    assert INSTALL_HINT in str(info.value) and "pip install --no-deps nilearn==0.14.1" in str(info.value)
    partial = _write_source(tmp_path / "partial")
    (partial / SOURCE_FILES["wm"]).unlink()
    with pytest.raises(FileNotFoundError, match="wm_tal_nlin_sym_09a_converted") as info:
        find_source_dir(partial)
    assert INSTALL_HINT in str(info.value)
    monkeypatch.setattr(mni_tissue.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="nilearn is not installed") as info:
        find_source_dir()
    assert INSTALL_HINT in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
