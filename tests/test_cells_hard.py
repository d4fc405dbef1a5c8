"""Tests of the hard synthetic nucleus task ``cells_hard`` (:func:`common.data.demo.generate_cells_hard`).

Each property that makes the task hard (uneven illumination, dim and bright nuclei, touching nuclei, debris) is
measured on the generated files, and where the measure could pass by chance it is checked again with that property
switched off through its ``CELLS_HARD_*`` constant, so that the test fails without the property.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.data import demo
from common.data.demo import DEMO_TASKS, ensure_demo_dataset, generate_cells_hard

NUM_CASES = 6
SIZE = 128


def _read(dataset_json: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image, label)`` arrays of every case, read with PIL (rows and columns as the generator drew them)."""
    folder = dataset_json.parent
    items = json.loads(dataset_json.read_text(encoding="utf-8"))["training"]
    return [tuple(np.asarray(Image.open(folder / item[key])) for key in ("image", "label")) for item in items]


def _cases(num_cases: int = NUM_CASES, size: int = SIZE, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The arrays of a data set without writing it (the generator's per-case function)."""
    return [demo._cells_hard_case(demo._case_rng(seed, i), size) for i in range(num_cases)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cells_hard(tmp_path_factory.mktemp("cells_hard"), num_cases=NUM_CASES, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def cases(dataset: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return _read(dataset)


def _quadrant_background_ratio(image: np.ndarray, label: np.ndarray) -> float:
    """Largest over smallest median background (3 px away from any nucleus) of the four image quadrants."""
    background = ~ndimage.binary_dilation(label.astype(bool), iterations=3)
    half = image.shape[0] // 2
    medians = [
        np.median(image[r : r + half, c : c + half][background[r : r + half, c : c + half]])
        for r in (0, half)
        for c in (0, half)
    ]
    return float(max(medians) / max(min(medians), 1))


def _bright_background_pixels(image: np.ndarray, label: np.ndarray) -> int:
    """Pixels at least 3 px away from any nucleus that are, after a 1 px blur against the noise, brighter than the
    median nucleus pixel of the image: a global threshold cannot keep the nuclei and drop these."""
    smooth = ndimage.gaussian_filter(image.astype(float), 1)
    far = ~ndimage.binary_dilation(label.astype(bool), iterations=3)
    return int((smooth[far] > np.median(smooth[label.astype(bool)])).sum())


def test_registered_and_layout(tmp_path: Path) -> None:
    assert DEMO_TASKS["cells_hard"] is generate_cells_hard
    assert DEMO_TASKS["cells"] is demo.generate_cells  # the quick demo stays
    dataset_json = ensure_demo_dataset("cells_hard", tmp_path, num_cases=2, image_size=48)
    assert dataset_json == tmp_path / "cells_hard" / "dataset.json"
    content = json.loads(dataset_json.read_text(encoding="utf-8"))
    assert content["tensorImageSize"] == "2D" and content["labels"] == {"0": "background", "1": "nucleus"}
    assert "not real patient data" in content["description"] and "(seed 0)" in content["description"]
    assert content["numTraining"] == 2
    assert content["training"][1] == {"image": "./imagesTr/cell_001.png", "label": "./labelsTr/cell_001.png"}


def test_deterministic(tmp_path: Path, dataset: Path) -> None:
    same = generate_cells_hard(tmp_path / "same", num_cases=NUM_CASES, image_size=SIZE, seed=0)
    files = sorted(p.relative_to(dataset.parent) for p in dataset.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(same.parent) for p in same.parent.rglob("*") if p.is_file())
    assert len(files) == 2 * NUM_CASES + 1
    for name in files:
        assert (dataset.parent / name).read_bytes() == (same.parent / name).read_bytes(), name
    other = _read(generate_cells_hard(tmp_path / "other", num_cases=1, image_size=SIZE, seed=1))
    assert not np.array_equal(other[0][0], _read(dataset)[0][0])


def test_masks_binary_and_non_empty(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, label in cases:
        assert image.shape == label.shape == (SIZE, SIZE) and image.dtype == label.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1}
        assert 0.03 < label.mean() < 0.5  # nuclei and background both present
        assert image.std() > 0


def test_illumination_field_spans_its_ratio() -> None:
    for index in range(NUM_CASES):
        field = demo._illumination(demo._case_rng(0, index), SIZE)
        ratio = field.max() / field.min()
        assert demo.CELLS_HARD_ILLUMINATION_RATIO[0] - 1e-9 <= ratio <= demo.CELLS_HARD_ILLUMINATION_RATIO[1] + 1e-9
        assert np.isclose(field.max(), 1.0)
        assert np.abs(np.diff(field, axis=0)).max() < 0.1 and np.abs(np.diff(field, axis=1)).max() < 0.1  # smooth


def test_uneven_illumination_in_the_images(
    cases: list[tuple[np.ndarray, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ratios = [_quadrant_background_ratio(image, label) for image, label in cases]
    assert min(ratios) > 1.2 and np.mean(ratios) > 1.35
    monkeypatch.setattr(demo, "CELLS_HARD_ILLUMINATION_RATIO", (1.0, 1.0))  # control: even illumination
    flat = [_quadrant_background_ratio(image, label) for image, label in _cases()]
    assert np.mean(flat) < 1.2 < np.mean(ratios)


def _merged_nuclei(cases: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> tuple[float, list[int]]:
    """Share of the nuclei whose mask component holds another nucleus centre too, and per image the most centres in
    one component. The centres are re-drawn from each case's generator (the nuclei are its first draws)."""
    merged, total, most = 0, 0, []
    for index, (_, label) in enumerate(cases):
        centres = np.array([c for c, _ in demo._cells_hard_nuclei(demo._case_rng(seed, index), label.shape[0])])
        components, _ = ndimage.label(label)
        ids = components[tuple(np.round(centres).astype(int).clip(0, label.shape[0] - 1).T)]
        assert (ids > 0).all()  # every centre lies in the mask: the re-drawn nuclei are the generated ones
        counts = np.bincount(ids)[1:]
        merged, total = merged + int(counts[counts >= 2].sum()), total + len(centres)
        most.append(int(counts.max()))
    return merged / total, most


def test_touching_nuclei(cases: list[tuple[np.ndarray, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    fraction, most = _merged_nuclei(cases)
    assert min(most) >= 3  # in every image some mask component merges three nuclei or more
    assert fraction > 0.55  # most nuclei touch another one
    monkeypatch.setattr(demo, "CELLS_HARD_CLUSTER_SPACING", (1.5, 2.0))  # control: cluster members kept apart
    assert _merged_nuclei(_cases())[0] < fraction - 0.2


def test_dim_and_bright_nuclei(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Mean intensity of each nucleus component over the median of a ring of background around it."""
    ratios = []
    for image, label in cases:
        components, count = ndimage.label(label)
        away = ~ndimage.binary_dilation(label.astype(bool), iterations=2)
        for index in range(1, count + 1):
            nucleus = components == index
            ring = ndimage.binary_dilation(nucleus, iterations=6) & away
            if ring.sum() >= 20:
                ratios.append(image[nucleus].mean() / max(np.median(image[ring]), 1))
    low, high = np.percentile(ratios, [10, 90])
    assert low < 1.6 and high > 3.0  # some barely above their local background, others several times brighter


def test_debris_not_in_the_mask(cases: list[tuple[np.ndarray, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    bright = [_bright_background_pixels(image, label) for image, label in cases]
    assert sum(b > 0 for b in bright) >= NUM_CASES // 2
    monkeypatch.setattr(demo, "CELLS_HARD_NUM_DEBRIS", (0, 0))  # control: no debris, no out-of-focus nuclei
    monkeypatch.setattr(demo, "CELLS_HARD_NUM_OUT_OF_FOCUS", (0, 0))
    assert sum(_bright_background_pixels(image, label) for image, label in _cases()) < sum(bright) / 10


@pytest.mark.parametrize("num_cases, size", [(1, 32), (3, 64)])
def test_small_sizes(tmp_path: Path, num_cases: int, size: int) -> None:
    cases = _read(generate_cells_hard(tmp_path, num_cases=num_cases, image_size=size, seed=3))
    assert len(cases) == num_cases
    for image, label in cases:
        assert image.shape == label.shape == (size, size)
        assert set(np.unique(label)) == {0, 1} and image.std() > 0


def test_no_cases_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_cases"):
        generate_cells_hard(tmp_path, num_cases=0)
