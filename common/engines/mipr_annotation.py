"""One annotation round of MIPR (Dai, Zhu et al., "MIPR: Automatic Annotation of Medical Images with Pixel
Rearrangement", arXiv 2204.10513, Sec. 2 and Fig. 1).

For every unlabelled image ``x``: the segmenter ``S`` gives a pseudo-label ``t``; image processing cleans it into
``t'``; the generator ``G`` rearranges the pixels of ``x`` into ``x' = G(x, t')``, an image that matches ``t'``.
``(x', t')`` is accepted as a correctly labelled pair when ``S`` itself recovers ``t'`` from ``x'``: Dice(argmax
S(x'), t') >= ``acceptance_dice`` (the paper does not state its criterion; this one is ours). Accepted pairs are
written as PNG files (image: uint8, ``[-1, 1]`` mapped to ``[0, 255]``; mask: uint8 class indices 0/1; both in the
orientation of the source files) with a datalist, so a person can open them in MONAI Label or any viewer.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from torch import nn

from common.atomic_write import save_png_atomic, write_json_atomic
from common.data.datalist import read_json

logger = logging.getLogger(__name__)

__all__ = ["annotate_round", "pseudo_label", "rearrange", "to_uint8_image"]


@torch.no_grad()
def pseudo_label(segmenter: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Class map of ``image`` by the segmenter: ``(B, C, H, W)`` -> ``(B, 1, H, W)`` int64 (argmax of the logits)."""
    return segmenter(image).argmax(dim=1, keepdim=True)


@torch.no_grad()
def rearrange(generator: nn.Module, image: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``x' = G(x, t')``: image ``(B, C, H, W)`` in [-1, 1] and class map ``(B, 1, H, W)`` -> image ``(B, C, H, W)``."""
    return generator(image, one_hot(label.long(), num_classes, dim=1))


def _dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> float:
    """Mean foreground Dice of two ``(1, 1, H, W)`` class maps (functional: no cross-rank sync under DDP)."""
    pred_oh, label_oh = (one_hot(x.long(), num_classes, dim=1) for x in (pred, label))
    return float(compute_dice(pred_oh, label_oh, include_background=False, ignore_empty=False).nanmean())


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(C, H, W)`` uint8, ``[-1, 1]`` mapped linearly to ``[0, 255]``."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()


def annotate_round(
    segmenter: nn.Module,
    generator: nn.Module,
    items: Sequence[Mapping],
    load: Callable[[Mapping], Mapping],
    clean: Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | os.PathLike,
    num_classes: int = 2,
    acceptance_dice: float = 0.9,
    device: torch.device | str = "cpu",
) -> dict:
    """Pseudo-label, clean, rearrange and check every item; write the accepted pairs and their datalist.

    Everything is written into a temporary sibling folder that is renamed to ``out_dir`` only when complete, so a
    killed round leaves no half-written pairs; an existing ``out_dir/datalist.json`` is returned as is.

    Args:
        segmenter: ``S``, ``(B, C, H, W)`` -> ``(B, num_classes, H, W)`` logits; used in eval mode.
        generator: ``G(image, one_hot_label)`` -> image, as :class:`common.networks.spade_generator.SPADEPlusGenerator`.
        items: unlabelled datalist items (``"image"`` path; any ``"label"`` is ignored).
        load: item -> dict whose ``"image"`` is the ``(C, H, W)`` tensor in [-1, 1] that S and G were trained on.
        clean: pseudo-label cleaning, ``(1, H, W)`` class map -> ``(1, H, W)`` class map (hole filling, largest
            component, smoothing: a MONAI ``Compose`` in the bundle config).
        out_dir: folder receiving ``images/``, ``labels/`` and ``datalist.json``.
        num_classes: classes including background (one-hot width of G's label input).
        acceptance_dice: minimum Dice between ``argmax S(x')`` and ``t'`` for a pair to be accepted.
        device: where the networks run.

    Returns:
        the datalist: ``{"training": accepted items (image, label, source, dice), "rejected": [...], "counts":
        {"unlabelled", "accepted", "rejected_empty", "rejected_dice"}}``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "datalist.json").is_file():
        return read_json(out_dir / "datalist.json")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    segmenter.eval()
    generator.eval()
    accepted, rejected = [], []
    try:
        for index, item in enumerate(items):
            image = torch.as_tensor(load(item)["image"]).float()[None].to(device)
            cleaned = clean(pseudo_label(segmenter, image)[0].cpu()).to(device).long()[None]
            stem = f"{index:05d}_{Path(item['image']).name.split('.')[0]}"
            if not cleaned.any():
                rejected.append({"source": item["image"], "reason": "empty pseudo-label", "dice": None})
                continue
            rearranged = rearrange(generator, image, cleaned, num_classes)
            check = pseudo_label(segmenter, rearranged)
            dice = _dice(check, cleaned, num_classes)
            if not dice >= acceptance_dice:
                rejected.append({"source": item["image"], "reason": "S(x') disagrees with t'", "dice": dice})
                continue
            image_file, label_file = f"images/{stem}.png", f"labels/{stem}.png"
            save_png_atomic(tmp / image_file, to_uint8_image(rearranged[0]))
            save_png_atomic(tmp / label_file, cleaned[0].byte().cpu().numpy())
            accepted.append(
                {
                    "image": str(out_dir / image_file),
                    "label": str(out_dir / label_file),
                    "source": item["image"],
                    "dice": round(dice, 4),
                }
            )
        counts = {
            "unlabelled": len(items),
            "accepted": len(accepted),
            "rejected_empty": sum(r["dice"] is None for r in rejected),
            "rejected_dice": sum(r["dice"] is not None for r in rejected),
        }
        datalist = {"training": accepted, "rejected": rejected, "counts": counts, "acceptance_dice": acceptance_dice}
        write_json_atomic(tmp / "datalist.json", datalist)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(f"annotation round -> {out_dir}: {counts}")
    return datalist
