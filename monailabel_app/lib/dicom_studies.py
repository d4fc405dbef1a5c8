"""DICOM series in the studies folder as images of MONAI Label's datastore.

MONAI Label's ``LocalDatastore`` lists the image files directly in ``--studies`` by extension, so a folder of
suffix-less DICOM slices (a PACS export: patient / study / series folders) shows no image. :func:`convert_series`
finds every DICOM series below the studies folder (``common.data.find_dicom_images``: a folder holding one series of
two or more slices is one 3D image) and writes it once as ``<studies>/<id>.nii.gz``, with the series' size, spacing,
origin and direction (ITK's GDCM series reader, the reader of MONAI's ``ITKReader``). The datastore indexes that
volume like any other image, so inference, batch pre-annotation and training read it, and the masks MONAI Label
stores as its labels (``labels/<tag>/<id>.nii.gz``) have the series' geometry. The id is the series folder's path
below the studies folder, its parts joined by ``_`` (``patient1/ct`` -> ``patient1_ct``). A manifest
(``<studies>/.dicom_series.json``) records each conversion with the files it read, so a later start converts only new
or changed series; the folder ``labels`` and hidden folders are not searched, loose single-slice DICOM files are not
converted, and a folder holding several series, or a series that cannot be read, is logged as an error and skipped.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from common.atomic_write import write_json_atomic
from common.data import dicom_series, find_dicom_images
from common.data.dicom import process_locale_kept

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".dicom_series.json"
SUFFIX = ".nii.gz"


def series_id(studies: str, folder: str) -> str:
    """The image id of the series in ``folder``: its path below ``studies``, parts joined by ``_``."""
    return "_".join(os.path.normpath(os.path.relpath(folder, studies)).split(os.sep))


def _signature(files: list[str]) -> list[list[Any]]:
    """What a conversion read: ``[name, size, mtime_ns]`` of each file of the series, in slice order."""
    return [[os.path.basename(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]


def write_volume(files: list[str], path: str) -> None:
    """Read the DICOM slices ``files`` (one series, in slice order) as one volume and write it to ``path`` (NIfTI),
    keeping size, spacing, origin and direction."""
    import itk

    with process_locale_kept():  # GDCM resets the process locale
        image = itk.imread(files if len(files) > 1 else files[0])
    folder = os.path.join(os.path.dirname(path), ".dicom_series_partial")  # not listed by the datastore
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{os.getpid()}-{os.path.basename(path)}")
    try:
        itk.imwrite(image, tmp, compression=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_series(studies: str, labels_dir: str = "labels") -> dict[str, str]:
    """Write every DICOM series below ``studies`` as ``<studies>/<id>.nii.gz`` (see the module docs), unless the
    manifest says it is converted from the same files already.

    Args:
        studies: MONAI Label's studies folder (a local datastore).
        labels_dir: its labels folder (not searched).

    Returns:
        image id -> series folder, for every series found (converted now or before).
    """
    studies = os.path.realpath(studies)
    manifest_path = os.path.join(studies, MANIFEST_NAME)
    manifest: dict[str, dict] = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(studies)):
        top = os.path.join(studies, entry)
        if entry.startswith(".") or entry == labels_dir or not os.path.isdir(top):
            continue
        try:
            folders = [f for f in find_dicom_images(top) if os.path.isdir(f)]  # loose single-slice files: not converted
        except ValueError as error:  # a folder with several series: the others are still served
            logger.error(f"DICOM series in {top} not served: {error}")
            continue
        for folder in folders:
            image_id = series_id(studies, folder)
            files = next(iter(dicom_series(folder).values()))
            target = os.path.join(studies, image_id + SUFFIX)
            record = {"folder": os.path.relpath(folder, studies), "files": _signature(files)}
            if os.path.exists(target) and image_id not in manifest:
                logger.warning(f"DICOM series {folder}: {target} exists and is not a conversion of it; not converted")
                continue
            found[image_id] = folder
            if manifest.get(image_id) == record and os.path.isfile(target):
                continue
            logger.info(f"DICOM series {folder} ({len(files)} slices) -> image {image_id} ({target})")
            try:
                write_volume(files, target)
            except Exception as error:  # an unreadable series: the others are still served
                logger.error(f"DICOM series {folder} not served: {type(error).__name__}: {error}")
                found.pop(image_id)
                continue
            manifest[image_id] = record
            write_json_atomic(manifest_path, manifest)
    if found:
        logger.info(f"{len(found)} DICOM series in {studies} served as images: {sorted(found)}")
    return found
