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

Large images: both fits cost time in proportion to the pixels they see (on one CPU thread about 1 s per DSP step and
0.7 s per DIP step per megapixel), so a frame above ``max_pixels`` (default 512 x 512, the paper's image size) is
fitted on a copy downscaled by area averaging to at most that many pixels. The DSP logits are upsampled bilinearly
and thresholded at full size (the stop rule compares areas at the fitting size, where the weak label's area is its
area-averaged copy's sum, so lambda keeps its meaning); DIP's output is upsampled bilinearly and used inside the
full-size mask only, every known pixel keeps its full-resolution value. Images at most ``max_pixels`` take exactly the
path of full resolution.

:func:`write_clean_backgrounds` runs both over the stage-1 datalist and writes the results atomically, logging one
line per image (time taken, time elapsed, an estimate of the rest) and, within an image, the step, the time per
step and the time left of each fit at most every ``log_interval`` seconds. Under ``torchrun``
(``torch.distributed`` initialised) each rank computes only its share of the items.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
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

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Stage2Progress",
    "deep_image_prior_inpaint",
    "deep_segmentation_prior",
    "fitting_size",
    "write_clean_backgrounds",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 512 * 512
"""Default pixel budget of the prior fits: the paper's 512 x 512 images are fitted as they are."""

ProgressCallback = Callable[[int, int, str], None]
"""``progress(step, total, detail)``, called after every optimisation step of a fit (``total``: its step limit)."""


def fitting_size(height: int, width: int, max_pixels: int | None) -> tuple[int, int]:
    """Size ``(h, w)`` at which the priors fit a ``height x width`` image: the image's own size when its area is at
    most ``max_pixels`` (or ``max_pixels`` is ``None`` or 0), else the aspect-preserving size of at most
    ``max_pixels`` pixels (each side at least 1)."""
    if not max_pixels or height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    h, w = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
    if h * w > max_pixels:  # a side was raised to 1 (an extreme aspect ratio): the other takes the whole budget
        h, w = (1, max_pixels) if h == 1 else (max_pixels, 1)
    return h, w


def _most_probable(logits: torch.Tensor, count: int) -> np.ndarray:
    """``(H, W)`` bool mask of the ``count`` pixels of highest ``(H, W)`` ``logits`` (ties: the first in raster
    order)."""
    mask = np.zeros(tuple(logits.shape), dtype=bool)
    mask.flat[np.argsort(-logits.numpy(), axis=None, kind="stable")[:count]] = True
    return mask


def _area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, *size)`` by area averaging (the identity when the size is unchanged)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="area")


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
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, int]:
    """DSP mask of one image: fit a U-Net to the weak label, stop when the predicted area is ``area_ratio`` x its own.

    The loss is a class-balanced BCE (foreground and background weigh the same), so the early, smooth predictions
    over-cover the objects and the predicted area shrinks towards the weak label's as training goes on; training
    stops at the first step where ``area(sigmoid(S(x)) > 0.5) <= area_ratio * area(weak)``.

    If the stop rule is not met within ``max_steps`` (too few steps or too small a learning rate: on the 128 x 128
    vessel demo images Adam 1e-3 needs about 350-370 steps, 1e-2 about 70-80), a warning is logged and the mask is
    the ``area_ratio * area(weak)`` pixels of highest predicted probability, so that the mask keeps the area the
    rule asks for instead of covering most of the image.

    An image of more than ``max_pixels`` pixels is fitted at :func:`fitting_size`: image and weak label are area
    averaged to ``(h, w)`` (the weak label becomes a soft target, the BCE weights use its mean), the stop rule
    compares the predicted area at that size with ``area_ratio`` x the soft weak label's sum (the weak label's area
    scaled by ``h w / (H W)``), and the final logits are upsampled bilinearly to ``(H, W)``, where the mask is their
    most probable pixels in the share of the image that the mask (or the fallback) holds at the fitting size: the
    stop rule's area, not just its shape, carries over to full size.

    Args:
        image: ``(H, W)`` float image.
        weak: ``(H, W)`` weak label (0/1).
        area_ratio: lambda of the paper (2).
        max_steps: upper bound on the optimisation steps.
        learning_rate: Adam learning rate (the paper gives none).
        channels: U-Net channels per level.
        seed: seed of the network initialisation.
        max_pixels: pixel budget of the fit (``None`` or 0: always at full size).
        progress: called after every step with ``(step, max_steps, "area <r> x the weak label's")``.

    Returns:
        ``(H, W)`` uint8 DSP mask united with the weak label, and the number of steps taken.
    """
    weak_mask = np.asarray(weak) > 0
    if not weak_mask.any():
        return weak_mask.astype(np.uint8), 0
    torch.manual_seed(seed)
    depth = len(channels) - 1
    full_size = weak_mask.shape
    fit = fitting_size(*full_size, max_pixels)
    image_t = _area_resize(torch.as_tensor(image, dtype=torch.float32)[None, None], fit)
    weak_t = _area_resize(torch.as_tensor(weak_mask, dtype=torch.float32)[None, None], fit)
    x, (h, w) = _pad_to_multiple(image_t, 2**depth)
    y, _ = _pad_to_multiple(weak_t, 2**depth)
    net = UNet(2, 1, 1, channels=channels, strides=(2,) * depth, num_res_units=1, norm="instance")
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    fg = y.mean().clamp(1e-6, 1 - 1e-6)
    weight = y * (0.5 / fg) + (1 - y) * (0.5 / (1 - fg))  # 0.5 / fg on the weak label, 0.5 / (1 - fg) elsewhere
    weak_area = float(weak_t.double().sum())  # its pixel count (at a reduced size: times h w / (H W))
    target_area = area_ratio * weak_area
    logits = torch.zeros(h, w)
    step = 0
    for step in range(1, max_steps + 1):
        optimiser.zero_grad()
        F.binary_cross_entropy_with_logits(net(x), y, weight=weight).backward()
        optimiser.step()
        with torch.no_grad():
            logits = net(x)[0, 0, :h, :w]
        area = float((logits > 0).sum())
        if progress is not None:
            progress(step, max_steps, f"area {area / weak_area:.1f} x the weak label's, stops at {area_ratio:g} x")
        if area <= target_area:
            break
    area = float((logits > 0).sum())
    full_pixels = weak_mask.size / (h * w)  # full-size pixels per pixel of the fitting size (1 at full size)
    if area > target_area:
        logger.warning(
            "Deep Segmentation Prior: predicted area still %.1f x the weak label's after %d steps (stop rule: %.1f x);"
            " raise max_steps or learning_rate. Using the %d most probable pixels.",
            area / weak_area,
            step,
            area_ratio,
            int(target_area * full_pixels),
        )
    if fit == full_size:
        mask = (logits > 0).numpy()
        if area > target_area:
            mask = _most_probable(logits, int(target_area))
    else:  # the full-size mask keeps the share of the image chosen at the fitting size, its most probable pixels
        logits = F.interpolate(logits[None, None], size=full_size, mode="bilinear", align_corners=False)[0, 0]
        mask = _most_probable(logits, round(min(area, target_area) * full_pixels))
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
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Deep Image Prior inpainting of ``mask`` in one image (Ulyanov et al. 2018; AF-Seg Sec. 2.2).

    A U-Net (skip encoder-decoder) maps a fixed noise tensor ``z`` ``(1, noise_channels, H, W)`` ~ U(0, noise_scale)
    to the image (all its channels); the loss is the MSE on the pixels outside ``mask`` only. Known pixels are kept,
    masked ones come from the network.

    An image of more than ``max_pixels`` pixels is fitted at :func:`fitting_size` ``(h, w)``: the image is area
    averaged to that size, a pixel there counts as known only if all the full-size pixels it averages are known, and
    the network's ``(C, h, w)`` output is upsampled bilinearly to ``(H, W)`` and used inside ``mask`` only (the
    inpainted areas then carry the detail of the reduced size). ``z`` is ``(1, noise_channels, h, w)`` (padded).

    Args:
        image: ``(H, W)`` or ``(C, H, W)`` float image.
        mask: ``(H, W)`` region to inpaint (1 = object to remove).
        steps: Adam steps (some thousands in the paper; a few hundred or fewer for CPU demos).
        learning_rate: Adam learning rate (0.01).
        noise_channels: channels of the noise input (32).
        channels: U-Net channels per level.
        noise_scale: upper bound of the uniform noise input.
        seed: seed of the noise and of the network initialisation.
        max_pixels: pixel budget of the fit (``None`` or 0: always at full size).
        progress: called after every step with ``(step, steps, "masked MSE <loss>")``.

    Returns:
        float32 clean background of the shape of ``image``.
    """
    torch.manual_seed(seed)
    depth = len(channels) - 1
    img = torch.as_tensor(image, dtype=torch.float32)
    full_x = img[None, None] if img.ndim == 2 else img[None]
    full_keep = 1.0 - torch.as_tensor(mask > 0, dtype=torch.float32)[None, None]
    full_size = tuple(full_x.shape[-2:])
    fit = fitting_size(*full_size, max_pixels)
    small_keep = full_keep if fit == full_size else (_area_resize(full_keep, fit) > 0.999).float()
    x, (h, w) = _pad_to_multiple(_area_resize(full_x, fit), 2**depth)
    num_channels = x.shape[1]
    keep, _ = _pad_to_multiple(small_keep, 2**depth)
    z = torch.rand(1, noise_channels, *x.shape[-2:]) * noise_scale
    net = UNet(
        2, noise_channels, num_channels, channels=channels, strides=(2,) * depth, num_res_units=0, act="LEAKYRELU"
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    for step in range(1, steps + 1):
        optimiser.zero_grad()
        loss = ((net(z) - x) ** 2 * keep).sum() / (keep.sum().clamp_min(1.0) * num_channels)
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(step, steps, f"masked MSE {float(loss.detach()):.3g}")
    with torch.no_grad():
        out = net(z)[:, :, :h, :w]
    if fit != full_size:
        out = F.interpolate(out, size=full_size, mode="bilinear", align_corners=False)
    clean = (full_keep * full_x + (1 - full_keep) * out)[0]
    return (clean[0] if img.ndim == 2 else clean).numpy().astype(np.float32)


def _duration(seconds: float) -> str:
    """``41 s``, ``8.3 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Stage2Progress:
    """Progress log of stage 2 (``logging``, logger ``common.priors.deep_priors``, level INFO).

    One line when an image starts (its size and the size the priors are fitted at), then a line within a fit whenever
    ``log_interval`` seconds have passed since the image's last line (:meth:`callback`: step, time per step, time
    left of that fit; a DSP's left time is an upper bound, the stop rule may end it earlier), and one line when an
    image is done (its time, the time elapsed since the stage started, and the rest estimated from the mean time per
    image so far)::

        stage 2: image 3/15 (frame_03) done in 41 s (DSP 57 steps, DIP 3000 steps, fitted at 408 x 641);
        elapsed 2.1 min, about 8.4 min left

    Args:
        num_images: images this process computes.
        log_interval: least seconds between two lines of an image (0: a line after every step).
        clock: seconds, monotonic (replaceable in tests).
    """

    def __init__(
        self, num_images: int, log_interval: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.num_images, self.log_interval, self.clock = num_images, log_interval, clock
        self.start = clock()
        self.done = 0
        self.name = ""
        self.image_start = self.last_line = self.start

    def begin_image(self, name: str, size: tuple[int, int], fit: tuple[int, int]) -> None:
        """Log that image ``name`` of ``size`` ``(H, W)`` starts, fitted at ``fit`` ``(h, w)``."""
        self.name = name
        self.image_start = self.last_line = self.clock()
        at = "full size" if tuple(fit) == tuple(size) else f"{fit[0]} x {fit[1]} (max_pixels)"
        logger.info(
            "stage 2: image %d/%d (%s): %d x %d px, priors fitted at %s",
            self.done + 1,
            self.num_images,
            name,
            *size,
            at,
        )

    def callback(self, fit_name: str, upper_bound: bool = False) -> ProgressCallback:
        """A ``progress(step, total, detail)`` of one fit, logging when ``log_interval`` seconds have passed since
        the image's last line (its start line or a step line of any of its fits)."""
        begin = self.clock()

        def report(step: int, total: int, detail: str) -> None:
            now = self.clock()
            if now - self.last_line < self.log_interval:
                return
            self.last_line = now
            per_step = (now - begin) / max(step, 1)
            logger.info(
                "stage 2: image %d/%d (%s): %s step %d/%d (%s), %.2f s/step, %s %s left of this fit",
                self.done + 1,
                self.num_images,
                self.name,
                fit_name,
                step,
                total,
                detail,
                per_step,
                "at most" if upper_bound else "about",
                _duration(per_step * (total - step)),
            )

        return report

    def end_image(self, detail: str) -> None:
        """Log that the current image is done, with the elapsed time and the estimate of the rest."""
        now = self.clock()
        self.done += 1
        elapsed = now - self.start
        left = elapsed / self.done * (self.num_images - self.done)
        logger.info(
            "stage 2: image %d/%d (%s) done in %s (%s); elapsed %s, about %s left",
            self.done,
            self.num_images,
            self.name,
            _duration(now - self.image_start),
            detail,
            _duration(elapsed),
            _duration(left),
        )


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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    log_interval: float = 30.0,
) -> list[dict]:
    """Stage 2 over the stage-1 datalist: DSP mask, then DIP inpainting, per item.

    Writes ``<index>_dsp.npy`` (``(1, H, W)`` uint8 DSP mask) and ``<index>_background.npy`` (``(C, H, W)`` float32
    clean background, the channels of the image) per item, then ``out_dir/datalist.json`` atomically; when that
    exists the stage is skipped.

    Progress goes to the log (:class:`Stage2Progress`): a line when an image starts and when it is done (time taken,
    elapsed, estimated rest), and within each fit a line at most every ``log_interval`` seconds.

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
        max_pixels: pixel budget of both fits: a larger image is fitted on a downscaled copy of at most this many
            pixels and the results are brought back to full size (:func:`fitting_size`); the written DSP mask and
            clean background always have the image's size. ``None`` or 0: always at full size. Default 512 x 512.
        log_interval: least seconds between two progress lines of an image (0: a line after every step).

    Returns:
        the items with ``item[key]`` (clean background) and ``item["dsp"]`` (DSP mask) paths.
    """
    out = Path(out_dir)
    datalist = out / "datalist.json"
    if datalist.is_file():
        logger.info("stage 2: clean backgrounds found in %s (delete the folder to recompute)", out)
        return read_json(datalist)["items"]
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    out.mkdir(parents=True, exist_ok=True)
    items = drop_labels(items)
    if distributed:
        logger.info(
            "stage 2: rank %d of %d computes %d of %d items", rank, world_size, len(items[rank::world_size]), len(items)
        )
    mine = len(items[rank::world_size])
    logger.info(
        "stage 2: clean backgrounds of %d images -> %s (DSP at most %d steps, DIP %d steps, fitted at most %s px; a"
        " progress line at most every %g s)",
        mine,
        out,
        dsp_max_steps,
        dip_steps,
        max_pixels or "all",
        log_interval,
    )
    progress = Stage2Progress(mine, log_interval)
    result = []
    for index, item in enumerate(items):
        stem = Path(item["image"]).stem
        dsp_path, clean_path = out / f"{index:05d}_{stem}_dsp.npy", out / f"{index:05d}_{stem}_background.npy"
        result.append({**item, "dsp": str(dsp_path), key: str(clean_path)})
        if index % world_size != rank:
            continue
        image = np.load(item["image"]).astype(np.float32)
        weak = np.load(item[weak_key])[0]
        fit = fitting_size(*weak.shape, max_pixels)
        progress.begin_image(stem, weak.shape, fit)
        dsp, dsp_steps = deep_segmentation_prior(
            select_channel(image, channel),
            weak,
            area_ratio,
            dsp_max_steps,
            dsp_learning_rate,
            seed=seed,
            max_pixels=max_pixels,
            progress=progress.callback("Deep Segmentation Prior", upper_bound=True),
        )
        inpaint_mask = dilation(dsp > 0, disk(mask_dilation)) if mask_dilation > 0 else dsp > 0
        clean = deep_image_prior_inpaint(
            image,
            inpaint_mask,
            dip_steps,
            dip_learning_rate,
            noise_channels,
            seed=seed,
            max_pixels=max_pixels,
            progress=progress.callback("Deep Image Prior"),
        )
        save_npy_atomic(dsp_path, dsp[None])
        save_npy_atomic(clean_path, clean)
        progress.end_image(f"DSP {dsp_steps} steps, DIP {dip_steps} steps, fitted at {fit[0]} x {fit[1]}")
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
