"""Data layer: datalists and splits, the 3D-to-2D slice pipeline, demo data generators, MNIST."""

from .datalist import (
    check_files_exist,
    drop_labels,
    list_images,
    load_datalist,
    read_json,
    select_labelled,
    split_by_group,
    write_json_atomic,
)
from .hidden_truth import HiddenTruth
from .prepare import is_prepared, labelled_split, prepare_datalists, prepare_items
from .prepared_dataset import PreparedCacheDataset
from .slices import SliceSettings, load_array, write_samples

__all__ = [
    "HiddenTruth",
    "PreparedCacheDataset",
    "SliceSettings",
    "check_files_exist",
    "drop_labels",
    "list_images",
    "load_array",
    "is_prepared",
    "labelled_split",
    "load_datalist",
    "prepare_datalists",
    "prepare_items",
    "read_json",
    "select_labelled",
    "split_by_group",
    "write_json_atomic",
    "write_samples",
]
