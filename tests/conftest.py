"""Shared fixtures: tiny datasets in the MSD layout, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def write_volume_dataset(root: Path, num_cases: int = 6, shape=(16, 16, 8), seed: int = 0) -> Path:
    """Volumes with a zero background, a 'brain' box and, in even cases, a tumour cube (label 1) in slices 2-4."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(num_cases):
        image = np.zeros(shape, np.float32)
        image[2:-2, 2:-2, :] = 100 + rng.normal(0, 5, (shape[0] - 4, shape[1] - 4, shape[2]))
        label = np.zeros(shape, np.uint8)
        if i % 2 == 0:
            label[5:9, 5:9, 2:5] = 1
            image[label == 1] += 80
        nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 2.0, 1.0])), root / "labelsTr" / f"case_{i}.nii.gz")
        items.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(
        json.dumps({"name": "tiny", "labels": {"0": "bg", "1": "tumour"}, "training": items}), encoding="utf-8"
    )
    return root


@pytest.fixture
def volume_dataset(tmp_path: Path) -> Path:
    return write_volume_dataset(tmp_path / "tiny")
