"""ISIC 2018 task 1 (lesion boundary segmentation) as a datalist.

The challenge's download has no ``dataset.json``: images are ``ISIC2018_Task1-2_Training_Input/ISIC_XXXXXXX.jpg``
and masks ``ISIC2018_Task1_Training_GroundTruth/ISIC_XXXXXXX_segmentation.png`` with values 0 / 255. This module
pairs them into an MSD-style datalist (``"training"`` list, ``"label_scale": 255``) that
:func:`common.data.prepare_datalists` reads through its ``datalist_file`` argument.
"""

from __future__ import annotations

from pathlib import Path

from .datalist import write_json_atomic

IMAGE_FOLDER = "ISIC2018_Task1-2_Training_Input"
MASK_FOLDER = "ISIC2018_Task1_Training_GroundTruth"
MASK_SUFFIX = "_segmentation.png"


def write_isic_datalist(isic_dir: str, out_file: str) -> str:
    """Pair every ISIC image with its mask and write the datalist to ``out_file`` (atomically); return its path.

    Args:
        isic_dir: folder holding ``ISIC2018_Task1-2_Training_Input`` and ``ISIC2018_Task1_Training_GroundTruth``.
        out_file: JSON file to write (its folder is created).

    Raises:
        FileNotFoundError: a folder is missing or holds no image.
        ValueError: an image has no mask (the message names the first few).
    """
    root = Path(isic_dir).expanduser().resolve()
    image_dir, mask_dir = root / IMAGE_FOLDER, root / MASK_FOLDER
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: ISIC 2018 task 1 folder not found (expected {IMAGE_FOLDER}/ and "
                f"{MASK_FOLDER}/ under {root})."
            )
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise FileNotFoundError(f"{image_dir}: no .jpg/.png image found.")
    items, missing = [], []
    for image in images:
        mask = mask_dir / f"{image.stem}{MASK_SUFFIX}"
        if mask.is_file():
            items.append({"image": str(image), "label": str(mask)})
        else:
            missing.append(mask.name)
    if missing:
        raise ValueError(f"{mask_dir}: {len(missing)} image(s) have no mask, e.g. {missing[:3]}.")
    content = {
        "name": "ISIC2018_Task1",
        "modality": {"0": "R", "1": "G", "2": "B"},
        "labels": {"0": "background", "255": "lesion"},
        "label_scale": 255,
        "numTraining": len(items),
        "training": items,
    }
    return str(write_json_atomic(out_file, content))
