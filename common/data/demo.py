"""Deterministic **synthetic** demo data sets, one per task family, written to disk in the MSD layout.

Every image and label produced here is drawn from a simple random geometric model: none of it is real patient data.
The generators write ordinary files (PNG, JPEG, NIfTI) plus a Medical Segmentation Decathlon style ``dataset.json``
whose ``training`` list holds ``{"image": "./...", "label": "./..."}`` paths relative to the data set folder, so
``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads a demo data set exactly like a user's.

Families (name in :data:`DEMO_TASKS` -> generator):

- ``cells``: 2D grey microscopy-like cells (:func:`generate_cells`).
- ``cells_hard``: 2D grey fluorescence-like nuclei, made hard on purpose (:func:`generate_cells_hard`).
- ``vessels``: 2D grey angiogram-like vessel trees (:func:`generate_vessels`).
- ``tumour``: 3D MR-like brains, two thirds of them with tumours (:func:`generate_tumour`).
- ``bone``: 3D bone-scan-like emission volumes with Poisson noise (:func:`generate_bone`).
- ``tubular``: 3D CT-like thorax with aorta and pulmonary artery (:func:`generate_tubular`).
- ``lesions``: 2D RGB dermoscopy-like skin lesions in the ISIC 2018 task 1 layout (:func:`generate_lesions`).

Every generator takes ``out_dir`` (the folder to write to, created if needed), ``num_cases`` (image/label pairs),
``image_size`` (the side of the square 2D images, or the in-plane size of the 3D volumes' first two axes in voxels),
``depth`` for the 3D families (slices along the last axis) and ``seed``, and returns the path of
``out_dir/dataset.json``.

Case ``i`` of a data set generated with seed ``s`` draws all its randomness from ``numpy.random.default_rng([s, i])``,
so the arrays depend only on ``(s, i)`` and the size arguments: the same seed gives identical arrays.
Seeds must be non-negative integers.

Example::

    from monai.data import load_decathlon_datalist
    from common.data.demo import ensure_demo_dataset

    datalist = load_decathlon_datalist(ensure_demo_dataset("tumour", "./data"), data_list_key="training")
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from common.atomic_write import save_png_atomic

__all__ = [
    "DEMO_TASKS",
    "ensure_demo_dataset",
    "generate_bone",
    "generate_cells",
    "generate_cells_hard",
    "generate_lesions",
    "generate_tubular",
    "generate_tumour",
    "generate_vessels",
]

_Case = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------------


def _case_rng(seed: int, index: int) -> np.random.Generator:
    """Independent random generator of case ``index`` of a data set generated with ``seed``."""
    return np.random.default_rng([seed, index])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field of the given shape with correlation length ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _ellipsoid_distance(shape: tuple[int, ...], centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Normalised axis-aligned ellipsoid distance: < 1 inside the ellipsoid, 1 on its surface."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi_axes)))


def _irregular_ellipse(
    rng: np.random.Generator, size: int, centre: np.ndarray, semi_axes: np.ndarray, roughness: float
) -> np.ndarray:
    """Normalised distance (< 1 inside) of a randomly rotated 2D ellipse whose boundary is perturbed by low harmonics.

    The boundary radius is multiplied by ``1 + sum_k a_k cos(k phi + p_k)`` for ``k = 2..5`` with ``a_k`` drawn
    uniformly from ``[0, roughness]``.
    """
    rows, cols = np.ogrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    d_row, d_col = rows - centre[0], cols - centre[1]
    u = (d_row * np.cos(angle) + d_col * np.sin(angle)) / semi_axes[0]
    v = (-d_row * np.sin(angle) + d_col * np.cos(angle)) / semi_axes[1]
    phi = np.arctan2(v, u)
    harmonics = np.arange(2, 6)[:, None, None]
    amplitudes = rng.uniform(0, roughness, (4, 1, 1))
    phases = rng.uniform(0, 2 * np.pi, (4, 1, 1))
    boundary = 1 + np.sum(amplitudes * np.cos(harmonics * phi + phases), axis=0)
    return np.sqrt(u**2 + v**2) / boundary


def _render_tubes(
    shape: tuple[int, ...], points: np.ndarray, radii: np.ndarray, sampling: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise tubes given by centreline samples ``points`` (N, ndim), in voxel coordinates, and radii ``radii`` (N,).

    ``sampling`` is the voxel size per axis in the unit of the radii (default 1: radii in voxels).

    Radii are rounded to multiples of 0.5 (minimum 0.5) and the tubes of each radius are drawn with one Euclidean
    distance transform, so the union of the tubes is exact up to the centreline rounding to the voxel grid.
    Samples outside the grid are dropped.

    Returns:
        ``inside``: boolean mask of the voxels within a tube radius of the centreline.
        ``thickness``: chord length ``2 sqrt((r + 0.5)^2 - d^2)`` through the tube at each voxel (0 away from the
        tubes; the 0.5 accounts for partial voluming), the largest over overlapping tubes.
    """
    index = np.round(points).astype(int)
    keep = np.all((index >= 0) & (index < np.array(shape)), axis=1)
    index, radii = index[keep], np.maximum(np.round(radii[keep] * 2) / 2, 0.5)
    inside = np.zeros(shape, bool)
    thickness = np.zeros(shape)
    for radius in np.unique(radii):
        centreline = np.ones(shape, bool)
        centreline[tuple(index[radii == radius].T)] = False
        distance = ndimage.distance_transform_edt(centreline, sampling=sampling)
        inside |= distance <= radius
        thickness = np.maximum(thickness, 2 * np.sqrt(np.clip((radius + 0.5) ** 2 - distance**2, 0, None)))
    return inside, thickness


def _polyline(vertices: np.ndarray, radii: np.ndarray, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Sample a polyline through ``vertices`` (M, ndim) every ``step`` voxels, interpolating ``radii`` (M,) linearly."""
    lengths = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    samples = np.linspace(0, arc[-1], max(int(arc[-1] / step), 1) + 1)
    points = np.stack([np.interp(samples, arc, vertices[:, k]) for k in range(vertices.shape[1])], axis=1)
    return points, np.interp(samples, arc, radii)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Map intensities in [0, 1] to uint8 (values outside are clipped)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    """``array`` as a viewer shows it, ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8, through the project's one PNG
    writer (:func:`common.atomic_write.save_png_atomic`, which takes MONAI's ``(C, W, H)`` reading of the file)."""
    pixels = array[..., None] if array.ndim == 2 else array
    save_png_atomic(path, np.ascontiguousarray(np.moveaxis(pixels, -1, 0).swapaxes(1, 2)))


def _save_jpeg(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, quality=95)


def _save_nifti(path: Path, array: np.ndarray) -> None:
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _write_dataset(
    out_dir: str | Path,
    cases: Iterable[_Case],
    files: tuple[str, str],
    savers: tuple[Callable[[Path, np.ndarray], None], Callable[[Path, np.ndarray], None]],
    header: dict,
) -> Path:
    """Write the ``(image, label)`` pairs of ``cases`` and an MSD ``dataset.json``; return the latter's path.

    Args:
        out_dir: data set folder, created if needed.
        cases: iterable of ``(image, label)`` arrays.
        files: image and label paths relative to ``out_dir``, formatted with the case index.
        savers: functions writing the image and the label array to a path.
        header: the ``dataset.json`` entries that precede ``numTraining`` and ``training``.
    """
    out_dir = Path(out_dir)
    training = []
    for index, arrays in enumerate(cases):
        entry = {}
        for key, pattern, array, save in zip(("image", "label"), files, arrays, savers):
            path = out_dir / pattern.format(index)
            path.parent.mkdir(parents=True, exist_ok=True)
            save(path, array)
            entry[key] = "./" + pattern.format(index)
        training.append(entry)
    if not training:
        raise ValueError("num_cases must be at least 1.")
    dataset_json = out_dir / "dataset.json"
    dataset_json.write_text(
        json.dumps({**header, "numTraining": len(training), "training": training}, indent=4), encoding="utf-8"
    )
    return dataset_json


def _header(name: str, what: str, seed: int, dims: str, modality: dict[str, str], labels: dict[str, str]) -> dict:
    return {
        "name": name,
        "description": f"Synthetic {what} generated by common.data.demo (seed {seed}); not real patient data.",
        "tensorImageSize": dims,
        "modality": modality,
        "labels": labels,
    }


# ---------------------------------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------------------------------


def _place_cells(rng: np.random.Generator, count: int, size: int) -> list[tuple[np.ndarray, float]]:
    """Random cell centres and equivalent radii; about a third of the cells are placed touching an earlier one."""
    cells: list[tuple[np.ndarray, float]] = []
    for _ in range(count):
        for _attempt in range(50):
            radius = size * rng.uniform(0.035, 0.075)
            if cells and rng.random() < 0.35:
                other_centre, other_radius = cells[rng.integers(len(cells))]
                angle = rng.uniform(0, 2 * np.pi)
                distance = (radius + other_radius) * rng.uniform(0.85, 1.0)
                centre = other_centre + distance * np.array([np.cos(angle), np.sin(angle)])
            else:
                centre = rng.uniform(0, size, 2)
            inside = np.all((centre >= radius / 2) & (centre < size - radius / 2))
            if inside and all(np.linalg.norm(centre - c) >= 0.8 * (radius + r) for c, r in cells):
                cells.append((centre, radius))
                break
    return cells


def _cells_case(rng: np.random.Generator, size: int) -> _Case:
    image = np.full((size, size), 0.25) + 0.03 * _smooth_noise(rng, (size, size), 3)
    label = np.zeros((size, size), bool)
    rim_sign = rng.choice([-1.0, 1.0])
    texture = 0.05 * _smooth_noise(rng, (size, size), 1.5)
    for centre, radius in _place_cells(rng, int(rng.integers(10, 31)), size):
        major = radius * rng.uniform(1.0, 1.4)
        distance = _irregular_ellipse(rng, size, centre, np.array([major, radius**2 / major]), 0.06)
        cell = distance < 1
        image[cell] = rng.uniform(0.5, 0.75) + texture[cell]
        image[cell & (distance > 0.75)] += rim_sign * rng.uniform(0.1, 0.2)
        if rng.random() < 0.7:
            offset = rng.normal(0, 0.15 * radius, 2)
            nucleus = _irregular_ellipse(rng, size, centre + offset, rng.uniform(0.3, 0.5, 2) * radius, 0.05) < 1
            image[nucleus & cell] -= rng.uniform(0.08, 0.15)
        label |= cell
    image *= np.clip(1 + 0.15 * _smooth_noise(rng, (size, size), size / 4), 0.6, 1.4)
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.04, (size, size))
    return _to_uint8(image), label.astype(np.uint8)


def generate_cells(out_dir: str | Path, num_cases: int = 24, image_size: int = 128, seed: int = 0) -> Path:
    """Generate a synthetic 2D microscopy-like cell segmentation data set (not real data).

    Each image holds 10-30 blob-like cells: ellipses of random size (equivalent radius 3.5-7.5 % of the image size),
    elongation and orientation with slightly irregular boundaries, about a third of them touching a neighbour, each
    with a brighter or darker rim (one rim polarity per image) and usually a darker nucleus, under a smooth
    multiplicative bias field, a Gaussian blur (sigma 1 px) and Gaussian noise (sd 0.04 of the range).

    Files: ``imagesTr/cell_XXX.png`` (grey uint8, ``image_size`` x ``image_size``, values 0-255) and
    ``labelsTr/cell_XXX.png`` (uint8; 0 = background, 1 = cell).

    Arguments and return value: see the module docstring.
    """
    return _write_dataset(
        out_dir,
        (_cells_case(_case_rng(seed, i), image_size) for i in range(num_cases)),
        ("imagesTr/cell_{:03d}.png", "labelsTr/cell_{:03d}.png"),
        (_save_png, _save_png),
        _header(
            "DemoCells", "2D microscopy-like cells", seed, "2D", {"0": "microscopy"}, {"0": "background", "1": "cell"}
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# cells_hard
# ---------------------------------------------------------------------------------------------------------------------

# Every property that makes ``cells_hard`` hard is one of the constants below. Sizes are given in pixels at
# ``CELLS_HARD_REFERENCE_SIZE`` (or as fractions of the image side) and scale with ``image_size``; ranges are
# ``(low, high)`` of a per-image or per-nucleus uniform draw (log-uniform where the docstring says so).

CELLS_HARD_REFERENCE_SIZE = 128
"""Image side at which the pixel sizes below (blur, debris, texture) are given; they scale with ``image_size``."""

CELLS_HARD_ILLUMINATION_RATIO = (2.0, 3.0)
"""Uneven illumination: max / min of the smooth multiplicative field over an image (per image). The field, a
tilted gradient plus a vignette plus a low-frequency random field, scales background and nuclei alike."""

CELLS_HARD_BACKGROUND = (0.08, 0.16)
"""Mean background level (before illumination, intensities in [0, 1]) per image."""

CELLS_HARD_BACKGROUND_TEXTURE = 0.15
"""Relative amplitude of the smooth background haze (correlation length 4 px)."""

CELLS_HARD_CONTRAST = (0.05, 1.0)
"""Dim and bright nuclei: brightness above the local background per nucleus, drawn log-uniformly, so some nuclei
are barely above the background and others close to saturation."""

CELLS_HARD_CHROMATIN = 0.25
"""Relative amplitude of the chromatin texture inside the nuclei (correlation length 1 px)."""

CELLS_HARD_RADIUS = (0.025, 0.06)
"""Varied sizes: equivalent nucleus radius as a fraction of the image side (per nucleus)."""

CELLS_HARD_ELONGATION = (1.0, 2.2)
"""Elongated shapes: major / minor axis ratio per nucleus."""

CELLS_HARD_NUM_CLUSTERS = (3, 6)
"""Touching and clustered nuclei: clusters per image (``integers(low, high + 1)``)."""

CELLS_HARD_CLUSTER_SIZE = (2, 6)
"""Nuclei per cluster (``integers(low, high + 1)``)."""

CELLS_HARD_CLUSTER_SPACING = (0.6, 0.95)
"""Centre distance of a clustered nucleus from the cluster member it is attached to, as a fraction of the sum of
their equivalent radii: below 1, so neighbours overlap or abut and their mask components merge."""

CELLS_HARD_NUM_ISOLATED = (3, 10)
"""Isolated nuclei per image (``integers(low, high + 1)``), kept apart from every other nucleus."""

CELLS_HARD_BLUR = (1.0, 1.8)
"""Optical PSF: sigma of the Gaussian blur in pixels at the reference size (per image)."""

CELLS_HARD_PHOTONS = (60.0, 400.0)
"""Poisson shot noise: expected photon count at intensity 1 (per image, log-uniform); fewer photons, more noise."""

CELLS_HARD_READ_NOISE = 0.02
"""Gaussian read noise: standard deviation (intensities in [0, 1])."""

CELLS_HARD_NUM_DEBRIS = (2, 12)
"""Bright debris that is not a nucleus (not in the mask): small sharp specks per image (``integers(low, high + 1)``),
as bright as the bright nuclei, so intensity alone does not separate nuclei from background."""

CELLS_HARD_DEBRIS_RADIUS = (0.6, 2.5)
"""Radius of a debris speck in pixels at the reference size; its brightness is 0.5-1 times the top nucleus
contrast."""

CELLS_HARD_NUM_OUT_OF_FOCUS = (2, 6)
"""Out-of-focus nuclei of another focal plane (not in the mask) per image (``integers(low, high + 1)``): large
blurred blobs, 1.5 times the size of a nucleus."""

CELLS_HARD_OUT_OF_FOCUS_CONTRAST = (0.05, 0.3)
"""Brightness above the background of an out-of-focus nucleus (before its blur of half its radius), in the range of
the dim nuclei."""


def _cells_hard_nuclei(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centres and ``(major, minor)`` semi-axes of the nuclei of a ``cells_hard`` image: clusters first, then isolated.

    A cluster grows from a seed nucleus in the central 70 % of the image (1.3 times the sum of the equivalent radii
    away from every earlier nucleus); each further nucleus is attached to a random earlier member at a centre distance
    of ``CELLS_HARD_CLUSTER_SPACING`` times the sum of their equivalent radii (and at least half that sum from any
    other nucleus). Isolated nuclei keep 1.3 times that sum from every other nucleus. Centres stay inside the image;
    a nucleus that finds no place in 30 attempts is skipped.
    """

    def draw_axes() -> tuple[float, np.ndarray]:
        radius = size * rng.uniform(*CELLS_HARD_RADIUS)
        elongation = rng.uniform(*CELLS_HARD_ELONGATION)
        return radius, radius * np.array([np.sqrt(elongation), 1 / np.sqrt(elongation)])

    def fits(centre: np.ndarray, radius: float, spacing: float) -> bool:
        inside = np.all((centre >= radius / 2) & (centre < size - radius / 2))
        return bool(inside) and all(np.linalg.norm(centre - c) >= spacing * (radius + r) for c, r in placed)

    placed: list[tuple[np.ndarray, float]] = []
    nuclei: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(rng.integers(CELLS_HARD_NUM_CLUSTERS[0], CELLS_HARD_NUM_CLUSTERS[1] + 1)):
        members: list[int] = []
        for _member in range(rng.integers(CELLS_HARD_CLUSTER_SIZE[0], CELLS_HARD_CLUSTER_SIZE[1] + 1)):
            for _attempt in range(30):
                radius, axes = draw_axes()
                if members:
                    anchor = members[rng.integers(len(members))]
                    angle = rng.uniform(0, 2 * np.pi)
                    distance = (radius + placed[anchor][1]) * rng.uniform(*CELLS_HARD_CLUSTER_SPACING)
                    centre = placed[anchor][0] + distance * np.array([np.cos(angle), np.sin(angle)])
                    ok = fits(centre, radius, 0.5)
                else:
                    centre = rng.uniform(0.15, 0.85, 2) * size
                    ok = fits(centre, radius, 1.3)
                if ok:
                    members.append(len(placed))
                    placed.append((centre, radius))
                    nuclei.append((centre, axes))
                    break
    for _ in range(rng.integers(CELLS_HARD_NUM_ISOLATED[0], CELLS_HARD_NUM_ISOLATED[1] + 1)):
        for _attempt in range(30):
            radius, axes = draw_axes()
            centre = rng.uniform(0, size, 2)
            if fits(centre, radius, 1.3):
                placed.append((centre, radius))
                nuclei.append((centre, axes))
                break
    return nuclei


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth multiplicative illumination field in ``[1 / ratio, 1]``, ``ratio`` from ``CELLS_HARD_ILLUMINATION_RATIO``.

    Its logarithm is a tilted gradient in a random direction plus an off-centre vignette plus a low-frequency random
    field (correlation length a third of the image), rescaled so that the field spans exactly ``ratio``.
    """
    rows, cols = np.mgrid[0:size, 0:size] / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    centre = rng.uniform(-0.25, 0.25, 2)
    log_field = (
        rng.uniform(0.5, 1.5) * (rows * np.cos(angle) + cols * np.sin(angle))
        - rng.uniform(0.5, 1.5) * ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
        + 0.1 * _smooth_noise(rng, (size, size), size / 3)
    )
    log_field = (log_field - log_field.min()) / (log_field.max() - log_field.min())
    return np.exp(np.log(rng.uniform(*CELLS_HARD_ILLUMINATION_RATIO)) * (log_field - 1))


def _cells_hard_case(rng: np.random.Generator, size: int) -> _Case:
    """One ``cells_hard`` image (uint8) and its nucleus mask (uint8, 0/1); see :func:`generate_cells_hard`.

    Intensities are built in [0, 1]: textured background plus nuclei (a dome of the nucleus' contrast times the
    chromatin texture; overlapping nuclei take the brighter value), out-of-focus blobs and debris, then multiplied by
    the illumination field, blurred by the PSF, turned into photon counts and given read noise.
    """
    shape = (size, size)
    scale = size / CELLS_HARD_REFERENCE_SIZE
    nuclei = _cells_hard_nuclei(rng, size)  # drawn first: tests re-draw the centres from the case's generator
    background = rng.uniform(*CELLS_HARD_BACKGROUND)
    image = background * (1 + CELLS_HARD_BACKGROUND_TEXTURE * _smooth_noise(rng, shape, 4 * scale))
    label = np.zeros(shape, bool)
    chromatin = 1 + CELLS_HARD_CHROMATIN * _smooth_noise(rng, shape, scale)
    signal = np.zeros(shape)
    for centre, axes in nuclei:
        distance = _irregular_ellipse(rng, size, centre, axes, 0.05)
        nucleus = distance < 1
        contrast = np.exp(rng.uniform(*np.log(CELLS_HARD_CONTRAST)))
        dome = contrast * (1 - 0.3 * distance**2) * chromatin
        signal = np.where(nucleus, np.maximum(signal, dome), signal)
        label |= nucleus
    for _ in range(rng.integers(CELLS_HARD_NUM_OUT_OF_FOCUS[0], CELLS_HARD_NUM_OUT_OF_FOCUS[1] + 1)):
        radius = size * rng.uniform(*CELLS_HARD_RADIUS) * 1.5
        blob = _ellipsoid_distance(shape, rng.uniform(0, size, 2), np.full(2, radius)) < 1
        signal += ndimage.gaussian_filter(blob * rng.uniform(*CELLS_HARD_OUT_OF_FOCUS_CONTRAST), radius / 2)
    debris = np.zeros(shape)
    for _ in range(rng.integers(CELLS_HARD_NUM_DEBRIS[0], CELLS_HARD_NUM_DEBRIS[1] + 1)):
        radius = scale * rng.uniform(*CELLS_HARD_DEBRIS_RADIUS)
        speck = _ellipsoid_distance(shape, rng.uniform(0, size, 2), np.full(2, radius)) < 1
        debris = np.maximum(debris, speck * rng.uniform(0.5, 1.0) * CELLS_HARD_CONTRAST[1])
    image = (image + signal + debris) * _illumination(rng, size)
    image = ndimage.gaussian_filter(image, scale * rng.uniform(*CELLS_HARD_BLUR))
    photons = np.exp(rng.uniform(*np.log(CELLS_HARD_PHOTONS)))
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons + rng.normal(0, CELLS_HARD_READ_NOISE, shape)
    return _to_uint8(image), label.astype(np.uint8)


def generate_cells_hard(out_dir: str | Path, num_cases: int = 48, image_size: int = 128, seed: int = 0) -> Path:
    """Generate a deliberately hard synthetic 2D fluorescence-microscopy-like nucleus data set (not real data).

    The label-scarce benchmark's hard 2D task (``cells`` stays the quick demo). Each image holds clusters of
    touching and overlapping nuclei (whose mask components merge) and isolated nuclei of varied size and elongation
    with chromatin texture, each with its own brightness, from barely above the background to near saturation,
    plus out-of-focus nuclei and bright debris specks that are not in the mask, all under a smooth illumination
    field varying by a factor 2-3 across the image, an optical blur and Poisson shot noise plus Gaussian read noise.
    The ``CELLS_HARD_*`` module constants set each of these properties.

    Tuned (48 cases of 128 px, seed 0) for the ``supervised_seg`` U-Net recipe at 300 optimiser steps (batch 8,
    channels 16-256, val/test fractions 0.15/0.2): over split seeds 0-2 the final model's mean test Dice is about
    0.68 with 4 labelled training images and 0.79 with all 31, and a per-image Otsu threshold reaches about 0.58.

    Files: ``imagesTr/cell_XXX.png`` (grey uint8, ``image_size`` x ``image_size``, values 0-255) and
    ``labelsTr/cell_XXX.png`` (uint8; 0 = background, 1 = nucleus), as for :func:`generate_cells`.

    Arguments and return value: see the module docstring.
    """
    return _write_dataset(
        out_dir,
        (_cells_hard_case(_case_rng(seed, i), image_size) for i in range(num_cases)),
        ("imagesTr/cell_{:03d}.png", "labelsTr/cell_{:03d}.png"),
        (_save_png, _save_png),
        _header(
            "DemoCellsHard",
            "2D fluorescence-microscopy-like nuclei (hard: uneven illumination, dim and touching nuclei, debris)",
            seed,
            "2D",
            {"0": "microscopy"},
            {"0": "background", "1": "nucleus"},
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# vessels
# ---------------------------------------------------------------------------------------------------------------------


def _vessel_tree(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples (N, 2) and radii (N,) of 2-3 recursively bifurcating vessel trees entering from the border.

    Segments curve smoothly (random-walk curvature), taper by 15 % along their length and split into two children
    of 60-85 % of their width until the width reaches 1 px; segments leaving the image end there.
    """
    stack = []
    for _ in range(rng.integers(2, 4)):
        side = rng.integers(4)
        along = rng.uniform(0.15, 0.85) * (size - 1)
        start = np.array([[0, along], [size - 1, along], [along, 0], [along, size - 1]][side], float)
        target = rng.uniform(0.3, 0.7, 2) * size
        stack.append((start, np.arctan2(*(target - start)), rng.uniform(4.0, 5.5), 0))
    points, radii = [], []
    while stack:
        start, angle, width, generation = stack.pop()
        steps = max(int(size * rng.uniform(0.1, 0.25) / 0.5), 2)
        curvature = rng.normal(0, 0.008) + np.cumsum(rng.normal(0, 0.0015, steps))
        angles = angle + np.cumsum(curvature)
        path = start + 0.5 * np.cumsum(np.stack([np.sin(angles), np.cos(angles)], axis=1), axis=0)
        widths = np.linspace(width, 0.85 * width, steps)
        outside = np.flatnonzero(np.any((path < 0) | (path > size - 1), axis=1))
        end = outside[0] if outside.size else steps
        points.append(path[:end])
        radii.append(widths[:end] / 2)
        if outside.size or widths[-1] <= 1.05 or generation >= 8:
            continue
        split = rng.uniform(0.3, 0.7) * rng.choice([-1, 1])
        for turn in (split, split - np.sign(split) * rng.uniform(0.6, 1.0)):
            stack.append((path[-1], angles[-1] + turn, max(widths[-1] * rng.uniform(0.6, 0.85), 1.0), generation + 1))
    return np.concatenate(points), np.concatenate(radii)


def _vessels_case(rng: np.random.Generator, size: int) -> _Case:
    shape = (size, size)
    background = 0.6 + 0.07 * _smooth_noise(rng, shape, size / 6) + 0.03 * _smooth_noise(rng, shape, 2)
    label, thickness = _render_tubes(shape, *_vessel_tree(rng, size))
    attenuation = rng.uniform(0.06, 0.09) * np.clip(1 + 0.3 * _smooth_noise(rng, shape, 8), 0.3, 1.7)
    image = background * np.exp(-attenuation * thickness)
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 0.025, shape)
    return _to_uint8(image), label.astype(np.uint8)


def generate_vessels(out_dir: str | Path, num_cases: int = 24, image_size: int = 128, seed: int = 0) -> Path:
    """Generate a synthetic 2D angiogram-like vessel segmentation data set (not real data).

    Each image holds 2-3 vessel trees entering from the border that bifurcate recursively, their width tapering
    from 4-5.5 px to 1 px, with smooth curvature. Vessels are darker than a textured background (low-frequency
    texture plus fine texture) by X-ray-like attenuation ``exp(-mu * chord length)`` with a spatially varying
    ``mu``, then blurred (sigma 0.7 px) with Gaussian noise (sd 0.025 of the range), so thin branches are faint and
    a Hessian (Frangi) filter misses some of them.

    Files: ``imagesTr/vessel_XXX.png`` (grey uint8, ``image_size`` x ``image_size``, values 0-255) and
    ``labelsTr/vessel_XXX.png`` (uint8; 0 = background, 1 = vessel).

    Arguments and return value: see the module docstring.
    """
    return _write_dataset(
        out_dir,
        (_vessels_case(_case_rng(seed, i), image_size) for i in range(num_cases)),
        ("imagesTr/vessel_{:03d}.png", "labelsTr/vessel_{:03d}.png"),
        (_save_png, _save_png),
        _header(
            "DemoVessels",
            "2D angiogram-like vessel trees",
            seed,
            "2D",
            {"0": "X-ray"},
            {"0": "background", "1": "vessel"},
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# tumour
# ---------------------------------------------------------------------------------------------------------------------


def _tumour_case(rng: np.random.Generator, size: int, depth: int, has_tumour: bool) -> _Case:
    shape = (size, size, depth)
    extent = np.array(shape, float)
    centre = extent / 2 + rng.normal(0, 0.02, 3) * extent
    semi_axes = extent * rng.uniform([0.36, 0.40, 0.38], [0.42, 0.46, 0.44])
    brain_distance = _ellipsoid_distance(shape, centre, semi_axes) * (1 + 0.03 * _smooth_noise(rng, shape, 3))
    brain = brain_distance < 1
    image = np.where(brain_distance > 0.82, 0.7, 0.55) + 0.04 * _smooth_noise(rng, shape, 1.5)
    for side in (-1, 1):
        ventricle_centre = centre + np.array([side * 0.07, rng.uniform(-0.03, 0.03), 0.05]) * extent
        ventricle_axes = np.array([0.05, 0.17, 0.17]) * extent * rng.uniform(0.8, 1.2, 3)
        image[_ellipsoid_distance(shape, ventricle_centre, ventricle_axes) < 1] = 0.15
    label = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 3) if has_tumour else 0):
        radius = rng.uniform(4, 12)
        radii = np.array([radius, radius, min(radius, 0.45 * semi_axes[2])]) * rng.uniform(0.8, 1.2, 3)
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * rng.uniform() ** (1 / 3)
        tumour_centre = centre + offset * np.maximum(semi_axes - radii, 1)
        distance = _ellipsoid_distance(shape, tumour_centre, radii) * (1 + 0.15 * _smooth_noise(rng, shape, 3))
        tumour = (distance < 1) & brain
        image += 0.15 * np.clip((1.6 - distance) / 0.6, 0, 1) * ~tumour
        image[tumour] = 0.9 + 0.08 * _smooth_noise(rng, shape, 1.5)[tumour]
        if rng.random() < 0.5:
            image[tumour & (distance < rng.uniform(0.3, 0.5))] = 0.4
        label |= tumour
    image = ndimage.gaussian_filter(image, 0.5) * (1 + 0.08 * _smooth_noise(rng, shape, size / 3))
    image = np.hypot(image + rng.normal(0, 0.03, shape), rng.normal(0, 0.03, shape)) * rng.uniform(500, 1500)
    return np.where(brain, image, 0).astype(np.float32), label.astype(np.uint8)


def generate_tumour(
    out_dir: str | Path, num_cases: int = 12, image_size: int = 64, depth: int = 32, seed: int = 0
) -> Path:
    """Generate a synthetic 3D MR (FLAIR-like) brain tumour segmentation data set (not real data).

    Each volume holds an ellipsoidal "brain" (zero outside, as in skull-stripped data) of textured tissue with a
    brighter cortex-like rim and two dark ventricle-like ellipsoids. Cases ``i`` with ``i % 3 != 2`` (two thirds)
    contain 1-2 brighter, irregular tumour blobs (radius 4-12 voxels in-plane, sometimes with a dark necrotic core,
    surrounded by an unlabelled bright oedema-like halo); the others are tumour-free, so the axial slices (last axis)
    split into tumour-present and tumour-absent slices. Intensities have a smooth bias field, Rician noise and a
    per-case gain: non-negative float32 values in arbitrary MR units, roughly 0-2000.

    Files: ``imagesTr/tumour_XXX.nii.gz`` (float32, shape ``(image_size, image_size, depth)``, identity affine, 1 mm
    voxels) and ``labelsTr/tumour_XXX.nii.gz`` (uint8, same shape; 0 = background, 1 = tumour).

    Arguments and return value: see the module docstring (``depth``: axial slices, the last axis).
    """
    return _write_dataset(
        out_dir,
        (_tumour_case(_case_rng(seed, i), image_size, depth, i % 3 != 2) for i in range(num_cases)),
        ("imagesTr/tumour_{:03d}.nii.gz", "labelsTr/tumour_{:03d}.nii.gz"),
        (_save_nifti, _save_nifti),
        _header(
            "DemoTumour", "3D MR-like brain tumours", seed, "3D", {"0": "FLAIR"}, {"0": "background", "1": "tumour"}
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# bone
# ---------------------------------------------------------------------------------------------------------------------

BONE_REFERENCE_SIZE = 48
"""In-plane size at which the bone radii, the hot spots and the blur below are given in voxels; at another
``image_size`` they scale in-plane with it (same anatomy and resolution at a finer pixel grid)."""


def _rib_and_pelvis_centrelines(
    rng: np.random.Generator, size: int, depth: int, body_centre: np.ndarray, body_axes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples and radii of rib pairs (curved tubes) in the upper half and a pelvis-like ring at the base."""
    points, radii = [], []
    psi = np.linspace(0.3, 2.5, 4 * size)
    for rib_z in np.arange(0.5, 0.97, rng.uniform(0.1, 0.13)) * depth:
        for side in (-1, 1):
            x = body_centre[0] + side * 0.85 * body_axes[0] * np.sin(psi)
            y = body_centre[1] + 0.8 * body_axes[1] * np.cos(psi)
            z = rib_z - 0.12 * depth * (psi - psi[0]) / (psi[-1] - psi[0])
            points.append(np.stack([x, y, z], axis=1))
            radii.append(np.full(psi.size, rng.uniform(0.8, 1.2)))
    phi = np.linspace(0, 2 * np.pi, 8 * size)
    ring_z = rng.uniform(0.08, 0.12) * depth
    ring = [
        body_centre[0] + 0.6 * body_axes[0] * np.cos(phi),
        body_centre[1] + 0.1 * body_axes[1] + 0.5 * body_axes[1] * np.sin(phi),
        ring_z + 0.04 * depth * np.sin(phi),
    ]
    points.append(np.stack(ring, axis=1))
    radii.append(np.full(phi.size, rng.uniform(1.5, 2.0)))
    return np.concatenate(points), np.concatenate(radii)


def _bone_case(rng: np.random.Generator, size: int, depth: int) -> _Case:
    shape = (size, size, depth)
    scale = size / BONE_REFERENCE_SIZE  # in-plane voxels per voxel of a 48-px slice
    body_centre = np.array([size / 2, size / 2]) + rng.normal(0, 0.02 * size, 2)
    body_axes = np.array([0.42, 0.3]) * size * rng.uniform(0.9, 1.05, 2)
    body = _ellipsoid_distance(shape[:2], body_centre, body_axes)[..., None] < 1
    centrelines = _rib_and_pelvis_centrelines(rng, size, depth, body_centre, body_axes)
    skeleton, _ = _render_tubes(shape, *centrelines, sampling=(1 / scale, 1 / scale, 1))
    spacing = rng.uniform(3.0, 3.6)
    spine_xy = body_centre + np.array([0, 0.6 * body_axes[1]])
    for z in np.arange(rng.uniform(0, spacing), depth, spacing):
        vertebra_axes = np.array([0.07 * size, 0.06 * size, 0.38 * spacing])
        skeleton |= _ellipsoid_distance(shape, np.array([*spine_xy, z]), vertebra_axes) < 1
    activity = np.where(body, 0.12, 0.0) + skeleton * (1 + 0.15 * _smooth_noise(rng, shape, 2))
    for _ in range(rng.integers(0, 4)):
        hot_spot = np.argwhere(skeleton)[rng.integers(skeleton.sum())]
        hot_spot_radii = np.array([1.5 * scale, 1.5 * scale, 1.5])
        activity[(_ellipsoid_distance(shape, hot_spot, hot_spot_radii) < 1) & skeleton] *= 2.0
    bladder = np.array([*body_centre, 0.1 * depth + 2])
    activity[_ellipsoid_distance(shape, bladder, np.array([0.08, 0.07, 0.08]) * size) < 1] = rng.uniform(2, 4)
    for side in (-1, 1):
        kidney = np.array([*(body_centre + np.array([side * 0.45 * body_axes[0], 0.3 * body_axes[1]])), 0.45 * depth])
        activity[_ellipsoid_distance(shape, kidney, np.array([0.05, 0.04, 0.12]) * size) < 1] += 0.3
    counts_per_unit = 30 * 2 ** rng.uniform(0, 2)
    blur = rng.uniform(1.0, 1.5)
    expected = ndimage.gaussian_filter(activity, (blur * scale, blur * scale, blur)) * counts_per_unit
    return rng.poisson(expected).astype(np.float32), skeleton.astype(np.uint8)


def generate_bone(
    out_dir: str | Path, num_cases: int = 12, image_size: int = 64, depth: int = 32, seed: int = 0
) -> Path:
    """Generate a synthetic 3D bone-scan-like (SPECT) skeleton segmentation data set (not real data).

    Each volume is an emission activity map: a spine column of vertebra blobs along the depth axis, rib pairs as
    curved tubes in the upper half, and a pelvis-like ring at the low-depth end (uptake about 1, with texture and
    0-3 doubled hot spots), inside a soft-tissue body ellipse of low uptake (0.12), with a hot bladder and faint
    kidneys (not bone). The activity is blurred (Gaussian sigma 1-1.5 voxels) and Poisson-sampled with 30-120 counts
    per unit uptake, a level drawn per case (factor 4), so the noise differs between cases. Values are counts:
    non-negative integer-valued float32. Rib radii (0.8-1.2 voxels), pelvis radii (1.5-2), hot spots and the blur
    are given for 48-px slices (:data:`BONE_REFERENCE_SIZE`) and scale in-plane with ``image_size / 48``, as the body
    does: a larger ``image_size`` is the same anatomy on a finer grid (the paper's slices are 192 x 192).

    Files: ``imagesTr/bone_XXX.nii.gz`` (float32, shape ``(image_size, image_size, depth)``, identity affine, 1 mm
    voxels) and ``labelsTr/bone_XXX.nii.gz`` (uint8, same shape; 0 = background, 1 = bone, i.e. the skeletal
    structures before blurring).

    Arguments and return value: see the module docstring (``depth``: slices along the body axis, the last axis).
    """
    return _write_dataset(
        out_dir,
        (_bone_case(_case_rng(seed, i), image_size, depth) for i in range(num_cases)),
        ("imagesTr/bone_{:03d}.nii.gz", "labelsTr/bone_{:03d}.nii.gz"),
        (_save_nifti, _save_nifti),
        _header(
            "DemoBone",
            "3D bone-scan-like volumes",
            seed,
            "3D",
            {"0": "bone scintigraphy"},
            {"0": "background", "1": "bone"},
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# tubular
# ---------------------------------------------------------------------------------------------------------------------


def _great_vessels(rng: np.random.Generator, size: int, depth: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Centreline samples and radii of the aorta (index 0) and the pulmonary artery tree (index 1), in voxels.

    Axes: x (0) right to left, y (1) anterior to posterior, z (2) inferior to superior, in fractions of the volume.
    """
    scale = np.array([size, size, depth], float)

    def vertex(x: float, y: float, z: float) -> np.ndarray:
        return (np.array([0.5 + x, 0.5 + y, z]) + rng.normal(0, 0.015, 3)) * scale

    aorta_radius = 0.07 * size * rng.uniform(0.9, 1.1)
    ascending, descending = vertex(-0.03, -0.08, 0.3), vertex(0.08, 0.15, -0.2)
    arch_base, arch_height = 0.72, rng.uniform(0.1, 0.14)
    t = np.linspace(0, np.pi, 16)[:, None]
    arch = ascending + (descending - ascending) * (1 - np.cos(t)) / 2
    arch[:, 2] = (arch_base + arch_height * np.sin(t[:, 0])) * depth
    aorta = np.concatenate([ascending[None], arch, descending[None]])
    aorta_points, aorta_radii = _polyline(aorta, np.full(len(aorta), aorta_radius))

    trunk_radius = 0.05 * size * rng.uniform(0.9, 1.1)
    bifurcation = vertex(0.06, 0.02, 0.55)
    trunk = _polyline(np.stack([vertex(0.14, -0.16, 0.3), bifurcation]), np.full(2, trunk_radius))
    branches = [trunk]
    for side, reach in ((-1, 0.2), (1, 0.22)):
        hilum = vertex(side * reach, 0.05 if side < 0 else 0.0, 0.5)
        branches.append(_polyline(np.stack([bifurcation, hilum]), np.array([0.8, 0.7]) * trunk_radius))
        for lobe_z, lobe_y in ((0.88, -0.02), (0.08, 0.08)):
            lobe = vertex(side * (reach + 0.03), lobe_y, lobe_z)
            branches.append(_polyline(np.stack([hilum, lobe]), np.array([0.6, 0.45]) * trunk_radius))
    pulmonary_points = np.concatenate([p for p, _ in branches])
    pulmonary_radii = np.concatenate([r for _, r in branches])
    return [aorta_points, pulmonary_points], [aorta_radii, pulmonary_radii]


def _tubular_case(rng: np.random.Generator, size: int, depth: int) -> _Case:
    shape = (size, size, depth)
    body_axes = np.array([0.44, 0.32]) * size * rng.uniform(0.92, 1.05, 2)
    body_distance = np.broadcast_to(_ellipsoid_distance(shape[:2], np.full(2, size / 2), body_axes)[..., None], shape)
    image = np.where(body_distance < 1, 40 + 10 * _smooth_noise(rng, shape, 2), -1000.0)
    image[(body_distance >= 0.88) & (body_distance < 1)] = -100
    for side in (-1, 1):
        lung_centre = np.array([0.5 + side * 0.22, 0.52, 0.55]) * np.array([size, size, depth])
        lung_axes = np.array([0.14 * size, 0.22 * size, 0.6 * depth]) * rng.uniform(0.92, 1.05, 3)
        lung = _ellipsoid_distance(shape, lung_centre, lung_axes) < 1
        image[lung] = -850 + 40 * _smooth_noise(rng, shape, 1.5)[lung]
    spine = _ellipsoid_distance(shape[:2], np.array([0.5, 0.76]) * size, np.full(2, 0.07 * size)) < 1
    image[np.broadcast_to(spine[..., None], shape)] = rng.uniform(400, 600)
    label = np.zeros(shape, np.uint8)
    for value, hounsfield, points, radii in zip((1, 2), (300, 250), *_great_vessels(rng, size, depth)):
        tube, _ = _render_tubes(shape, points, radii)
        image[tube] = hounsfield + rng.uniform(-30, 30)
        label[tube] = value
    image = ndimage.gaussian_filter(image, 0.6) + rng.normal(0, 20, shape)
    return np.clip(image, -1024, 3071).astype(np.float32), label


def generate_tubular(
    out_dir: str | Path, num_cases: int = 12, image_size: int = 64, depth: int = 32, seed: int = 0
) -> Path:
    """Generate a synthetic 3D contrast-enhanced CT-like thorax data set: aorta and pulmonary artery (not real data).

    Each volume (Hounsfield-like units: -1000 outside the body, soft tissue about 40 with a -100 fat layer, lungs
    about -850, a spine column of 400-600) holds an aorta-like tube (about 300 HU, radius about 7 % of
    ``image_size``) running along the depth axis, ascending anteriorly and descending posteriorly, joined by an arch
    near the top slices, and a thinner pulmonary-artery-like tree (about 250 HU) whose trunk splits into left and
    right branches that run to the lungs and on into upper and lower lobe branches, so both structures appear in most
    axial slices (last axis, low index = inferior). Blurred (sigma 0.6 voxel) with Gaussian noise (sd 20 HU); float32
    values clipped to [-1024, 3071].

    Files: ``imagesTr/tubular_XXX.nii.gz`` (float32, shape ``(image_size, image_size, depth)``, identity affine, 1 mm
    voxels) and ``labelsTr/tubular_XXX.nii.gz`` (uint8, same shape; 0 = background, 1 = aorta, 2 = pulmonary artery).

    Arguments and return value: see the module docstring (``depth``: axial slices, the last axis).
    """
    return _write_dataset(
        out_dir,
        (_tubular_case(_case_rng(seed, i), image_size, depth) for i in range(num_cases)),
        ("imagesTr/tubular_{:03d}.nii.gz", "labelsTr/tubular_{:03d}.nii.gz"),
        (_save_nifti, _save_nifti),
        _header(
            "DemoTubular",
            "3D CT-like thoracic great vessels",
            seed,
            "3D",
            {"0": "CT"},
            {"0": "background", "1": "aorta", "2": "pulmonary artery"},
        ),
    )


# ---------------------------------------------------------------------------------------------------------------------
# lesions
# ---------------------------------------------------------------------------------------------------------------------


def _hairs(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples and radii of 0-6 hair-like quadratic Bezier curves crossing the image."""
    points, radii = [np.empty((0, 2))], [np.empty(0)]
    t = np.linspace(0, 1, 4 * size)[:, None]
    for _ in range(rng.integers(0, 7)):
        start, control, end = rng.uniform(-0.2, 1.2, (3, 2)) * size
        points.append((1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end)
        radii.append(np.full(t.size, rng.uniform(0.5, 1.0)))
    return np.concatenate(points), np.concatenate(radii)


def _lesions_case(rng: np.random.Generator, size: int) -> _Case:
    shape = (size, size)
    skin = rng.uniform([200, 150, 120], [235, 185, 160])[:, None, None] / 255
    radial = _ellipsoid_distance(shape, np.full(2, (size - 1) / 2), np.full(2, size / np.sqrt(2)))
    shading = (1 + 0.05 * _smooth_noise(rng, shape, size / 10) + 0.03 * _smooth_noise(rng, shape, 1.5)) * (
        1 - 0.35 * radial**4
    )
    centre = size / 2 + rng.normal(0, 0.06 * size, 2)
    semi_axes = size * rng.uniform(0.15, 0.3) * rng.uniform(0.75, 1.25, 2)
    distance = _irregular_ellipse(rng, size, centre, semi_axes, 0.1) * (1 + 0.06 * _smooth_noise(rng, shape, 4))
    alpha = 1 / (1 + np.exp((distance - 1) / rng.uniform(0.04, 0.12)))
    mix = np.clip(0.5 + 0.25 * _smooth_noise(rng, shape, 5) + 0.3 * (1 - distance), 0, 1)
    dark, light = rng.uniform([70, 40, 25], [110, 70, 45]) / 255, rng.uniform([150, 95, 60], [190, 130, 90]) / 255
    lesion = mix * dark[:, None, None] + (1 - mix) * light[:, None, None]
    image = ((1 - alpha) * skin + alpha * lesion) * shading
    _, hair = _render_tubes(shape, *_hairs(rng, size))
    hair_alpha = 0.85 * np.clip(hair / 2, 0, 1)
    image = (1 - hair_alpha) * image + hair_alpha * (rng.uniform(30, 70) / 255)
    image = ndimage.gaussian_filter(image, (0, 0.6, 0.6)) + rng.normal(0, 0.012, image.shape)
    return _to_uint8(image.transpose(1, 2, 0)), np.where(distance < 1, 255, 0).astype(np.uint8)


def generate_lesions(out_dir: str | Path, num_cases: int = 24, image_size: int = 128, seed: int = 0) -> Path:
    """Generate a synthetic 2D dermoscopy-like skin lesion data set in the ISIC 2018 task 1 layout (not real data).

    Each RGB image shows textured skin of a random tone with vignetting, one irregular brown lesion of varying colour
    (darker towards its centre) with a fuzzy border, and 0-6 dark hair-like curves crossing it, lightly blurred with
    Gaussian noise.

    Files: ``ISIC2018_Task1-2_Training_Input/ISIC_XXXXXXX.jpg`` (RGB uint8 JPEG, quality 95, ``image_size`` x
    ``image_size``) and ``ISIC2018_Task1_Training_GroundTruth/ISIC_XXXXXXX_segmentation.png`` (uint8; 0 = background,
    255 = lesion, as in ISIC). The ``dataset.json`` therefore has ``"labels": {"0": "background", "255": "lesion"}``
    and ``"label_scale": 255``: a loader divides the masks by 255 to get a 0/1 label.

    Arguments and return value: see the module docstring.
    """
    header = _header(
        "DemoLesions",
        "2D dermoscopy-like skin lesions (ISIC 2018 task 1 layout)",
        seed,
        "2D",
        {"0": "R", "1": "G", "2": "B"},
        {"0": "background", "255": "lesion"},
    )
    return _write_dataset(
        out_dir,
        (_lesions_case(_case_rng(seed, i), image_size) for i in range(num_cases)),
        (
            "ISIC2018_Task1-2_Training_Input/ISIC_{:07d}.jpg",
            "ISIC2018_Task1_Training_GroundTruth/ISIC_{:07d}_segmentation.png",
        ),
        (_save_jpeg, _save_png),
        {**header, "label_scale": 255},
    )


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------

DEMO_TASKS: dict[str, Callable[..., Path]] = {
    "cells": generate_cells,
    "cells_hard": generate_cells_hard,
    "vessels": generate_vessels,
    "tumour": generate_tumour,
    "bone": generate_bone,
    "tubular": generate_tubular,
    "lesions": generate_lesions,
}
"""Demo task name -> generator ``f(out_dir, num_cases=..., ..., seed=...) -> Path`` of the written ``dataset.json``."""


def ensure_demo_dataset(task: str, root: str | Path, seed: int = 0, **kwargs) -> Path:
    """Return ``root/<task>/dataset.json``, generating the synthetic demo data set first if it is absent.

    Generation goes into a temporary sibling folder ``root/.<task>.tmp-<pid>`` that is renamed to ``root/<task>``
    only once complete and removed on any error, so no half-written data set is ever left behind. An existing data
    set is returned as is, whatever ``seed`` and ``kwargs`` it was generated with.

    Args:
        task: a key of :data:`DEMO_TASKS`.
        root: folder holding the demo data sets (created if needed).
        seed: non-negative random seed passed to the generator.
        kwargs: further generator arguments (e.g. ``num_cases``, ``image_size``); the generator's defaults otherwise.

    Raises:
        ValueError: if ``task`` is not a key of :data:`DEMO_TASKS`.
        FileExistsError: if ``root/<task>`` exists but holds no ``dataset.json``.
    """
    if task not in DEMO_TASKS:
        raise ValueError(f"Unknown demo task {task!r}; available tasks: {', '.join(DEMO_TASKS)}.")
    target = Path(root) / task
    dataset_json = target / "dataset.json"
    if dataset_json.is_file():
        return dataset_json
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists but holds no dataset.json; remove it to generate the demo data set.")
    tmp = Path(root) / f".{task}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        DEMO_TASKS[task](tmp, seed=seed, **kwargs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.replace(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dataset_json.is_file():  # otherwise a concurrent process has just generated it
            raise
    return dataset_json
