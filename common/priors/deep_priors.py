"""Stage 2 of AF-Seg (Yu, Dong et al., ISBI 2020, Sec. 2.2): clean backgrounds from weak labels, without labels.

Two per-image optimisations:

1. Deep Segmentation Prior (DSP): a small U-Net is fitted to ``(image, weak label)`` and stopped early, when its
   predicted foreground area has shrunk to ``lambda`` times the weak label's area (``lambda = 2``). Before it fits
   the weak label exactly, the network marks every label-like structure of the image, including the objects the
   classical method missed (false negatives), so the DSP mask covers all objects.
2. Deep Image Prior (DIP, Ulyanov et al., CVPR 2018) inpainting of that mask: a skip encoder-decoder maps a fixed
   32-channel noise image to the image, with the MSE computed on the unmasked pixels only (Adam, lr 0.01). The
   network's output inside the mask is a plausible background: the clean background "Real*" that the
   discriminator of stage 3 learns from.

Multi-channel images: the DSP mask is fitted on one channel (or the mean over channels, as in stage 1) and DIP
inpaints every channel, so that the clean backgrounds have the channels of the images, as the discriminator of
stage 3 compares them with ``G(x)``.

:func:`write_clean_backgrounds` runs both over the stage-1 datalist and writes the results atomically. Under
``torchrun`` (``torch.distributed`` initialised) each rank computes only its share of the items.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.networks.nets import UNet
from skimage.morphology import dilation, disk

from common.atomic_write import save_npy_atomic, write_json_atomic
from common.classical.coarse_masks import select_channel
from common.data import drop_labels, read_json

__all__ = ["deep_image_prior_inpaint", "deep_segmentation_prior", "write_clean_backgrounds"]

logger = logging.getLogger(__name__)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad ``(B, C, H, W)`` on the bottom/right to multiples of ``multiple``; returns the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)


def deep_segmentation_prior(
    image: np.ndarray,
    weak: np.ndarray,
    area_ratio: float = 2.0,
    max_steps: int = 500,
    learning_rate: float = 1e-2,
    channels: Sequence[int] = (16, 32, 64),
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """DSP mask of one image: fit a U-Net to the weak label, stop when the predicted area is ``area_ratio`` x its own.

    The loss is a class-balanced BCE (foreground and background weigh the same), so the early, smooth predictions
    over-cover the objects and the predicted area shrinks towards the weak label's as training goes on; training
    stops at the first step where ``area(sigmoid(S(x)) > 0.5) <= area_ratio * area(weak)``.

    If the stop rule is not met within ``max_steps`` (too few steps or too small a learning rate: on the 128 x 128
    vessel demo images Adam 1e-3 needs about 350-370 steps, 1e-2 about 70-80), a warning is logged and the mask is
    the ``area_ratio * area(weak)`` pixels of highest predicted probability, so that the mask keeps the area the
    rule asks for instead of covering most of the image.

    Args:
        image: ``(H, W)`` float image.
        weak: ``(H, W)`` weak label (0/1).
        area_ratio: lambda of the paper (2).
        max_steps: upper bound on the optimisation steps.
        learning_rate: Adam learning rate (the paper gives none).
        channels: U-Net channels per level.
        seed: seed of the network initialisation.

    Returns:
        ``(H, W)`` uint8 DSP mask united with the weak label, and the number of steps taken.
    """
    weak_mask = np.asarray(weak) > 0
    if not weak_mask.any():
        return weak_mask.astype(np.uint8), 0
    torch.manual_seed(seed)
    depth = len(channels) - 1
    x, (h, w) = _pad_to_multiple(torch.as_tensor(image, dtype=torch.float32)[None, None], 2**depth)
    y, _ = _pad_to_multiple(torch.as_tensor(weak_mask, dtype=torch.float32)[None, None], 2**depth)
    net = UNet(2, 1, 1, channels=channels, strides=(2,) * depth, num_res_units=1, norm="instance")
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    fg = y.mean().clamp(1e-6, 1 - 1e-6)
    weight = torch.where(y > 0, 0.5 / fg, 0.5 / (1 - fg))
    target_area = area_ratio * float(weak_mask.sum())
    logits = torch.zeros(h, w)
    step = 0
    for step in range(1, max_steps + 1):
        optimiser.zero_grad()
        F.binary_cross_entropy_with_logits(net(x), y, weight=weight).backward()
        optimiser.step()
        with torch.no_grad():
            logits = net(x)[0, 0, :h, :w]
        if float((logits > 0).sum()) <= target_area:
            break
    mask = (logits > 0).numpy()
    if mask.sum() > target_area:
        logger.warning(
            "Deep Segmentation Prior: predicted area still %.1f x the weak label's after %d steps (stop rule: %.1f x);"
            " raise max_steps or learning_rate. Using the %d most probable pixels.",
            mask.sum() / weak_mask.sum(),
            step,
            area_ratio,
            int(target_area),
        )
        mask = np.zeros_like(weak_mask)
        mask.flat[np.argsort(-logits.numpy(), axis=None, kind="stable")[: int(target_area)]] = True
    return (mask | weak_mask).astype(np.uint8), step


def deep_image_prior_inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    steps: int = 3000,
    learning_rate: float = 0.01,
    noise_channels: int = 32,
    channels: Sequence[int] = (16, 32, 64, 128),
    noise_scale: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Deep Image Prior inpainting of ``mask`` in one image (Ulyanov et al. 2018; AF-Seg Sec. 2.2).

    A U-Net (skip encoder-decoder) maps a fixed noise tensor ``z`` ``(1, noise_channels, H, W)`` ~ U(0, noise_scale)
    to the image (all its channels); the loss is the MSE on the pixels outside ``mask`` only. Known pixels are kept,
    masked ones come from the network.

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` float image.
        mask: ``(H, W)`` region to inpaint (1 = object to remove).
        steps: Adam steps (some thousands in the paper; a few hundred or fewer for CPU demos).
        learning_rate: Adam learning rate (0.01).
        noise_channels: channels of the noise input (32).
        channels: U-Net channels per level.
        noise_scale: upper bound of the uniform noise input.
        seed: seed of the noise and of the network initialisation.

    Returns:
        float32 clean background of the shape of ``image``.
    """
    torch.manual_seed(seed)
    depth = len(channels) - 1
    img = torch.as_tensor(image, dtype=torch.float32)
    x, (h, w) = _pad_to_multiple(img[None, None] if img.ndim == 2 else img[None], 2**depth)
    num_channels = x.shape[1]
    keep, _ = _pad_to_multiple(1.0 - torch.as_tensor(mask > 0, dtype=torch.float32)[None, None], 2**depth)
    z = torch.rand(1, noise_channels, *x.shape[-2:]) * noise_scale
    net = UNet(
        2, noise_channels, num_channels, channels=channels, strides=(2,) * depth, num_res_units=0, act="LEAKYRELU"
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((net(z) - x) ** 2 * keep).sum() / (keep.sum().clamp_min(1.0) * num_channels)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        out = net(z)
    clean = (keep * x + (1 - keep) * out)[0, :, :h, :w]
    return (clean[0] if img.ndim == 2 else clean).numpy().astype(np.float32)


def write_clean_backgrounds(
    items: Sequence[Mapping],
    out_dir: str | os.PathLike,
    weak_key: str = "weak",
    key: str = "background",
    area_ratio: float = 2.0,
    dsp_max_steps: int = 500,
    dsp_learning_rate: float = 1e-2,
    mask_dilation: int = 1,
    dip_steps: int = 3000,
    dip_learning_rate: float = 0.01,
    noise_channels: int = 32,
    seed: int = 0,
    channel: int | str = "grey",
) -> list[dict]:
    """Stage 2 over the stage-1 datalist: DSP mask, then DIP inpainting, per item.

    Writes ``<index>_dsp.npy`` (``(1, H, W)`` uint8 DSP mask) and ``<index>_background.npy`` (``(C, H, W)`` float32
    clean background, the channels of the image) per item, then ``out_dir/datalist.json`` atomically; when that
    exists the stage is skipped.

    Under ``torchrun`` (``torch.distributed`` initialised, world size > 1) rank ``r`` of ``n`` computes only the
    items ``r, r + n, r + 2n, ...`` (each item's files written atomically by the one rank that computed it); after a
    barrier rank 0 writes ``datalist.json``, and after a second one every rank returns the full list read from it.
    The output folder must be shared by the ranks. The single-process path is unchanged.

    Args:
        items: stage-1 items ``{"image", weak_key}`` (any ``"label"`` key is dropped).
        out_dir: output folder.
        weak_key, key: item keys of the weak label (read) and of the clean background (written).
        area_ratio, dsp_max_steps, dsp_learning_rate: of :func:`deep_segmentation_prior`.
        mask_dilation: disk radius by which the DSP mask is dilated before inpainting (covers blurred edges).
        dip_steps, dip_learning_rate, noise_channels: of :func:`deep_image_prior_inpaint`.
        seed: seed of both optimisations.
        channel: channel of a ``(C, H, W)`` image that DSP is fitted on (index), or ``"grey"`` (mean over channels),
            as in stage 1 (:func:`common.classical.coarse_masks.select_channel`); DIP inpaints all channels.

    Returns:
        the items with ``item[key]`` (clean background) and ``item["dsp"]`` (DSP mask) paths.
    """
    out = Path(out_dir)
    datalist = out / "datalist.json"
    if datalist.is_file():
        return read_json(datalist)["items"]
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    out.mkdir(parents=True, exist_ok=True)
    items = drop_labels(items)
    if distributed:
        logger.info(
            "stage 2: rank %d of %d computes %d of %d items", rank, world_size, len(items[rank::world_size]), len(items)
        )
    result = []
    for index, item in enumerate(items):
        stem = Path(item["image"]).stem
        dsp_path, clean_path = out / f"{index:05d}_{stem}_dsp.npy", out / f"{index:05d}_{stem}_background.npy"
        result.append({**item, "dsp": str(dsp_path), key: str(clean_path)})
        if index % world_size != rank:
            continue
        image = np.load(item["image"]).astype(np.float32)
        weak = np.load(item[weak_key])[0]
        dsp, _ = deep_segmentation_prior(
            select_channel(image, channel), weak, area_ratio, dsp_max_steps, dsp_learning_rate, seed=seed
        )
        inpaint_mask = dilation(dsp > 0, disk(mask_dilation)) if mask_dilation > 0 else dsp > 0
        clean = deep_image_prior_inpaint(image, inpaint_mask, dip_steps, dip_learning_rate, noise_channels, seed=seed)
        save_npy_atomic(dsp_path, dsp[None])
        save_npy_atomic(clean_path, clean)
    if not distributed:
        write_json_atomic(datalist, {"items": result})
        return result
    dist.barrier()  # every rank's share is written
    missing = [p for item in result for p in (item["dsp"], item[key]) if not Path(p).is_file()]
    if missing:  # checked on every rank, so that all stop here instead of one waiting at the next barrier
        raise RuntimeError(f"stage 2: {len(missing)} files of other ranks not found (is {out} shared?): {missing[:3]}")
    if rank == 0:
        write_json_atomic(datalist, {"items": result})
    dist.barrier()  # datalist.json is written
    return read_json(datalist)["items"]
