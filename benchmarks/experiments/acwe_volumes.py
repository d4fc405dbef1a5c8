"""Label-free segmentation of a volume whose object fills a minority of its slices (issue 34).

Trains ``acwe_unsup_seg`` mode 1 (no label) on the synthetic stack of :func:`common.data.sparse_stack.sparse_stack`
with the per-volume ACWE statistics (``acwe_region_statistics: volume``, the default) and with the paper's per-image
form (``image``), segments the stack with ``inference.json`` and prints the 3D Dice, the foreground share of the
object-free slices and the same for one Otsu threshold over the volume::

    python benchmarks/experiments/acwe_volumes.py --max_epochs 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from skimage.filters import threshold_otsu

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common import bundle  # noqa: E402
from common.data.sparse_stack import sparse_stack  # noqa: E402

BUNDLE_ROOT = REPO / "bundles" / "acwe_unsup_seg"


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """3D Dice and the mean/max foreground share of the slices (last axis) with no object in ``truth``."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    dice = 2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)
    empty = ~truth.any(axis=(0, 1))
    share = pred[..., empty].mean(axis=(0, 1))
    return {
        "dice": round(float(dice), 3),
        "empty_share_mean": round(float(share.mean()), 4),
        "empty_share_max": round(float(share.max()), 4),
    }


def run(region_statistics: str, work: Path, max_epochs: int, seed: int = 0, size: int = 96) -> dict[str, float]:
    """Train mode 1 on ``work/images`` and segment it; returns :func:`scores` against ``work/truth.nii.gz``."""
    images, out = work / "images", work / f"run_{region_statistics}"
    common = {"acwe_region_statistics": region_statistics, "patch_size": [size, size]}
    bundle.run_workflow(
        "acwe_unsup_seg",
        ["train.json"],
        "train",
        bundle_root=str(BUNDLE_ROOT),
        unlabeled_dir=str(images),
        output_dir=str(out / "outputs"),
        ckpt_dir=str(out / "models"),
        max_epochs=max_epochs,
        val_interval=max_epochs,
        batch_size=20,
        seed=seed,
        **common,
    )
    bundle.run_workflow(
        "acwe_unsup_seg",
        ["inference.json"],
        "infer",
        bundle_root=str(BUNDLE_ROOT),
        dataset_dir=str(images),
        output_dir=str(out / "preds"),
        ckpt_dir=str(out / "models"),
        **common,
    )
    pred = nib.load(next((out / "preds").glob("*_seg.nii.gz"))).get_fdata()
    return scores(np.squeeze(pred), nib.load(work / "truth.nii.gz").get_fdata())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image_path, label_path = sparse_stack(work)
        image, truth = nib.load(image_path).get_fdata(), nib.load(label_path).get_fdata()
        results = {"otsu_3d": scores(image > threshold_otsu(image), truth)}
        for mode in ("volume", "image"):
            results[mode] = run(mode, work, args.max_epochs, args.seed)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
