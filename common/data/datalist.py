"""Datalists in the MSD ``dataset.json`` form, seeded splits by volume, and the labelled fraction.

A datalist is a list of dicts with at least ``"image"`` (a path) and, when labelled, ``"label"``. Items may carry
a ``"group"`` (e.g. a patient id); items of one group always land in the same split. Without a group, each
image is its own group (one volume = one group).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.atomic_write import write_json_atomic  # noqa: F401  (re-exported: common.data.write_json_atomic)

from .dicom import DICOM_DESCRIPTION, find_dicom_images

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
PLAIN_IMAGE_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".dcm")  # .dcm files are grouped into series


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file with errors that name it (missing file, invalid JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist file not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected an MSD-style dataset.json.") from e


def resolve_items(items: Sequence[Mapping], base_dir: str | os.PathLike, keys: Sequence[str] = ("image", "label")):
    """Copy ``items`` with the paths under ``keys`` made absolute relative to ``base_dir`` (MSD "./" form too)."""
    base = Path(base_dir)
    resolved = []
    for item in items:
        if isinstance(item, str):
            item = {"image": item}
        new = dict(item)
        for key in keys:
            if key in new and isinstance(new[key], str):
                p = Path(os.path.expanduser(new[key]))
                new[key] = str(p if p.is_absolute() else (base / p).resolve())
        resolved.append(new)
    return resolved


def read_datalist(path: str | os.PathLike) -> dict:
    """Read an MSD-style ``dataset.json``: a JSON object (``{"training": [...], ...}``), with errors that name it."""
    content = read_json(path)
    if not isinstance(content, dict):
        raise ValueError(
            f"{path}: expected a JSON object such as {{'training': [{{'image': ..., 'label': ...}}, ...]}} (an "
            f"MSD-style dataset.json), got a {type(content).__name__}."
        )
    return content


def load_datalist(path: str | os.PathLike, key: str, base_dir: str | os.PathLike | None = None) -> list[dict]:
    """Items under ``key`` of an MSD-style ``dataset.json``, paths made absolute (``[]`` if the key is absent).

    An item is an object with an ``"image"`` path and an optional ``"label"`` path, or an image path alone; anything
    else raises ``ValueError`` naming the file, the key and the item.
    """
    path = Path(path)
    content = read_datalist(path)
    items = content.get(key, [])
    if not isinstance(items, list):
        raise ValueError(
            f"{path}: '{key}' must be a list of {{'image': ..., 'label': ...}} items, got a {type(items).__name__}."
        )
    for index, item in enumerate(items):
        where = f"{path}: '{key}' item {index}"
        if isinstance(item, str):
            continue
        if not isinstance(item, dict):
            raise ValueError(
                f"{where} is {item!r} (type {type(item).__name__}); expected an object {{'image': ..., 'label': ...}} "
                "or an image path."
            )
        if "image" not in item:
            raise ValueError(f"{where} has no 'image' (its keys: {sorted(item)}); expected {{'image': ..., ...}}.")
        for field in ("image", "label"):
            if field in item and not isinstance(item[field], str):
                raise ValueError(
                    f"{where}: '{field}' is {item[field]!r}; expected one path (a string) to an image file or a "
                    "DICOM series folder."
                )
    return resolve_items(items, base_dir if base_dir is not None else path.parent)


def check_files_exist(items: Sequence[Mapping], keys: Sequence[str], source: str) -> None:
    """Raise ``FileNotFoundError`` naming the first missing file and the datalist (``source``) that lists it."""
    for item in items:
        for key in keys:
            if key in item and not Path(item[key]).exists():
                raise FileNotFoundError(f"{item[key]}: listed as '{key}' in {source} but not found.")


def group_of(item: Mapping) -> str:
    """The split unit of an item: its ``"group"`` if given, else its image path."""
    return str(item.get("group", item["image"]))


def split_by_group(items: Sequence[Mapping], fractions: Mapping[str, float], seed: int = 0) -> dict[str, list[dict]]:
    """Seeded split of ``items`` into named parts by group: no group (volume, patient) lands in two parts.

    Args:
        items: datalist items.
        fractions: part name -> fraction of the groups, e.g. ``{"validation": 0.15, "test": 0.2}``; the groups
            left over form the part ``"training"``. Each named part gets ``round(fraction * n)`` groups, at least
            one when its fraction is positive and at least two groups exist.
        seed: seed of the shuffle of the sorted group names.
    """
    groups = sorted({group_of(i) for i in items})
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    assignment: dict[str, str] = {}
    start = 0
    for name, fraction in fractions.items():
        count = int(round(fraction * len(groups)))
        if fraction > 0 and len(groups) > 1:
            count = max(count, 1)
        count = min(count, len(groups) - start - 1)
        for g in order[start : start + max(count, 0)]:
            assignment[g] = name
        start += max(count, 0)
    parts: dict[str, list[dict]] = {name: [] for name in ["training", *fractions]}
    for item in items:
        parts[assignment.get(group_of(item), "training")].append(dict(item))
    return parts


def select_labelled(items: Sequence[Mapping], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split training items into labelled and unlabelled parts at group (volume) level.

    ``ceil(fraction * n_groups)`` groups keep their labels; the others lose the ``"label"`` key. A fraction of 0
    gives no labelled item; methods that need labels check that themselves.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"labelled_fraction must be in [0, 1], got {fraction}.")
    groups = sorted({group_of(i) for i in items})
    rng = np.random.default_rng(seed)
    chosen = {groups[i] for i in rng.permutation(len(groups))[: math.ceil(fraction * len(groups))]}
    labelled = [dict(i) for i in items if group_of(i) in chosen]
    unlabelled = drop_labels([i for i in items if group_of(i) not in chosen])
    return labelled, unlabelled


def all_items(datalists: Mapping[str, object]) -> list[dict]:
    """The items of every list-valued split of ``datalists`` (e.g. :func:`common.data.prepare_datalists`), in order."""
    return [dict(item) for items in datalists.values() if isinstance(items, list) for item in items]


def drop_labels(items: Sequence[Mapping], label_keys: Sequence[str] = ("label",)) -> list[dict]:
    """Copies of ``items`` without their label keys (the label-free methods read no manual label in training)."""
    return [{k: v for k, v in item.items() if k not in label_keys} for item in items]


def list_images(folder: str | os.PathLike) -> list[dict]:
    """Datalist items ``{"image": path}`` for the images of ``folder``, sorted by path.

    Image files (by suffix, :data:`IMAGE_SUFFIXES`) are taken directly in ``folder``; DICOM is taken in ``folder`` and
    all its subfolders by the rules of :mod:`common.data.dicom`: a folder holding one series is one 3D image (the
    item's path is the folder), loose single-slice DICOM files are 2D images.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: no image found (the message names what ``folder`` holds and the formats looked for), or a folder
            mixes several DICOM series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: image folder not found (expected a folder of images or of {DICOM_DESCRIPTION})."
        )
    plain = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(PLAIN_IMAGE_SUFFIXES)]
    paths = sorted({str(p.resolve()) for p in plain} | set(find_dicom_images(folder)))
    if not paths:
        raise ValueError(
            f"{folder}: no image found; it holds {describe_folder(folder)}. Looked for image files in it "
            f"({', '.join(IMAGE_SUFFIXES)}) and for {DICOM_DESCRIPTION} in it and its subfolders."
        )
    return [{"image": p} for p in paths]


def describe_folder(folder: str | os.PathLike, limit: int = 5) -> str:
    """What ``folder`` holds, for error messages: ``"3 files (a.txt, b.txt, c.txt) and 1 subfolder (x)"``, at most
    ``limit`` names of each kind."""

    def named(paths: list[Path], kind: str) -> str:
        names = ", ".join(p.name for p in paths[:limit]) + (", ..." if len(paths) > limit else "")
        return f"{len(paths)} {kind}{'s' if len(paths) != 1 else ''}" + (f" ({names})" if paths else "")

    entries = sorted(Path(folder).iterdir())
    files, subfolders = [p for p in entries if p.is_file()], [p for p in entries if p.is_dir()]
    if not files and not subfolders:
        return "nothing (it is empty)"
    return f"{named(files, 'file')} and {named(subfolders, 'subfolder')}"
