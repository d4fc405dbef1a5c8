"""Cost of AF-Seg stage 2 (Deep Segmentation Prior + Deep Image Prior) on a large frame, on one CPU thread.

Builds a synthetic ``height x width`` frame (default 700 x 1100, 0.77 megapixel, like a whole fluorescence frame) by
tiling 256-px demo cell images (``common.data.demo.generate_cells``), takes its weak label from stage 1
(``common.classical.coarse_masks.coarse_mask``, level set, eroded 1 px), then times a few steps of each fit through
the fits' ``progress`` callbacks (median CPU and wall time between two steps), at full size (``max_pixels`` 0, as
before the budget existed) and at each given budget. The CPU time per step (one torch thread: the wall time on an idle
core) is multiplied by the default schedule (``dsp_max_steps`` 500, an upper bound since the stop rule may end the DSP
earlier, and ``dip_steps`` 3000) to estimate the stage-2 time per image. With ``--dsp-to-stop`` the DSP also runs at
each budget until its stop rule (or ``dsp_max_steps``): the steps it took, its area and the share of the true object
pixels it holds (all, and those the weak label missed: what the DSP is for) are printed. With ``--dip-quality N``
DIP inpaints the weak label plus hidden background squares in ``N`` steps at each budget, and its error on the
hidden squares (whose true values are known) is printed.

    python benchmarks/af_seg_stage2_cost.py                 # 0.77 MP frame, budgets 0 (full size) and 262144
    python benchmarks/af_seg_stage2_cost.py --budgets 0 262144 65536 --dsp-to-stop --dip-quality 300

Prints one line per setting; nothing is written except a temporary folder of demo images.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.morphology import dilation, disk

from common.classical.coarse_masks import coarse_mask
from common.data.demo import generate_cells
from common.priors.deep_priors import deep_image_prior_inpaint, deep_segmentation_prior, fitting_size


def synthetic_frame(height: int, width: int, tile: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(height, width)`` float32 frame in [0, 1] tiled from ``tile``-px demo cell images, and its ``(height,
    width)`` bool truth (read here only to score the DSP mask and the inpainting)."""
    rows, cols = -(-height // tile), -(-width // tile)
    with tempfile.TemporaryDirectory() as tmp:
        generate_cells(tmp, num_cases=rows * cols, image_size=tile, seed=seed)
        tiles = [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(Path(tmp).glob("imagesTr/*.png"))]
        truths = [np.asarray(Image.open(p)) > 0 for p in sorted(Path(tmp).glob("labelsTr/*.png"))]
    frame = np.block([[tiles[r * cols + c] for c in range(cols)] for r in range(rows)])
    truth = np.block([[truths[r * cols + c] for c in range(cols)] for r in range(rows)])
    return frame[:height, :width], truth[:height, :width]


def hidden_background(truth: np.ndarray, mask: np.ndarray, side: int = 12, tries: int = 400) -> np.ndarray:
    """``(H, W)`` bool: random ``side``-px squares of background at least 3 px from any object or masked pixel, to
    be hidden from DIP and scored against the image (the inpainting error on pixels whose true value is known)."""
    rng = np.random.default_rng(0)
    near = dilation(truth | mask, disk(3))
    hidden = np.zeros_like(mask)
    for _ in range(tries):
        y, x = rng.integers(0, truth.shape[0] - side), rng.integers(0, truth.shape[1] - side)
        if not near[y : y + side, x : x + side].any():
            hidden[y : y + side, x : x + side] = True
    return hidden


def seconds_per_step(fit: Callable[[Callable[[int, int, str], None]], object]) -> tuple[float, float]:
    """Run ``fit(progress)``; return the median CPU time and the median wall time between two consecutive steps
    (set-up excluded). With one torch thread the CPU time is the wall time on an idle core; the wall time also counts
    the waits for the other processes of a shared machine."""
    cpu: list[float] = []
    wall: list[float] = []
    fit(lambda step, total, detail: (cpu.append(time.process_time()), wall.append(time.perf_counter())))
    if len(cpu) < 2:
        raise RuntimeError(f"only {len(cpu)} step(s) timed; use --steps >= 2")
    return float(np.median(np.diff(cpu))), float(np.median(np.diff(wall)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=700)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--steps", type=int, default=12, help="timed steps of each fit")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 262144], help="max_pixels (0: full size)")
    parser.add_argument("--dsp-max-steps", type=int, default=500)
    parser.add_argument("--dip-steps", type=int, default=3000)
    parser.add_argument("--dsp-to-stop", action="store_true", help="also run the DSP to its stop rule and score it")
    parser.add_argument("--dip-quality", type=int, default=0, help="DIP steps of an inpainting check (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the DSP and DIP fits")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("common.priors.deep_priors").setLevel(logging.ERROR)  # the DSP's expected stop-rule warning

    frame, truth = synthetic_frame(args.height, args.width)
    weak = coarse_mask(frame, method="level_set", erosion_radius=1)
    mask = weak > 0
    missed = truth & ~mask
    print(
        f"frame {args.height} x {args.width} ({frame.size / 1e6:.2f} MP), weak label {mask.mean():.1%} of the frame"
        f" holding {(mask & truth).sum() / max(truth.sum(), 1):.1%} of the true object pixels, torch threads"
        f" {torch.get_num_threads()}, timed steps {args.steps}"
    )
    for budget in args.budgets:
        fit = fitting_size(args.height, args.width, budget)
        megapixels = fit[0] * fit[1] / 1e6
        dsp, dsp_wall = seconds_per_step(  # area_ratio 0: the stop rule is never met, every step runs
            lambda p: deep_segmentation_prior(
                frame, weak, area_ratio=0.0, max_steps=args.steps, max_pixels=budget, progress=p
            )
        )
        dip, dip_wall = seconds_per_step(
            lambda p: deep_image_prior_inpaint(frame, mask, steps=args.steps, max_pixels=budget, progress=p)
        )
        total = args.dsp_max_steps * dsp + args.dip_steps * dip
        print(
            f"max_pixels {budget or 'off'}: fitted at {fit[0]} x {fit[1]} ({megapixels:.2f} MP);"
            f" CPU s/step: DSP {dsp:.3f} ({dsp / megapixels:.2f} per MP), DIP {dip:.3f} ({dip / megapixels:.2f} per"
            f" MP) (wall {dsp_wall:.3f}, {dip_wall:.3f}); default schedule (DSP <= {args.dsp_max_steps}, DIP"
            f" {args.dip_steps} steps): <= {total / 60:.1f} CPU min per image"
            f" ({total / 60 / (frame.size / 1e6):.1f} per megapixel of the frame); DIP alone"
            f" {args.dip_steps * dip / 60:.1f} min"
        )
        if args.dsp_to_stop:
            start, start_wall = time.process_time(), time.perf_counter()
            dsp_mask, taken = deep_segmentation_prior(
                frame, weak, max_steps=args.dsp_max_steps, seed=args.seed, max_pixels=budget
            )
            dsp_mask = dsp_mask > 0
            print(
                f"  DSP to its stop rule: {taken} steps, {time.process_time() - start:.0f} CPU s"
                f" ({time.perf_counter() - start_wall:.0f} s wall); area {dsp_mask.sum() / mask.sum():.2f} x the weak"
                f" label's, holding {(dsp_mask & truth).sum() / max(truth.sum(), 1):.1%} of the true object pixels and"
                f" {(dsp_mask & missed).sum() / max(missed.sum(), 1):.1%} of those the weak label missed"
            )
        if args.dip_quality:
            hidden = hidden_background(truth, mask)
            start = time.process_time()
            clean = deep_image_prior_inpaint(
                frame, mask | hidden, steps=args.dip_quality, seed=args.seed, max_pixels=budget
            )
            seconds = time.process_time() - start
            rmse = float(np.sqrt(np.mean((clean[hidden] - frame[hidden]) ** 2))) if hidden.any() else float("nan")
            spread = frame[~dilation(truth, disk(3))].std()
            print(
                f"  DIP {args.dip_quality} steps on the weak label + {hidden.sum()} hidden background pixels: RMSE"
                f" {rmse:.4f} there (background sd {spread:.4f}), {seconds:.0f} CPU s"
            )


if __name__ == "__main__":
    main()
