"""torchrun with two CPU processes (gloo) trains supervised_seg, adversarial_semi_seg and translation_semi_seg (whose
trainer averages the gradients over the ranks itself) with multi_gpu_train.json; both ranks finish and rank 0 alone
writes the checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_utils import run_torchrun
from test_cluttered_mnist import write_small_mnist
from test_translation_semi_seg import SMALL_RUN

OVERRIDES = {
    "supervised_seg": {
        "demo_kwargs": {"num_cases": 6, "image_size": 64},
        "patch_size": [64, 64],
        "batch_size": 2,
        "val_fraction": 0.34,  # two validation images: DistributedSampler needs one per rank
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
    },
    "translation_semi_seg": SMALL_RUN,  # + dataset_dir: a small MNIST written by the test
}


@pytest.mark.parametrize("bundle", list(OVERRIDES))
def test_torchrun_two_processes(bundle: str, tmp_path: Path):
    overrides = {
        "output_dir": str(tmp_path / "outputs"),
        "ckpt_dir": str(tmp_path / "models"),
        "max_epochs": 1,
        "val_interval": 1,
        **OVERRIDES[bundle],
    }
    if bundle == "translation_semi_seg":
        overrides["dataset_dir"] = str(write_small_mnist(tmp_path / "mnist", num_train=200, num_test=20))
    port = 29517 + list(OVERRIDES).index(bundle)
    returncode, log = run_torchrun(bundle, overrides, port)
    assert returncode == 0, log
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").is_file(), log
    assert (tmp_path / "models" / "model.pt").is_file(), log
    assert len(list((tmp_path / "models").glob("*.pt"))) == 2, list((tmp_path / "models").iterdir())
