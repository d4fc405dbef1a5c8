"""A synthetic 3D fluorescence-like stack whose object occupies a minority of its slices (issue 34).

Most slices of a microscopy or medical volume do not hold the target. :func:`sparse_stack` draws such a volume:
bright ellipsoidal "nuclei" in the middle slices only, the other slices background with noise and a slow
intensity drift (in-plane ramp and a rise along the stack), stored as a 16-bit NIfTI with its label map. A label-free
two-phase model that segments each slice on its own finds two phases in the object-free slices too (the drift and
the noise split in half); one that takes its statistics over the volume leaves them empty.

:func:`sparse_stack_msd` writes several such stacks (one seed each) as an MSD-layout folder, the ``sparse_stack`` task
of the label-efficiency benchmark (:mod:`common.benchmark.tasks`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from common.atomic_write import publish_folder

__all__ = ["sparse_stack", "sparse_stack_arrays", "sparse_stack_msd"]


def sparse_stack_arrays(
    size: int = 96, depth: int = 40, object_slices: int = 16, num_nuclei: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One stack as arrays: image ``(size, size, depth)`` uint16 and label ``(size, size, depth)`` uint8 (0/1),
    slices along the last axis (the layout :func:`sparse_stack` writes; see it for the content)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(depth), np.arange(size), np.arange(size), indexing="ij")
    first = (depth - object_slices) // 2
    label = np.zeros((depth, size, size), dtype=bool)
    for _ in range(num_nuclei):
        rz = object_slices / 4.0
        cz = rng.uniform(first + rz, first + object_slices - 1 - rz)
        cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
        r = rng.uniform(size * 0.08, size * 0.13)
        label |= ((zz - cz) / rz) ** 2 + ((yy - cy) / r) ** 2 + ((xx - cx) / r) ** 2 <= 1.0
    image = 0.2 + 0.12 * xx / size + 0.08 * zz / depth + 0.6 * label + 0.04 * rng.standard_normal(label.shape)
    image = np.clip(image, 0, None) * 4000
    return image.transpose(1, 2, 0).astype(np.uint16), label.transpose(1, 2, 0).astype(np.uint8)


def sparse_stack(
    out_dir: str | os.PathLike,
    size: int = 96,
    depth: int = 40,
    object_slices: int = 16,
    num_nuclei: int = 6,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``stack.nii.gz`` (uint16, ``(size, size, depth)``, slices along the last axis) and ``truth.nii.gz``.

    The nuclei (intensity +0.6 over a background near 0.2, Gaussian noise sigma 0.04) lie inside the middle
    ``object_slices`` slices; every other slice holds background only, with a drift of +0.12 across the image and
    +0.08 along the stack. ``out_dir/stack.nii.gz`` is the only file of ``out_dir/images/``; the label map is beside it
    (for evaluation only). Returns the two paths ``(image, label)``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    image, label = sparse_stack_arrays(size, depth, object_slices, num_nuclei, seed)
    image_path, label_path = out / "images" / "stack.nii.gz", out / "truth.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), image_path)
    nib.save(nib.Nifti1Image(label, np.eye(4)), label_path)
    return image_path, label_path


def sparse_stack_msd(
    out_dir: str | os.PathLike,
    num_volumes: int = 10,
    num_test: int = 3,
    size: int = 48,
    depth: int = 24,
    object_slices: int = 10,
    num_nuclei: int = 4,
) -> Path:
    """An MSD-layout folder of ``num_volumes`` stacks (:func:`sparse_stack_arrays`, volume ``i`` drawn with seed
    ``i``): ``imagesTr/stack_<i>.nii.gz`` (uint16 ``(size, size, depth)``), ``labelsTr/stack_<i>.nii.gz`` (uint8, 1 =
    nucleus) and ``dataset.json`` whose labelled ``test`` list holds the last ``num_test`` volumes and ``training`` the
    others (with their labels).

    Written once under ``out_dir/sparse_stack_<size>x<depth>_<hash of the settings>`` (to a temporary sibling, then
    renamed); a later call with the same settings returns that folder.
    """
    if not 0 < num_test < num_volumes:
        raise ValueError(f"num_test must lie in [1, num_volumes - 1], got {num_test} of {num_volumes}.")
    settings = {
        "num_volumes": num_volumes,
        "num_test": num_test,
        "size": size,
        "depth": depth,
        "object_slices": object_slices,
        "num_nuclei": num_nuclei,
    }
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    final = Path(out_dir) / f"sparse_stack_{size}x{depth}_{tag}"
    if (final / "dataset.json").is_file():
        return final
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "imagesTr").mkdir(parents=True)
        (tmp / "labelsTr").mkdir()
        items = []
        for i in range(num_volumes):
            image, label = sparse_stack_arrays(size, depth, object_slices, num_nuclei, seed=i)
            name = f"stack_{i:03d}.nii.gz"
            nib.save(nib.Nifti1Image(image, np.eye(4)), tmp / "imagesTr" / name)
            nib.save(nib.Nifti1Image(label, np.eye(4)), tmp / "labelsTr" / name)
            items.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        content = {
            "name": "sparse_stack",
            "description": "synthetic 3D stacks, nuclei in the middle slices only (common.data.sparse_stack)",
            "settings": settings,
            "labels": {"0": "background", "1": "nucleus"},
            "modality": {"0": "fluorescence"},
            "training": items[: num_volumes - num_test],
            "test": items[num_volumes - num_test :],
        }
        (tmp / "dataset.json").write_text(json.dumps(content, indent=1), encoding="utf-8")
        return publish_folder(tmp, final, "dataset.json")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
