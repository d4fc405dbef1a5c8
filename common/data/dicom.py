"""DICOM series as the images of a datalist: what a hospital team exports from a PACS.

A PACS export is a tree of folders (patient / study / series) whose files are single DICOM slices, often without a
suffix (``CT.1.3.12...``). The rules, applied to every folder of a tree:

- a folder whose DICOM files form one series (of two or more files) is one 3D image: the item is the folder,
  ``{"image": "<series folder>"}``, which MONAI's ``ITKReader`` (the default reader of ``LoadImage`` for a
  directory) reads as one volume with the series' geometry;
- a folder whose DICOM files are each a series of their own (loose single-slice files, e.g. X-rays) gives one
  item per file (2D images);
- a folder whose files form several series, one of them with two or more files, is refused with an error that
  names the folder and the series: MONAI would read only the first series of it.

Series are grouped by ITK's GDCM series reader with the settings of MONAI's ``ITKReader`` (SeriesInstanceUID plus
series details, restricted by series date), so a listed folder is read exactly as listed.
"""

from __future__ import annotations

import locale
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DICOM_DESCRIPTION = "DICOM series (folders of DICOM files, with or without .dcm)"
"""How error messages name the DICOM layouts that are looked for."""


@contextmanager
def process_locale_kept() -> Iterator[None]:
    """Restore the process locale afterwards: ITK's DICOM reader (GDCM) resets it to "C", after which Python writes
    non-ASCII text (e.g. the "±" of metric tables) with the ASCII codec and fails."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm`` suffix, or the DICOM Part 10 marker ``DICM`` after the 128-byte
    preamble (``pydicom.misc.is_dicom``; reads 132 bytes). Files without suffix and without preamble (rare, very old
    exports) are not recognised."""
    if str(path).lower().endswith(".dcm"):
        return True
    from pydicom.misc import is_dicom

    try:
        return bool(is_dicom(str(path)))
    except OSError:
        return False


def dicom_series(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The DICOM series directly in ``folder`` (not its subfolders), grouped as MONAI's ``ITKReader`` groups them.

    Returns:
        series identifier -> its files in slice order (empty when the folder holds no readable DICOM file).
    """
    import itk

    with process_locale_kept():
        names = itk.GDCMSeriesFileNames.New()
        names.SetUseSeriesDetails(True)
        names.AddSeriesRestriction("0008|0021")  # series date, as MONAI's ITKReader
        names.SetGlobalWarningDisplay(False)
        names.SetDirectory(str(folder))
        return {str(uid): [str(f) for f in names.GetFileNames(uid)] for uid in names.GetSeriesUIDs()}


def series_summary(series: dict[str, Sequence[str]], limit: int = 4) -> str:
    """``"uid1 (10 files), uid2 (1 file)"``, at most ``limit`` series named."""
    parts = [f"{uid} ({len(files)} file{'s' if len(files) != 1 else ''})" for uid, files in series.items()]
    more = f", and {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def check_one_series(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless the files directly in ``folder`` form exactly one DICOM series (the condition for
    MONAI's ``ITKReader`` to read the folder as one volume, all of its slices)."""
    series = dicom_series(folder)
    if not series:
        raise ValueError(f"{folder}: a folder given as an image must hold one DICOM series, and it holds none.")
    if len(series) > 1:
        raise ValueError(
            f"{folder}: holds {len(series)} DICOM series ({series_summary(series)}); a folder given as an image "
            "must hold one series: put each series in its own folder."
        )


def find_dicom_images(folder: str | os.PathLike) -> list[str]:
    """DICOM images in ``folder`` and all its subfolders (hidden ones skipped, links followed), by the rules of this
    module.

    Args:
        folder: a series folder, a study or patient folder of series folders (any depth), or a folder of loose
            single-slice DICOM files.

    Returns:
        sorted absolute paths: series folders (3D images) and single DICOM files (2D images); ``.dcm`` files that
        no series takes (unreadable ones) are listed too, so that reading them fails with an error naming them.

    Raises:
        ValueError: a folder holds several series, one of them with two or more files.
    """
    found: list[str] = []
    seen: set[str] = set()
    for directory, subdirs, filenames in os.walk(Path(folder).resolve(), followlinks=True):
        if os.path.realpath(directory) in seen:  # a link back into the tree: walked once
            subdirs[:] = []
            continue
        seen.add(os.path.realpath(directory))
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        candidates = [
            os.path.join(directory, f) for f in sorted(filenames) if f != "DICOMDIR" and not f.startswith(".")
        ]
        candidates = [f for f in candidates if os.path.isfile(f) and is_dicom_file(f)]
        if not candidates:
            continue
        series = dicom_series(directory)
        volumes = [files for files in series.values() if len(files) > 1]
        if volumes and len(series) > 1:
            raise ValueError(
                f"{directory}: its files form {len(series)} DICOM series ({series_summary(series)}); put each "
                "series in its own folder (one folder per series), then each is read as one image."
            )
        found += [directory] if volumes else [files[0] for files in series.values()]
        taken = {os.path.normpath(f) for files in series.values() for f in files}
        found += [f for f in candidates if f.lower().endswith(".dcm") and os.path.normpath(f) not in taken]
    return sorted(found)
