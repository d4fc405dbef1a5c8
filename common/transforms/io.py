"""Loading of prepared 2D samples and of raw user images through MONAI ``LoadImaged``."""

from __future__ import annotations

from monai.config import KeysCollection
from monai.data import NumpyReader
from monai.transforms import LoadImaged


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
