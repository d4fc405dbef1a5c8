"""The two-process ``torchrun`` case of every bundle: ``train.json`` + ``multi_gpu_train.json`` on CPU (gloo) with a
tiny schedule, and what a finished run must leave. Used by ``test_distributed.py`` and by the stress loop
``torchrun_stress.py``, so that both launch exactly the same runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_cluttered_mnist import write_small_mnist
from test_mipr_auto_annotation import TINY as MIPR_TINY
from test_translation_semi_seg import SMALL_RUN
from test_unimatch_semi_seg import TORCHRUN_OVERRIDES as UNIMATCH_TORCHRUN

from common.bundle import TorchrunResult, torchrun

# bundle -> config overrides (besides the output folders); every validation split holds at least one image per rank
OVERRIDES: dict[str, dict[str, Any]] = {
    "supervised_seg": {
        "demo_kwargs": {"num_cases": 6, "image_size": 64},
        "patch_size": [64, 64],
        "batch_size": 2,
        "val_fraction": 0.34,
        "max_epochs": 1,
        "val_interval": 1,
    },
    "acwe_unsup_seg": {
        "demo_kwargs": {"num_cases": 6, "image_size": 32, "depth": 8},
        "val_fraction": 0.34,
        "batch_size": 4,
        "max_epochs": 1,
        "val_interval": 1,
    },
    "adversarial_semi_seg": {
        "demo_task": "tubular",
        "demo_kwargs": {"num_cases": 8, "image_size": 32, "depth": 4},
        "labelled_fraction": 0.5,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "epoch_length": 2,
        "semi_start_epoch": 0,  # the adversarial and pseudo-label terms run from the first iteration
        "patch_size": [32, 32],
        "batch_size": 2,
        "unlabeled_batch_size": 2,
        "network_def#channels": [8, 16, 32],
        "network_def#strides": [2, 2],
        "discriminator_channels": [8, 16],
        "max_epochs": 1,
        "val_interval": 1,
    },
    "af_seg": {
        "demo_kwargs": {"num_cases": 6, "image_size": 32},
        "val_fraction": 0.34,
        "patch_size": [32, 32],
        "batch_size": 2,
        "dip_steps": 3,
        "background#dsp_max_steps": 3,
        "max_epochs": 1,
        "val_interval": 1,
    },
    "mipr_auto_annotation": {**MIPR_TINY, "num_rounds": 1, "max_epochs": 1, "generator_epochs": 1},
    "translation_semi_seg": {**SMALL_RUN, "val_interval": 1},
    "unimatch_semi_seg": UNIMATCH_TORCHRUN,  # semi_threshold 0: the unlabelled terms run through DDP from step 1
}

# bundle -> files (relative to the checkpoint folder, or to the output folder for "outputs/...") rank 0 must write
EXPECTED_FILES: dict[str, tuple[str, ...]] = {
    "supervised_seg": ("model.pt", "checkpoint_epoch=1.pt"),
    "acwe_unsup_seg": ("model.pt",),
    "adversarial_semi_seg": ("model.pt", "checkpoint_epoch=1.pt"),
    "af_seg": ("model.pt",),
    "mipr_auto_annotation": ("round1/model.pt", "outputs/mipr/rounds.json"),
    "translation_semi_seg": ("model.pt", "checkpoint_epoch=1.pt"),
    "unimatch_semi_seg": ("model.pt", "checkpoint_epoch=1.pt"),
}

BASE_PORT = {bundle: 29517 + 7 * i for i, bundle in enumerate(OVERRIDES)}


def run_case(bundle: str, tmp: Path, port: int | None = None, timeout: float = 600.0) -> tuple[TorchrunResult, list]:
    """Launch ``bundle``'s two-process case with outputs under ``tmp``.

    Returns the launch result and the expected files that are missing (empty when the run is complete).
    """
    overrides = {"output_dir": str(tmp / "outputs"), "ckpt_dir": str(tmp / "models"), **OVERRIDES[bundle]}
    if bundle == "translation_semi_seg":
        overrides["mnist_source"] = str(write_small_mnist(tmp / "mnist", num_train=200, num_test=20))
    result = torchrun(
        bundle,
        ["train.json", "multi_gpu_train.json"],
        overrides,
        nproc=2,
        port=port or BASE_PORT[bundle],
        timeout=timeout,
        log_dir=tmp / "torchrun_logs",
    )
    missing = [
        name
        for name in EXPECTED_FILES[bundle]
        if not (tmp / name if name.startswith("outputs/") else tmp / "models" / name).is_file()
    ]
    return result, missing
