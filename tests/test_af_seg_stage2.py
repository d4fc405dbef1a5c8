"""AF-Seg stage 2 on large images: progress lines per image, and the pixel budget of the prior fits (``max_pixels``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

import common.priors.deep_priors as priors
from benchmarks import af_seg_stage2_cost
from common.priors.deep_priors import (
    Stage2Progress,
    deep_segmentation_prior,
    fitting_size,
    write_clean_backgrounds,
)

LOGGER = "common.priors.deep_priors"
TINY = {"dsp_max_steps": 2, "dip_steps": 2, "noise_channels": 2}


def _disk_image(height: int, width: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` float32 image of a bright disk (radius ``min(H, W) / 5``) and its ``(H, W)`` bool mask."""
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - height / 2) ** 2 + (xx - width / 2 - shift) ** 2 < (min(height, width) / 5) ** 2
    rng = np.random.default_rng(shift)
    return (0.2 + 0.6 * disk + 0.02 * rng.standard_normal((height, width))).astype(np.float32), disk


def _items(tmp: Path, count: int, height: int, width: int) -> list[dict]:
    """``count`` stage-1 items (``(1, H, W)`` image and weak label ``.npy``) of shifted disks."""
    items = []
    for i in range(count):
        image, disk = _disk_image(height, width, shift=i)
        np.save(tmp / f"img{i}.npy", image[None])
        np.save(tmp / f"weak{i}.npy", disk[None].astype(np.uint8))
        items.append({"image": str(tmp / f"img{i}.npy"), "weak": str(tmp / f"weak{i}.npy")})
    return items


def _messages(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and re.search(pattern, r.getMessage())]


def test_progress_line_per_image_with_estimate(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """One start and one done line per image, the done line with the elapsed time and an estimate of the rest; no
    line within a fit when the fits are shorter than ``log_interval``."""
    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        write_clean_backgrounds(_items(tmp_path, 2, 16, 16), tmp_path / "out", log_interval=1e9, **TINY)
    done = _messages(caplog, r"done in")
    assert len(done) == 2 and len(_messages(caplog, r"px, priors fitted at full size")) == 2
    for number, line in enumerate(done, start=1):
        assert re.match(
            rf"stage 2: image {number}/2 \(img{number - 1}\) done in \d+ s \(DSP \d+ steps, DIP 2 steps", line
        )
        assert re.search(r"; elapsed \d+ s, about \d+ s left$", line)
    assert not _messages(caplog, r" step \d+/")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):  # the folder is complete: reused, nothing computed
        write_clean_backgrounds(_items(tmp_path, 2, 16, 16), tmp_path / "out", **TINY)
    assert len(_messages(caplog, r"found in")) == 1 and not _messages(caplog, r"done in")


def test_progress_within_each_fit_before_the_image_is_done(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """``log_interval`` 0: a line after every step of both fits, each with its time per step and the time left,
    all of an image's lines before its done line."""
    torch.set_num_threads(1)
    kwargs = dict(TINY, dsp_max_steps=3, dsp_learning_rate=1e-8)  # the stop rule is not met: all 3 DSP steps run
    with caplog.at_level(logging.INFO, logger=LOGGER):
        write_clean_backgrounds(_items(tmp_path, 2, 16, 16), tmp_path / "out", log_interval=0, **kwargs)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    dsp = [m for m in messages if "Deep Segmentation Prior step" in m]
    dip = [m for m in messages if "Deep Image Prior step" in m]
    assert len(dsp) == 2 * 3 and len(dip) == 2 * 2
    assert re.search(r"image 1/2 \(img0\): Deep Segmentation Prior step 1/3 \(area [\d.]+ x the weak label's", dsp[0])
    assert all(re.search(r"\d+\.\d\d s/step, at most \d+ s left of this fit$", m) for m in dsp)
    assert all(re.search(r"\(masked MSE [\d.e+-]+\), \d+\.\d\d s/step, about \d+ s left of this fit$", m) for m in dip)
    first_done = next(i for i, m in enumerate(messages) if "done in" in m)
    assert messages.index(dsp[0]) < messages.index(dip[0]) < first_done
    assert sum("image 1/2" in m for m in messages[:first_done] if " step " in m) == 3 + 2


def test_progress_throttle_and_estimates():
    """With a clock that advances 10 s per reading and ``log_interval`` 30 s: a step line whenever 30 s have passed
    since the image's last line, whichever fit it is in, each with 10 s/step and the steps left times that; after
    image 1 of 3, 2 min after the start, the rest is estimated at 2 x 2 min."""
    ticks = iter(range(0, 10_000, 10))
    progress = Stage2Progress(3, log_interval=30.0, clock=lambda: float(next(ticks)))  # clock 0
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        progress.begin_image("frame", (700, 1100), (408, 641))  # clock 10: start line
        dsp = progress.callback("Deep Segmentation Prior", upper_bound=True)  # clock 20
        for step in (1, 2):  # clock 30, 40: a line at step 2
            dsp(step, 500, "area 3.0 x the weak label's, stops at 2 x")
        dip = progress.callback("Deep Image Prior")  # clock 50
        for step in range(1, 7):  # clock 60 ... 110: lines at 70 and 100 (steps 2, 5)
            dip(step, 6, "masked MSE 0.1")
        progress.end_image("DSP 2 steps, DIP 6 steps, fitted at 408 x 641")  # clock 120
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert records == [
        "stage 2: image 1/3 (frame): 700 x 1100 px, priors fitted at 408 x 641 (max_pixels)",
        "stage 2: image 1/3 (frame): Deep Segmentation Prior step 2/500 (area 3.0 x the weak label's, stops at 2 x),"
        " 10.00 s/step, at most 83.0 min left of this fit",
        "stage 2: image 1/3 (frame): Deep Image Prior step 2/6 (masked MSE 0.1), 10.00 s/step, about 40 s left of this"
        " fit",
        "stage 2: image 1/3 (frame): Deep Image Prior step 5/6 (masked MSE 0.1), 10.00 s/step, about 10 s left of this"
        " fit",
        "stage 2: image 1/3 (frame) done in 1.8 min (DSP 2 steps, DIP 6 steps, fitted at 408 x 641); elapsed 2.0 min,"
        " about 4.0 min left",
    ]


def test_fitting_size():
    assert fitting_size(700, 1100, 512 * 512) == (408, 641) and 408 * 641 <= 512 * 512
    assert fitting_size(128, 128, 512 * 512) == (128, 128) == fitting_size(128, 128, None) == fitting_size(128, 128, 0)
    assert fitting_size(512, 512, 512 * 512) == (512, 512)
    assert fitting_size(1, 10_000, 100) == (1, 100) and fitting_size(10_000, 1, 100) == (100, 1)


class _RecordingUNet(UNet):
    """MONAI ``UNet`` that records the spatial shape of every input it sees."""

    seen: list[tuple[int, int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _RecordingUNet.seen.append((x.shape[1], *x.shape[-2:]))
        return super().forward(x)


def test_large_image_fitted_at_reduced_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 40 x 60 image under a 600-pixel budget: both networks see the 20 x 30 copy (padded to their stride), the
    written DSP mask and clean background have the image's size, and every known pixel keeps its value."""
    torch.set_num_threads(1)
    monkeypatch.setattr(priors, "UNet", _RecordingUNet)
    _RecordingUNet.seen = []
    items = _items(tmp_path, 1, 40, 60)
    out = write_clean_backgrounds(items, tmp_path / "out", max_pixels=600, mask_dilation=0, **TINY)
    assert fitting_size(40, 60, 600) == (20, 30)
    dsp_inputs = {s[1:] for s in _RecordingUNet.seen if s[0] == 1}  # DSP: grey image, 2 strides -> multiple of 4
    dip_inputs = {s[1:] for s in _RecordingUNet.seen if s[0] == TINY["noise_channels"]}  # DIP: noise, 3 strides
    assert dsp_inputs == {(20, 32)} and dip_inputs == {(24, 32)}
    assert len(_RecordingUNet.seen) == 2 * 2 + 2 + 1  # DSP: 2 x (fit + stop check); DIP: 2 steps + final output
    image, weak = np.load(items[0]["image"]), np.load(items[0]["weak"])
    background, dsp = np.load(out[0]["background"]), np.load(out[0]["dsp"])
    assert background.shape == image.shape == (1, 40, 60) and dsp.shape == (1, 40, 60)
    assert (dsp >= weak).all()
    assert np.array_equal(background[dsp == 0], image[dsp == 0])
    assert np.isfinite(background).all()


def test_dsp_stop_rule_at_reduced_size():
    """At a quarter of the pixels the DSP still stops by its rule (area at the fitting size <= 2 x the weak label's),
    and the full-size mask keeps that area ratio: the weak label plus its most probable pixels, covering the object
    that the weak label only partly marks."""
    torch.set_num_threads(1)
    image, disk = _disk_image(64, 64)
    weak = disk & np.roll(disk, 6, axis=1)  # a weak label that misses part of the object
    ratios: list[float] = []

    def progress(step: int, total: int, detail: str) -> None:
        ratios.append(float(re.match(r"area ([\d.]+) x", detail).group(1)))

    mask, steps = deep_segmentation_prior(
        image, weak, area_ratio=2.0, max_steps=200, channels=(8, 16), max_pixels=1024, progress=progress
    )
    assert steps < 200 and len(ratios) == steps and ratios[-1] <= 2.0 < max(ratios)  # the rule ended the fit
    assert (mask >= weak).all() and (mask[disk] > 0).mean() > 0.9
    assert ratios[-1] - 0.1 <= mask.sum() / weak.sum() <= 2.0 * 1.05


def test_images_within_budget_are_unchanged(tmp_path: Path):
    """An image at most ``max_pixels`` takes the full-size path: identical arrays to the budget disabled."""
    torch.set_num_threads(1)
    items = _items(tmp_path, 2, 32, 32)
    outs = [
        write_clean_backgrounds(items, tmp_path / f"out{budget}", max_pixels=budget, **TINY)
        for budget in (None, 32 * 32, 512 * 512)
    ]
    for key in ("background", "dsp"):
        for i in range(2):
            arrays = [np.load(out[i][key]) for out in outs]
            assert all(np.array_equal(arrays[0], a) for a in arrays[1:])


def test_cost_benchmark_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``benchmarks/af_seg_stage2_cost.py`` on a small frame: one line per budget, with the fitting size and the
    times per step."""
    argv = ["af_seg_stage2_cost.py", "--height", "64", "--width", "96", "--steps", "3", "--budgets", "0", "2048"]
    monkeypatch.setattr("sys.argv", argv + ["--dsp-max-steps", "3", "--dsp-to-stop", "--dip-quality", "2"])
    af_seg_stage2_cost.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("frame 64 x 96 (0.01 MP)") and len(lines) == 1 + 2 * 3
    assert lines[1].startswith("max_pixels off: fitted at 64 x 96 (0.01 MP); CPU s/step: DSP ")
    h, w = fitting_size(64, 96, 2048)
    assert lines[4].startswith(f"max_pixels 2048: fitted at {h} x {w} ") and "per image" in lines[4]
    assert lines[2].startswith("  DSP to its stop rule: ") and lines[3].startswith("  DIP 2 steps on the weak label")
