"""Data layer: datalists and splits, the 3D-to-2D slice pipeline, demo data generators, MNIST."""

from .datalist import (
    check_files_exist,
    list_images,
    load_datalist,
    read_json,
    select_labelled,
    split_by_group,
    write_json_atomic,
)
from .prepare import prepare_datalists
from .slices import SliceSettings, load_array, write_samples

__all__ = [
    "SliceSettings",
    "check_files_exist",
    "list_images",
    "load_array",
    "load_datalist",
    "prepare_datalists",
    "read_json",
    "select_labelled",
    "split_by_group",
    "write_json_atomic",
    "write_samples",
]
