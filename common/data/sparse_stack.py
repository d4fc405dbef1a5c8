"""A synthetic 3D fluorescence-like stack whose object occupies a minority of its slices (issue 34).

Most slices of a microscopy or medical volume do not hold the target. :func:`sparse_stack` draws such a volume:
bright ellipsoidal "nuclei" in the middle slices only, the other slices background with noise and a slow
intensity drift (in-plane ramp and a rise along the stack), stored as a 16-bit NIfTI with its label map. A label-free
two-phase model that segments each slice on its own finds two phases in the object-free slices too (the drift and
the noise split in half); one that takes its statistics over the volume leaves them empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["sparse_stack"]


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
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
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
    affine = np.eye(4)
    image_path, label_path = out / "images" / "stack.nii.gz", out / "truth.nii.gz"
    nib.save(nib.Nifti1Image(image.transpose(1, 2, 0).astype(np.uint16), affine), image_path)
    nib.save(nib.Nifti1Image(label.transpose(1, 2, 0).astype(np.uint8), affine), label_path)
    return image_path, label_path
