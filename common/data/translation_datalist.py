"""The lists of ``translation_semi_seg`` (Vorontsov et al., MedIA 2022) from a JSON datalist in the MSD form, so the
bundle trains on a user's folder or on a benchmark run's datalist as on its cluttered MNIST arrays.

The method needs two sets of 2D images of one size: P, images that hold the target (a few with masks), and A, images
known to hold none (image-level tags). In a datalist: the labelled ``training`` items are the labelled P images, the
``unlabeled`` items (and the training items whose labels ``labelled_fraction`` drops) the unlabelled P images, and the
optional top-level ``absent`` list (``[{"image": path}, ...]`` or paths) the A images, read as given (no label of
any image decides what is absent). ``validation`` / ``test`` lists are used when given, else split off the labelled
items (``val_fraction``, ``test_fraction``), as in every bundle.

Every image goes through the collection's slice pipeline once (:func:`common.data.prepare_datalists`, the same
``intensity`` normalisation as the other bundles, cached under ``work_dir/prepared``); the bundle reads the written
``.npy`` samples with MONAI's ``LoadImaged`` (``common.transforms.LoadImageLabeld``). The cluttered MNIST path of the
bundle (:func:`common.data.cluttered_mnist.cluttered_mnist_datalists`) is not touched by any of this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic_write import save_npy_atomic

from .datalist import check_files_exist, load_datalist

__all__ = ["translation_datalists"]


def translation_datalists(
    datalist_file: str | os.PathLike,
    work_dir: str | os.PathLike,
    image_size: str = "48x48",
    num_channels: int | None = None,
    num_classes: int = 2,
    intensity: Mapping[str, Any] | None = None,
    labelled_fraction: float = 1.0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The bundle's lists, as :func:`common.data.cluttered_mnist.cluttered_mnist_datalists` gives them, from a
    datalist.

    Args:
        datalist_file: an MSD-style ``dataset.json`` (or a benchmark run's training datalist), with an ``absent``
            list for the proposed model.
        work_dir: the bundle's output folder (prepared samples are cached under it).
        image_size: the network preset, ``"HxW"``: every image must be of that size (the network takes whole images;
            nothing is cropped or resized).
        num_channels, num_classes: checked on every file (one target class: ``num_classes`` 2).
        intensity: keyword arguments of :class:`common.transforms.NormaliseOverForeground`, per image.
        labelled_fraction, val_fraction, test_fraction, seed: as :func:`common.data.prepare_datalists`.

    Returns:
        ``{"present", "training", "unlabeled", "absent", "validation", "test"}``: lists of ``{"image": path, "label":
        path, "labelled": 0 | 1}`` (A items: ``image`` only). ``present`` holds every P image, the labelled ones with
        ``labelled`` 1, the unlabelled ones with ``labelled`` 0 and an all-zero placeholder mask (the trainer reads no
        mask of an image whose ``labelled`` is 0); ``training`` only the labelled ones (the control's set);
        ``validation`` and ``test`` items are labelled.
    """
    from common import data  # the package attributes, as the other bundles' configs call them

    datalist_file = Path(datalist_file)
    lists = data.prepare_datalists(
        None,
        str(work_dir),
        datalist_file=str(datalist_file),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        labelled_fraction=labelled_fraction,
        seed=seed,
        num_channels=num_channels,
        num_classes=num_classes,
        intensity=intensity,
    )
    absent = [{"image": i["image"]} for i in load_datalist(datalist_file, "absent")]
    check_files_exist(absent, ("image",), f"the 'absent' list of {datalist_file}")
    absent = data.prepare_items(absent, str(work_dir), intensity=intensity, num_channels=num_channels)
    size = tuple(int(n) for n in str(image_size).split("x"))
    for name, items in (*lists.items(), ("absent", absent)):
        if name != "test_volumes":
            _check_size(items, size, name, datalist_file)
    zeros = Path(work_dir) / "prepared" / f"zero_mask_{image_size}.npy"
    if not zeros.is_file():
        save_npy_atomic(zeros, np.zeros((1, *size), np.uint8))
    labelled = [{"image": i["image"], "label": i["label"], "labelled": 1} for i in lists["training"]]
    unlabelled = [{"image": i["image"], "label": str(zeros), "labelled": 0} for i in lists["unlabeled"]]
    return {
        "present": labelled + unlabelled,
        "training": labelled,
        "unlabeled": unlabelled,
        "absent": [{"image": i["image"]} for i in absent],
        "validation": _labelled(lists["validation"]),
        "test": _labelled(lists["test"]),
    }


def _labelled(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"image": i["image"], "label": i["label"], "labelled": 1} for i in items if "label" in i]


def _check_size(items: Sequence[Mapping[str, Any]], size: tuple[int, ...], name: str, source: Path) -> None:
    """Raise ``ValueError`` naming the first prepared sample of ``items`` whose ``(H, W)`` is not ``size``."""
    for item in items:
        shape = tuple(np.load(item["image"], mmap_mode="r").shape[1:])
        if shape != size:
            raise ValueError(
                f"{item.get('source', item['image'])}: a {'x'.join(map(str, shape))} image (the '{name}' images of "
                f"{source}); translation_semi_seg takes whole images of its network preset size image_size "
                f"{'x'.join(map(str, size))}: set image_size (48x48, 128x128, 240x120, 256x256) and patch_size to "
                "the images' size, or bring every image to one of these sizes."
            )
