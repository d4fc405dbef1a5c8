"""Tests of the synthetic demo data generators in :mod:`common.data.demo`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

from common.data.demo import DEMO_TASKS, ensure_demo_dataset

NUM_CASES = 3
IMAGE_SHAPES = {
    "cells": (128, 128),
    "cells_hard": (128, 128),
    "vessels": (128, 128),
    "tumour": (64, 64, 32),
    "bone": (64, 64, 32),
    "tubular": (64, 64, 32),
    "lesions": (128, 128, 3),
}
LABEL_SHAPES = {**IMAGE_SHAPES, "lesions": (128, 128)}
LABEL_VALUES = {"tubular": {0, 1, 2}, "lesions": {0, 255}}


def _load(path: str | Path) -> np.ndarray:
    return np.asarray(LoadImage(image_only=True)(str(path)))


def _load_cases(dataset_json: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    datalist = load_decathlon_datalist(str(dataset_json), data_list_key="training")
    return [(_load(item["image"]), _load(item["label"])) for item in datalist]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every demo data set generated at default size with ``NUM_CASES`` cases and seed 0."""
    root = tmp_path_factory.mktemp("demo")
    return {task: generate(root / task, num_cases=NUM_CASES, seed=0) for task, generate in DEMO_TASKS.items()}


@pytest.fixture(scope="module")
def cases(datasets: dict[str, Path]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    return {task: _load_cases(path) for task, path in datasets.items()}


def test_registry() -> None:
    assert set(DEMO_TASKS) == set(IMAGE_SHAPES)


@pytest.mark.parametrize("task", sorted(IMAGE_SHAPES))
def test_dataset_json(task: str, datasets: dict[str, Path]) -> None:
    dataset_json = datasets[task]
    assert dataset_json == dataset_json.parent / "dataset.json"
    dataset = json.loads(dataset_json.read_text(encoding="utf-8"))
    assert "Synthetic" in dataset["description"] and "not real patient data" in dataset["description"]
    assert "(seed 0)" in dataset["description"]
    assert dataset["tensorImageSize"] == f"{len(LABEL_SHAPES[task])}D"
    assert dataset["labels"]["0"] == "background"
    assert dataset["numTraining"] == len(dataset["training"]) == NUM_CASES
    for item in dataset["training"]:
        for key in ("image", "label"):
            assert item[key].startswith("./")
            assert (dataset_json.parent / item[key]).is_file()
    for item in load_decathlon_datalist(str(dataset_json), data_list_key="training"):
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
    if task == "lesions":
        assert dataset["labels"] == {"0": "background", "255": "lesion"} and dataset["label_scale"] == 255


@pytest.mark.parametrize("task", sorted(IMAGE_SHAPES))
def test_arrays(task: str, datasets: dict[str, Path], cases: dict) -> None:
    label_values = {int(value) for value in json.loads(datasets[task].read_text(encoding="utf-8"))["labels"]}
    assert label_values == LABEL_VALUES.get(task, {0, 1})
    found = set()
    for image, label in cases[task]:
        assert image.shape == IMAGE_SHAPES[task]
        assert label.shape == LABEL_SHAPES[task]
        assert np.isfinite(image).all() and image.std() > 0
        found |= set(np.unique(label).astype(int))
    assert found == label_values  # every class, foreground included, occurs over the data set


def test_value_ranges(cases: dict) -> None:
    for task in ("cells", "vessels", "lesions"):
        assert all(0 <= image.min() and image.max() <= 255 for image, _ in cases[task])
    assert all(image.min() >= 0 for image, _ in cases["tumour"] + cases["bone"])
    assert all(np.array_equal(image, np.round(image)) for image, _ in cases["bone"])  # Poisson counts
    assert all(-1024 <= image.min() and image.max() <= 3071 for image, _ in cases["tubular"])


@pytest.mark.parametrize("task", sorted(IMAGE_SHAPES))
def test_deterministic(task: str, tmp_path: Path, cases: dict) -> None:
    image, label = cases[task][0]
    same_image, same_label = _load_cases(DEMO_TASKS[task](tmp_path / "same", num_cases=1, seed=0))[0]
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_label, label)
    other_image, _ = _load_cases(DEMO_TASKS[task](tmp_path / "other", num_cases=1, seed=1))[0]
    assert not np.array_equal(other_image, image)


def test_tumour_presence(cases: dict) -> None:
    labels = [label for _, label in cases["tumour"]]
    assert any(label.any() for label in labels) and not all(label.any() for label in labels)
    slice_has_tumour = np.concatenate([label.any(axis=(0, 1)) for label in labels])
    assert slice_has_tumour.any() and not slice_has_tumour.all()


def test_tubular_classes(cases: dict) -> None:
    for _, label in cases["tubular"]:
        assert set(np.unique(label).astype(int)) == {0, 1, 2}
        multi_class = [{1, 2} <= set(np.unique(label[..., z]).astype(int)) for z in range(label.shape[-1])]
        assert np.mean(multi_class) > 0.5


def test_ensure_demo_dataset_is_generated_once(tmp_path: Path) -> None:
    dataset_json = ensure_demo_dataset("cells", tmp_path, num_cases=2, image_size=32)
    assert dataset_json == tmp_path / "cells" / "dataset.json" and dataset_json.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells"]
    image = tmp_path / "cells" / "imagesTr" / "cell_000.png"
    mtimes = dataset_json.stat().st_mtime_ns, image.stat().st_mtime_ns
    assert ensure_demo_dataset("cells", tmp_path, num_cases=2, image_size=32) == dataset_json
    assert (dataset_json.stat().st_mtime_ns, image.stat().st_mtime_ns) == mtimes


def test_ensure_demo_dataset_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no_such_task") as error:
        ensure_demo_dataset("no_such_task", tmp_path)
    assert all(task in str(error.value) for task in DEMO_TASKS)
    assert not any(tmp_path.iterdir())


def test_ensure_demo_dataset_leaves_nothing_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out_dir: str | Path, **kwargs) -> Path:
        (Path(out_dir) / "imagesTr").mkdir(parents=True)
        (Path(out_dir) / "imagesTr" / "half_written.png").write_bytes(b"")
        raise RuntimeError("generation failed")

    monkeypatch.setitem(DEMO_TASKS, "cells", broken)
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match="generation failed"):
        ensure_demo_dataset("cells", root)
    assert not root.exists() or not any(root.iterdir())


def test_bone_tubes_scale_with_image_size() -> None:
    """Bone radii are in voxels of a 48-px slice: at image size 96 (sampling 0.5 in-plane) a tube is twice as wide."""
    from common.data.demo import BONE_REFERENCE_SIZE, _render_tubes

    line = np.stack([np.full(8, 10.0), np.full(8, 10.0), np.arange(8.0)], axis=1)  # along the depth axis
    radii = np.full(8, 2.0)
    for size, width in ((BONE_REFERENCE_SIZE, 5), (2 * BONE_REFERENCE_SIZE, 9)):
        scale = size / BONE_REFERENCE_SIZE
        inside, _ = _render_tubes((21, 21, 8), line, radii, sampling=(1 / scale, 1 / scale, 1))
        assert inside[:, 10, 4].sum() == width and inside[10, 10, :].all()
