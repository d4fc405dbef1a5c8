"""One call that turns a dataset folder (or the embedded demo data) into prepared 2D datalists for a bundle.

Used by every bundle's configs as ``$common.data.prepare_datalists(...)``:

1. only ``unlabeled_dir`` (no ``dataset_dir``, no ``datalist_file``): the label-free path; the images of that
   folder are the unlabelled split, nothing else (no demo data, no label);
2. neither: the demo task is generated (once) under ``work_dir/demo_data``;
3. the MSD-style ``dataset.json`` is read; its ``"training"`` items are all labelled, or all unlabelled (the
   label-free path again, with its ``"validation"``/``"test"`` items, if labelled, for evaluation only);
   ``"validation"``/``"test"`` lists are used when given, otherwise the labelled items are split by volume;
4. the training split keeps labels on ``labelled_fraction`` of its volumes; the rest, plus any ``"unlabeled"``
   list and the images of ``unlabeled_dir``, form the unlabelled split, of which ``monitor_fraction`` of the
   volumes is held out as the ``"monitor"`` split (label-free monitoring of training);
5. every split goes through the slice pipeline once; the result is cached under ``work_dir/prepared/<hash>``
   (written to a temporary folder and renamed when complete, so a failure leaves nothing behind).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.atomic_write import publish_folder
from common.transforms.intensity import NormaliseOverForeground

from .datalist import (
    check_files_exist,
    list_images,
    load_datalist,
    read_datalist,
    read_json,
    select_labelled,
    split_by_group,
    write_json_atomic,
)
from .demo import ensure_demo_dataset
from .slices import SliceSettings, write_samples

SPLITS = ("training", "validation", "test", "unlabeled", "monitor")


def prepare_datalists(
    dataset_dir: str | None,
    work_dir: str,
    demo_task: str = "cells",
    datalist_file: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    labelled_fraction: float = 1.0,
    seed: int = 0,
    num_channels: int | None = None,
    num_classes: int | None = None,
    unlabeled_dir: str | None = None,
    slicing: Mapping[str, Any] | None = None,
    intensity: Mapping[str, Any] | None = None,
    demo_kwargs: Mapping[str, Any] | None = None,
    monitor_fraction: float = 0.0,
    require_labels: bool = True,
) -> dict[str, list[dict]]:
    """Prepared 2D datalists ``{"training", "validation", "test", "unlabeled", "monitor", "test_volumes"}``.

    Args:
        dataset_dir: folder holding ``dataset.json`` (MSD layout); empty or ``None`` for ``unlabeled_dir`` alone
            or, without it too, the demo data.
        work_dir: where demo data and prepared slices are cached (the bundle's output folder).
        demo_task: name in ``common.data.demo.DEMO_TASKS`` used when ``dataset_dir`` is empty.
        datalist_file: a datalist JSON to use instead of ``dataset_dir/dataset.json``.
        val_fraction, test_fraction: shares of volumes for validation and test when the datalist has none.
        labelled_fraction: share of training volumes that keep their labels.
        seed: seed of the splits.
        num_channels, num_classes: expected image channels and classes (checked on every file).
        unlabeled_dir: a folder of unlabelled images: extra ones, or, alone, all the data (label-free path).
        slicing: keyword arguments of :class:`common.data.slices.SliceSettings`.
        intensity: keyword arguments of :class:`common.transforms.NormaliseOverForeground`.
        demo_kwargs: keyword arguments of the demo generator (sizes, counts); data generated with non-default
            ones are cached under ``work_dir/demo_data/custom-<hash>``.
        monitor_fraction: share of the unlabelled volumes held out as the ``"monitor"`` split (0: none).
        require_labels: raise when no labelled training slice results (the bundles that need labels); the
            label-free bundles pass ``False``.

    Returns:
        lists of prepared 2D sample dicts per split, and ``"test_volumes"``: the original test items (2D or 3D)
        for whole-volume inference.
    """
    if unlabeled_dir and not dataset_dir and not datalist_file:
        source = f"unlabeled_dir {unlabeled_dir}"
        label_scale = 1.0
        splits = {"training": [], "validation": [], "test": [], "unlabeled": list_images(unlabeled_dir)}  # never empty
    else:
        datalist_path = _datalist_path(dataset_dir, datalist_file, work_dir, demo_task, demo_kwargs)
        source = str(datalist_path)
        label_scale = float(read_datalist(datalist_path).get("label_scale", 1.0))
        splits = _split(datalist_path, val_fraction, test_fraction, labelled_fraction, seed)
        if unlabeled_dir:
            splits["unlabeled"] += list_images(unlabeled_dir)
    held_out = split_by_group(splits["unlabeled"], {"monitor": monitor_fraction}, seed)  # order kept; 0: none
    splits["unlabeled"], splits["monitor"] = held_out["training"], held_out["monitor"]
    for name, items in splits.items():
        check_files_exist(items, ("image", "label"), f"the '{name}' split of {source}")

    settings = SliceSettings(**(slicing or {}))
    normalise = NormaliseOverForeground(**(intensity or {}))
    fingerprint = _fingerprint(splits, slicing, intensity, num_channels, num_classes, label_scale)

    def write_splits(tmp: Path) -> dict[str, Any]:
        result: dict[str, Any] = {
            name: write_samples(splits[name], tmp / name, settings, normalise, num_channels, num_classes, label_scale)
            for name in SPLITS
        }
        result["test_volumes"] = splits["test"]
        return result

    result = _build_once(Path(work_dir) / "prepared" / fingerprint, write_splits)
    result.setdefault("monitor", [])  # a cache written before the monitor split existed
    if require_labels and labelled_fraction > 0 and not result["training"]:
        if not any(splits[name] for name in ("training", "validation", "test")):
            raise ValueError(
                f"{source}: this bundle needs labelled training images, but the data have no label "
                "(only unlabelled images); give a dataset.json with labelled 'training' items."
            )
        raise ValueError(
            f"{source}: no labelled training slice is left after splitting and slice filtering "
            f"({settings}); lower the filters or add data."
        )
    return result


def _datalist_path(
    dataset_dir: str | None,
    datalist_file: str | None,
    work_dir: str,
    demo_task: str,
    demo_kwargs: Mapping[str, Any] | None,
) -> Path:
    """The datalist to read: ``datalist_file``, or ``dataset_dir/dataset.json`` (the demo data's, generated once,
    when ``dataset_dir`` is empty)."""
    if dataset_dir:
        dataset_dir = str(Path(dataset_dir).expanduser().resolve())
        if not Path(dataset_dir).is_dir():
            raise FileNotFoundError(f"dataset_dir {dataset_dir}: folder not found.")
    elif not datalist_file:  # the demo data, generated once, only when no datalist is given
        demo_root = Path(work_dir) / "demo_data"
        if demo_kwargs:  # non-default sizes get their own cache folder
            tag = hashlib.sha256(json.dumps(dict(demo_kwargs), sort_keys=True).encode()).hexdigest()[:8]
            demo_root = demo_root / f"custom-{tag}"
        dataset_dir = str(ensure_demo_dataset(demo_task, demo_root, **demo_kwargs or {}).parent)
    datalist_path = Path(datalist_file) if datalist_file else Path(dataset_dir) / "dataset.json"
    if not datalist_path.is_file():
        raise FileNotFoundError(
            f"{datalist_path}: no datalist found; expected an MSD-style dataset.json with a 'training' list of "
            "{'image': ..., 'label': ...} items (or set datalist_file)."
        )
    return datalist_path


def labelled_split(datalists: Mapping[str, Sequence[Mapping]], split: str = "test") -> list[dict]:
    """The items of ``datalists[split]`` for an evaluation, which needs labels: raises a clear error on the
    label-free path (a folder of images, or a datalist without labels), where there is nothing to evaluate against.
    """
    items = [dict(item) for item in datalists.get(split, [])]
    if not items or any("label" not in item for item in items):
        raise ValueError(
            f"evaluation needs labelled '{split}' items, and these data have none (a folder of unlabelled images, or "
            f"a datalist without labels); give a dataset.json with labelled items (its '{split}' list, or labelled "
            "'training' items to split), or run inference.json to segment the images."
        )
    return items


def is_prepared(item: Mapping) -> bool:
    """Whether ``item`` is a 2D sample written by the slice pipeline (it carries the ``domain`` the pipeline gives)."""
    return "domain" in item


def prepare_items(
    items: Sequence[Mapping],
    work_dir: str,
    slicing: Mapping[str, Any] | None = None,
    intensity: Mapping[str, Any] | None = None,
    num_channels: int | None = None,
    num_classes: int | None = None,
) -> list[dict]:
    """Items as a bundle's datasets need them: prepared 2D samples pass through; raw ``{"image", "label"}`` items (2D
    images or 3D volumes, as MONAI Label hands a bundle its labelled images) go through the same slice pipeline as
    :func:`prepare_datalists` (the bundle's ``slicing`` and ``intensity``), cached under
    ``work_dir/prepared_items/<hash>`` and written to a temporary folder first.

    Args:
        items: datalist items, prepared samples and/or raw items with absolute paths.
        work_dir: the bundle's output folder.
        slicing, intensity, num_channels, num_classes: as in :func:`prepare_datalists`.

    Returns:
        the prepared samples first, then the samples of the raw items in their order.
    """
    prepared = [dict(item) for item in items if is_prepared(item)]
    raw = [dict(item) for item in items if not is_prepared(item)]
    if not raw:
        return prepared
    check_files_exist(raw, ("image", "label"), "the raw datalist items")
    fingerprint = _fingerprint({"items": raw}, slicing, intensity, num_channels, num_classes)
    settings = SliceSettings(**(slicing or {}))
    normalise = NormaliseOverForeground(**(intensity or {}))
    result = _build_once(
        Path(work_dir) / "prepared_items" / fingerprint,
        lambda tmp: {"items": write_samples(raw, tmp, settings, normalise, num_channels, num_classes)},
    )
    return prepared + result["items"]


def _split(
    datalist_path: Path, val_fraction: float, test_fraction: float, labelled_fraction: float, seed: int
) -> dict[str, list[dict]]:
    labelled = load_datalist(datalist_path, "training")
    extra_unlabelled = load_datalist(datalist_path, "unlabeled")
    if not labelled:
        content = read_datalist(datalist_path)
        found = ", ".join(f"'{k}' ({len(v)} items)" for k, v in content.items() if isinstance(v, list))
        raise ValueError(
            f"{datalist_path}: the 'training' list is empty or absent (lists in the file: {found or 'none'}); expected "
            "'training': [{'image': ..., 'label': ...}, ...], with optional 'validation', 'test' and 'unlabeled' lists."
        )
    given = {key: load_datalist(datalist_path, key) for key in ("validation", "test")}
    given = {key: [i for i in items if "label" in i] for key, items in given.items()}
    unlabelled_items = [i for i in labelled if "label" not in i]
    if len(unlabelled_items) == len(labelled):  # the label-free path: no training item has a label
        return {"training": [], **given, "unlabeled": labelled + extra_unlabelled}
    if unlabelled_items:
        raise ValueError(
            f"{datalist_path}: 'training' item {unlabelled_items[0]['image']} has no 'label' while others have "
            "one; put unlabelled images under 'unlabeled' or in unlabeled_dir (or give no training label at all "
            "for the label-free bundles)."
        )
    fractions = {key: frac for key, frac in (("validation", val_fraction), ("test", test_fraction)) if not given[key]}
    parts = split_by_group(labelled, fractions, seed)
    parts.update({key: items for key, items in given.items() if items})
    train_labelled, train_unlabelled = select_labelled(parts["training"], labelled_fraction, seed)
    return {
        "training": train_labelled,
        "validation": parts["validation"],
        "test": parts["test"],
        "unlabeled": train_unlabelled + extra_unlabelled,
    }


def _build_once(final: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The datalist cached in ``final/datalist.json``; if absent, ``build(tmp)`` writes the samples into a temporary
    sibling folder and returns the datalist, whose paths are moved to ``final`` with the folder (removed on any
    failure, so nothing half-written is left)."""
    datalist_out = final / "datalist.json"
    if not datalist_out.is_file():
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write_json_atomic(tmp / "datalist.json", _relocate(build(tmp), tmp, final))
            publish_folder(tmp, final, "datalist.json")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return read_json(datalist_out)


def _fingerprint(splits: Mapping[str, Sequence[Mapping]], *settings: Any) -> str:
    """Hash of the settings and of every input file (path, size, modification time); a DICOM series folder counts
    by the files in it (a folder's own stat does not change when a file in it is rewritten)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, items in splits.items():
        for item in items:
            for key in ("image", "label"):
                if key in item:
                    path = Path(item[key])
                    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
                    for file in files:
                        st = os.stat(file)
                        h.update(f"{name}|{key}|{file}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _relocate(obj: Any, old: Path, new: Path) -> Any:
    """Rewrite paths under the temporary folder ``old`` to their final place under ``new``."""
    if isinstance(obj, dict):
        return {k: _relocate(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocate(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(str(old)):
        return str(new) + obj[len(str(old)) :]
    return obj
