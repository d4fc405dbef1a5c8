"""One annotation round of MIPR (Dai, Zhu et al., "MIPR: Automatic Annotation of Medical Images with Pixel
Rearrangement", arXiv 2204.10513, Sec. 2 and Fig. 1).

For every unlabelled image ``x``: the segmenter ``S`` gives a pseudo-label ``t``; image processing cleans it into
``t'``; the generator ``G`` rearranges the pixels of ``x`` into ``x' = G(x, t')``, an image that matches ``t'``.
The paper does not state how a pair ``(x', t')`` is judged correct; ``acceptance`` chooses among ours:

- ``"segmenter"``: ``S`` itself recovers ``t'`` from ``x'``, Dice(argmax S(x'), t') >= ``acceptance_dice``. The
  judge is the segmenter that made ``t'`` (self-training: its errors pass its own check).
- ``"reconstruction"``: ``G`` needed to move few pixels, mean |x' - x| <= ``max_reconstruction_error``. ``G`` was
  trained to rebuild an image from its label (Sec. 2.3), so where ``t'`` contradicts ``x`` it has to repaint; the
  threshold is a quantile of the same error on held-out labelled pairs ``(x, t)``, where the label is right
  (:func:`reconstruction_threshold`). The judge is ``G``, not ``S``.
- ``"both"``: both checks.

``new_layouts`` > 0 also uses ``G`` as the paper's Fig. 1 draws it, to make images that did not exist: each accepted
label is moved to ``new_layouts`` random new layouts ``t''`` (flips, quarter turns, circular shifts:
:func:`new_layout`) and ``x'' = G(x, t'')`` is kept when ``S`` finds ``t''`` in it (the ``"segmenter"`` check).

Every item's scores are kept in the datalist (``dice``, ``reconstruction_error``), and, for a benchmark that knows
the hidden truth (:class:`common.data.HiddenTruth`), ``true_dice``: Dice(t', truth of x), so the acceptance rule's
precision can be measured. Accepted pairs are written as PNG files (image: uint8, ``[-1, 1]`` mapped to ``[0, 255]``;
mask: uint8 class indices 0/1; both in the orientation of the source files) with a datalist, so a person can open
them in MONAI Label or any viewer.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
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

__all__ = [
    "ACCEPTANCE_RULES",
    "accepts",
    "annotate_round",
    "new_layout",
    "pseudo_label",
    "rearrange",
    "reconstruction_error",
    "reconstruction_threshold",
    "to_uint8_image",
]

ACCEPTANCE_RULES = ("segmenter", "reconstruction", "both")


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


def reconstruction_error(rearranged: torch.Tensor, image: torch.Tensor) -> float:
    """Mean absolute difference of ``x' = G(x, t')`` and ``x``, two ``(1, C, H, W)`` images in [-1, 1] (0 to 2)."""
    return float((rearranged - image).abs().mean())


@torch.no_grad()
def reconstruction_threshold(
    generator: nn.Module,
    items: Sequence[Mapping],
    load: Callable[[Mapping], Mapping],
    num_classes: int,
    quantile: float = 0.9,
    device: torch.device | str = "cpu",
) -> float:
    """The ``quantile`` of ``mean |G(x, t) - x|`` over labelled pairs whose label is right (held out from ``G``'s
    training: the validation images), the ``"reconstruction"`` acceptance threshold.

    Args:
        generator: ``G(image, one_hot_label)``; used in eval mode.
        items: labelled items; ``load(item)`` gives ``"image"`` ``(C, H, W)`` in [-1, 1] and ``"label"`` ``(1, H, W)``.
        load, num_classes, device: as in :func:`annotate_round`.
        quantile: share of right pairs that pass.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"reconstruction_quantile must be in (0, 1], got {quantile}.")
    labelled = [item for item in items if "label" in item]
    if not labelled:
        raise ValueError(
            "the reconstruction acceptance needs labelled held-out items (the validation split) to calibrate."
        )
    generator.eval()
    errors = []
    for item in labelled:
        data = load(item)
        image = torch.as_tensor(data["image"]).float()[None].to(device)
        label = torch.as_tensor(data["label"]).long()[None].to(device)
        errors.append(reconstruction_error(rearrange(generator, image, label, num_classes), image))
    return float(torch.quantile(torch.tensor(errors), quantile))


def new_layout(label: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A ``(1, H, W)`` class map moved to a random new layout: flips, a quarter turn (square maps only) and a
    circular shift of up to half the size in each axis (the objects keep their shapes and sizes)."""
    out = label
    if rng.random() < 0.5:
        out = out.flip(-1)
    if rng.random() < 0.5:
        out = out.flip(-2)
    if out.shape[-1] == out.shape[-2]:
        out = torch.rot90(out, int(rng.integers(4)), dims=(-2, -1))
    shifts = tuple(int(rng.integers(-(n // 2), n // 2 + 1)) for n in out.shape[-2:])
    return torch.roll(out, shifts=shifts, dims=(-2, -1))


def accepts(rule: str, dice: float, error: float, acceptance_dice: float, max_error: float | None) -> bool:
    """Whether a pair with S's check ``dice`` and G's reconstruction ``error`` passes the acceptance ``rule``."""
    by_segmenter = dice >= acceptance_dice
    by_reconstruction = max_error is not None and error <= max_error
    return {"segmenter": by_segmenter, "reconstruction": by_reconstruction, "both": by_segmenter and by_reconstruction}[
        rule
    ]


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


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
    acceptance: str = "segmenter",
    max_reconstruction_error: float | None = None,
    new_layouts: int = 0,
    seed: int = 0,
    truth: Callable[[Mapping, Sequence[int]], torch.Tensor | None] | None = None,
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
        acceptance_dice: minimum Dice between ``argmax S(x')`` and ``t'`` (rules ``"segmenter"`` and ``"both"``).
        device: where the networks run.
        acceptance: one of :data:`ACCEPTANCE_RULES` (module doc).
        max_reconstruction_error: mean |x' - x| allowed (rules ``"reconstruction"`` and ``"both"``).
        new_layouts: further pairs ``(G(x, t''), t'')`` tried per accepted pair, ``t''`` a new layout of ``t'``.
        seed: seed of the new layouts.
        truth: ``(item, spatial shape) -> (1, H, W)`` hidden label or ``None`` (benchmarks only; never used to accept).

    Returns:
        the datalist: ``{"training": accepted items (image, label, source, dice, reconstruction_error[, true_dice]),
        "rejected": [...], "counts": {"unlabelled", "accepted", "rejected_empty", "rejected_check", "new_layouts",
        and with a truth "true_dice_accepted", "true_dice_rejected"}}``.
    """
    if acceptance not in ACCEPTANCE_RULES:
        raise ValueError(f"acceptance must be one of {ACCEPTANCE_RULES}, got {acceptance!r}.")
    if acceptance != "segmenter" and max_reconstruction_error is None:
        raise ValueError(f"acceptance {acceptance!r} needs max_reconstruction_error (see reconstruction_threshold).")
    out_dir = Path(out_dir)
    if (out_dir / "datalist.json").is_file():
        return read_json(out_dir / "datalist.json")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    segmenter.eval()
    generator.eval()
    rng = np.random.default_rng(seed)
    accepted, rejected, layouts = [], [], []

    def write_pair(stem: str, image: torch.Tensor, label: torch.Tensor, record: dict) -> dict:
        image_file, label_file = f"images/{stem}.png", f"labels/{stem}.png"
        save_png_atomic(tmp / image_file, to_uint8_image(image[0]))
        save_png_atomic(tmp / label_file, label[0].byte().cpu().numpy())
        return {"image": str(out_dir / image_file), "label": str(out_dir / label_file), **record}

    try:
        for index, item in enumerate(items):
            image = torch.as_tensor(load(item)["image"]).float()[None].to(device)
            cleaned = clean(pseudo_label(segmenter, image)[0].cpu()).to(device).long()[None]
            stem = f"{index:05d}_{Path(item['image']).name.split('.')[0]}"
            record: dict = {"source": item["image"]}
            hidden = None if truth is None else truth(item, tuple(image.shape[2:]))
            if hidden is not None:
                record["true_dice"] = round(_dice(cleaned.cpu(), hidden[None].cpu(), num_classes), 4)
            if not cleaned.any():
                rejected.append({**record, "reason": "empty pseudo-label", "dice": None})
                continue
            rearranged = rearrange(generator, image, cleaned, num_classes)
            record["dice"] = round(_dice(pseudo_label(segmenter, rearranged), cleaned, num_classes), 4)
            record["reconstruction_error"] = round(reconstruction_error(rearranged, image), 4)
            if not accepts(
                acceptance, record["dice"], record["reconstruction_error"], acceptance_dice, max_reconstruction_error
            ):
                rejected.append({**record, "reason": f"fails the {acceptance} check"})
                continue
            accepted.append(write_pair(stem, rearranged, cleaned, record))
            for j in range(new_layouts):
                moved = new_layout(cleaned[0], rng)[None]
                synthetic = rearrange(generator, image, moved, num_classes)
                dice = _dice(pseudo_label(segmenter, synthetic), moved, num_classes)
                if dice >= acceptance_dice:
                    layouts.append(
                        write_pair(
                            f"{stem}_layout{j}",
                            synthetic,
                            moved,
                            {"source": item["image"], "dice": round(dice, 4), "new_layout": True},
                        )
                    )
        counts = {
            "unlabelled": len(items),
            "accepted": len(accepted),
            "rejected_empty": sum(r["dice"] is None for r in rejected),
            "rejected_check": sum(r["dice"] is not None for r in rejected),
            "new_layouts": len(layouts),
        }
        if truth is not None:
            counts["true_dice_accepted"] = _mean([r["true_dice"] for r in accepted if "true_dice" in r])
            counts["true_dice_rejected"] = _mean([r["true_dice"] for r in rejected if "true_dice" in r])
        datalist = {
            "training": accepted + layouts,
            "rejected": rejected,
            "counts": counts,
            "acceptance": acceptance,
            "acceptance_dice": acceptance_dice,
            "max_reconstruction_error": max_reconstruction_error,
        }
        write_json_atomic(tmp / "datalist.json", datalist)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(f"annotation round -> {out_dir}: {counts}")
    return datalist
