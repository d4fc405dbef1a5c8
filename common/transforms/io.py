"""Loading of prepared 2D samples and of raw user images through MONAI ``LoadImaged``; names of written masks."""

from __future__ import annotations

import os

from monai.config import KeysCollection
from monai.data import NumpyReader
from monai.data.folder_layout import default_name_formatter
from monai.transforms import LoadImaged, Transform


class LoadImageLabeld(LoadImaged):
    """``LoadImaged`` with channel-first output for every format this project reads.

    Prepared slices are ``.npy`` arrays stored channel-first, ``(C, H, W)``, which MONAI's default
    ``NumpyReader`` cannot tell from a 3D volume; this registers a ``NumpyReader(channel_dim=0)`` in front of the
    default readers (NIfTI, NRRD, DICOM through ITK; PNG/JPEG/TIFF through PIL), which handle everything else.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(
            keys,
            reader=NumpyReader(channel_dim=0),
            image_only=True,
            ensure_channel_first=True,
            allow_missing_keys=allow_missing_keys,
        )


SERIES_NAME_GUARD = ".series"
"""Appended to a folder input's path before MONAI's folder layout strips "the suffix" from it."""


def mirrored_output_name(metadict: dict | None, saver: Transform) -> dict:
    """``output_name_formatter`` of ``SaveImage``/``SaveImaged``: masks mirror the input folders under the saver's
    ``data_root_dir`` (the inference ``dataset_dir``), and a DICOM series folder gives its full name to its mask.

    MONAI's default formatter hands the input path over as it is; its folder layout then takes the last dot-part of a
    series folder's name for a suffix (series folders named by UID, ``1.2.840...5`` and ``1.2.840...6``, would write
    one mask), and puts the mask of an input outside ``data_root_dir`` (or of the root folder itself, a single
    series) above the output folder. Here the input's path relative to the resolved root is re-rooted on the
    root as given; an input that is the root or lies outside it is written directly in the output folder. With no
    ``data_root_dir`` the output names are MONAI's, series folders kept whole. Two inputs of one saver that would
    write the same mask (``scan.png`` and ``scan.nii.gz`` in one folder) are an error naming both, not a mask
    silently overwritten.

    Returns:
        keyword arguments of ``FolderLayout.filename``: ``{"subject": ..., "idx": ...}``.

    Raises:
        ValueError: the mask of this input would replace the one written for another input in this run.
    """
    names = default_name_formatter(metadict or {}, saver)
    path = str(names["subject"])
    if not os.path.exists(path):  # not a path (e.g. an index): MONAI's name
        return names
    root = str(getattr(getattr(saver, "folder_layout", None), "data_root_dir", "") or "")
    if root:
        relative = os.path.basename(os.path.abspath(path))  # the root itself, or outside it: flat
        for candidate in (os.path.abspath(path), os.path.realpath(path)):  # listed under the resolved root
            inner = os.path.relpath(candidate, os.path.realpath(root))
            if inner not in (os.curdir, os.pardir) and not inner.startswith(os.pardir + os.sep):
                relative = inner
                break
        subject = os.path.join(os.path.abspath(root), relative)
    else:
        subject = path
    if os.path.isdir(path):
        subject = subject.rstrip(os.sep) + SERIES_NAME_GUARD
    names = {**names, "subject": subject}
    layout = getattr(saver, "folder_layout", None)
    if hasattr(layout, "filename"):
        output = os.path.abspath(layout.filename(**names))
        inputs = saver.__dict__.setdefault("_mask_inputs", {})  # output path -> the input that wrote it, this run
        earlier = inputs.setdefault(output, os.path.abspath(path))
        if earlier != os.path.abspath(path):
            raise ValueError(
                f"{path} and {earlier} would both write the mask {output} (the same name without their suffixes); "
                "rename one of them or segment them in separate runs."
            )
    return names
