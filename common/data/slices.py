"""3D-to-2D slice pipeline: normalise each volume once, slice it, filter slices, assign domains, write 2D files.

2D images go through the same path as one-slice volumes, so every training sample of every bundle is a
channel-first ``.npy`` array ``(C, H, W)`` (float32 image) with an optional ``(1, H, W)`` uint8 class map,
written once to disk: training never re-reads whole volumes.

Domains follow Vorontsov et al. (MedIA 2022): a slice is "present" when the target classes cover at least
``present_min_fraction`` of its foreground (and ``present_min_pixels`` pixels), "absent" when they are not in
it at all; slices in between are dropped. Unlabelled slices get the domain "unlabelled".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import NumpyReader
from monai.transforms import LoadImage, Resize

from common.transforms.intensity import NormaliseOverForeground
from common.transforms.validation import binary_255_to_indices, check_image, check_label

from .datalist import group_of
from .dicom import check_one_series, process_locale_kept


@dataclass
class SliceSettings:
    """How volumes become 2D samples.

    Args:
        axis: spatial axis (0, 1 or 2) of 3D volumes to slice along; ignored for 2D images.
        foreground_threshold: raw intensity above which a pixel (in any channel) is foreground, e.g. brain in MR;
            ``None``: every pixel is foreground.
        min_foreground_fraction: drop slices whose foreground covers less than this fraction of the slice
            (BraTS: 0.25 of a half-slice).
        target_labels: classes that make a slice "present"; ``None``: every non-zero class.
        present_min_fraction: target area / foreground area needed for "present" (BraTS: 0.01).
        present_min_pixels: target pixels needed for "present".
        domains: domains to keep among "present" and "absent".
        spatial_size: ``(H, W)`` every written 2D sample is resized to (image: area interpolation, label: nearest),
            e.g. ``(256, 256)`` for ISIC 2018 as in Dai, Zhu et al. (2022); ``None`` keeps the original size.
    """

    axis: int = 2
    foreground_threshold: float | None = None
    min_foreground_fraction: float = 0.0
    target_labels: Sequence[int] | None = None
    present_min_fraction: float = 0.0
    present_min_pixels: int = 1
    domains: Sequence[str] = ("present", "absent")
    spatial_size: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise ValueError(f"slicing axis must be 0, 1 or 2, got {self.axis}.")
        if self.spatial_size is not None and (
            len(self.spatial_size) != 2 or any(int(n) < 1 for n in self.spatial_size)
        ):
            raise ValueError(f"slicing spatial_size must be two positive sizes (H, W), got {self.spatial_size}.")
        unknown = set(self.domains) - {"present", "absent"}
        if unknown:
            raise ValueError(f"unknown slice domains {sorted(unknown)}; expected 'present' and/or 'absent'.")

    def domain_of(self, label: np.ndarray, foreground_area: int) -> str | None:
        """'present', 'absent' or ``None`` (dropped) for a label slice ``(H, W)``."""
        target = np.isin(label, self.target_labels) if self.target_labels is not None else label > 0
        area = int(target.sum())
        if area == 0:
            return "absent"
        if area >= self.present_min_pixels and area >= self.present_min_fraction * max(foreground_area, 1):
            return "present"
        return None


def has_volumes(items: Sequence[Mapping]) -> bool:
    """Whether ``items`` (slice pipeline items with ``source`` and ``slice``) hold several slices of one volume."""
    seen: dict[str, set] = {}
    for item in items:
        source = item.get("source")
        if source:
            seen.setdefault(str(source), set()).add(item.get("slice"))
            if len(seen[str(source)]) > 1:
                return True
    return False


def _loader(path: str) -> LoadImage:
    """MONAI's reader for ``path``: channel-first ``.npy`` arrays (as this pipeline writes them) or the defaults."""
    return _numpy_loader() if path.lower().endswith(".npy") else _default_loader()


@functools.cache
def _numpy_loader() -> LoadImage:
    return LoadImage(reader=NumpyReader(channel_dim=0), image_only=True, ensure_channel_first=True)


@functools.cache
def _default_loader() -> LoadImage:
    """One instance for every file: each ``LoadImage`` builds all of MONAI's readers, and building its DICOM reader
    logs "nvImageCodec is not available" every time on a machine without it."""
    return LoadImage(image_only=True, ensure_channel_first=True)


def load_array(path: str, what: str = "image") -> torch.Tensor:
    """Load ``path`` channel-first with MONAI, turning any reader failure into an error that names the file.

    ``path`` may be a folder holding one DICOM series (read as one volume by MONAI's ``ITKReader``); a folder of
    several series is refused, as MONAI would read only the first of them.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: {what} file not found.")
    try:
        with process_locale_kept():
            if Path(path).is_dir():
                check_one_series(path)
            return _loader(path)(path)
    except Exception as e:  # readers raise many types; all mean the same to the user
        raise ValueError(f"{path}: could not be read as an {what} ({type(e).__name__}: {e}).") from e


def write_samples(
    items: Sequence[Mapping],
    out_dir: str | os.PathLike,
    settings: SliceSettings,
    normalise: NormaliseOverForeground,
    num_channels: int | None = None,
    num_classes: int | None = None,
    label_scale: float = 1.0,
) -> list[dict]:
    """Normalise, slice, filter and write every item; return the datalist of the written 2D samples.

    Args:
        items: datalist items with absolute ``"image"`` and optional ``"label"`` paths, 2D ``(C, H, W)`` or 3D
            ``(C, H, W, D)`` after channel-first loading.
        out_dir: folder receiving ``<case>_<slice>_image.npy`` and ``..._label.npy``.
        settings: slicing, filters and domains.
        normalise: per-volume intensity normalisation, applied before slicing.
        num_channels: expected image channels (checked), or ``None``.
        num_classes: classes including background (label values checked), or ``None``.
        label_scale: label files are divided by this (ISIC masks are 0/255: 255).

    Returns:
        one dict per kept slice: ``image``, ``label`` (if labelled), ``source`` (original image), ``group``,
        ``slice`` (index along ``settings.axis``, 0 for 2D), ``domain``, ``foreground_fraction``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    for index, item in enumerate(items):
        image = load_array(item["image"], "image")
        check_image(image, num_channels, name=item["image"])
        label = None
        if "label" in item:
            label = load_array(item["label"], "label")
            if label_scale != 1.0:
                label = torch.round(label / label_scale)
            label = binary_255_to_indices(label, num_classes)
            check_label(label, image, num_classes)
        raw = image.as_tensor() if hasattr(image, "as_tensor") else image
        if settings.foreground_threshold is None:
            foreground = torch.ones(raw.shape[1:], dtype=torch.bool)
        else:
            foreground = (raw > settings.foreground_threshold).any(dim=0)
        normalised = torch.as_tensor(normalise(raw)).numpy().astype(np.float32)
        label_np = label.numpy().astype(np.uint8) if label is not None else None
        foreground_np = foreground.numpy()
        if normalised.ndim == 4:
            axis = settings.axis + 1
            slices = [
                (
                    k,
                    np.take(normalised, k, axis=axis),
                    None if label_np is None else np.take(label_np, k, axis=axis),
                    np.take(foreground_np, k, axis=settings.axis),
                )
                for k in range(normalised.shape[axis])
            ]
        elif normalised.ndim == 3:
            slices = [(0, normalised, label_np, foreground_np)]
        else:
            raise ValueError(f"{item['image']}: expected a 2D or 3D image, got shape {tuple(image.shape)}.")
        stem = f"{index:04d}_{_stem(item['image'])}"
        for k, img_slice, lbl_slice, fg_slice in slices:
            fg_area = int(fg_slice.sum())
            fg_fraction = fg_area / fg_slice.size
            if fg_fraction < settings.min_foreground_fraction:
                continue
            domain = "unlabelled" if lbl_slice is None else settings.domain_of(lbl_slice[0], fg_area)
            if domain is None or (lbl_slice is not None and domain not in settings.domains):
                continue
            if settings.spatial_size is not None:
                img_slice, lbl_slice = _resized(img_slice, lbl_slice, settings.spatial_size)
            record = {
                "image": str(out_dir / f"{stem}_{k:04d}_image.npy"),
                "source": item["image"],
                "group": group_of(item),
                "slice": k,
                "domain": domain,
                "foreground_fraction": round(fg_fraction, 4),
            }
            np.save(record["image"], np.ascontiguousarray(img_slice))
            if lbl_slice is not None:
                record["label"] = str(out_dir / f"{stem}_{k:04d}_label.npy")
                np.save(record["label"], np.ascontiguousarray(lbl_slice))
            samples.append(record)
    return samples


def _resized(
    image: np.ndarray, label: np.ndarray | None, spatial_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize a 2D sample: image ``(C, H, W)`` by area interpolation (anti-aliased), label ``(1, H, W)`` nearest."""
    size = tuple(int(n) for n in spatial_size)
    image = Resize(size, mode="area")(image).numpy().astype(np.float32)
    if label is not None:
        label = Resize(size, mode="nearest")(label).numpy().astype(np.uint8)
    return image, label


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".npy", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".mha", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
