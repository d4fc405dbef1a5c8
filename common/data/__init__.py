"""Data layer: datalists and splits, DICOM series discovery, the 3D-to-2D slice pipeline, demo data, MNIST."""

from .datalist import (
    all_items,
    check_files_exist,
    drop_labels,
    list_images,
    load_datalist,
    read_json,
    select_labelled,
    split_by_group,
    write_json_atomic,
)
from .dicom import check_one_series, dicom_series, find_dicom_images, is_dicom_file
from .hidden_truth import HiddenTruth
from .prepare import is_prepared, labelled_split, prepare_datalists, prepare_items
from .prepared_dataset import PlainCacheDataset, PreparedCacheDataset, plain_tensors
from .slices import SliceSettings, has_volumes, load_array, write_samples

__all__ = [
    "HiddenTruth",
    "PlainCacheDataset",
    "PreparedCacheDataset",
    "SliceSettings",
    "check_files_exist",
    "check_one_series",
    "dicom_series",
    "all_items",
    "drop_labels",
    "find_dicom_images",
    "has_volumes",
    "is_dicom_file",
    "list_images",
    "load_array",
    "is_prepared",
    "labelled_split",
    "load_datalist",
    "prepare_datalists",
    "plain_tensors",
    "prepare_items",
    "read_json",
    "select_labelled",
    "split_by_group",
    "write_json_atomic",
    "write_samples",
]
