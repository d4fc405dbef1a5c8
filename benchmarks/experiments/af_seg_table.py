"""AF-Seg Table 1 on the demo data: classical method / AF-Seg / supervised U-Net, beside the paper's numbers.

    python benchmarks/experiments/af_seg_table.py [--out outputs/af_seg_table] [--tasks cells vessels] [--epochs 10]

For each demo task the same split (seed 0, 50/20/30 train/validation/test as in the paper) is used by:

* classical: the stage-1 coarse masks of AF-Seg (Chan-Vese level set + erosion for cells, Frangi vesselness + Otsu
  threshold for vessels) computed on the test images, with the erosion radius stage 1 chose on the training images;
  the same masks without erosion; and Otsu's threshold per image (``common.classical.baselines``);
* AF-Seg: ``bundles/af_seg`` ``train.json`` (stages 1-3, no label) then ``evaluate.json``;
* supervised: ``bundles/supervised_seg`` trained with the true labels of the training images.

Both bundles run in-process through ``common.bundle.run_workflow``. Metrics (accuracy, precision, recall, Dice;
mean +- std over test images) come from :class:`common.metrics.SegmentationReport` (the bundles' ``metrics.json``
read back with ``common.metrics.read_metrics``). Writes ``<out>/af_seg_table.md`` and ``.json`` and prints the table.
The default schedule is reduced to fit a few CPU minutes per task (see ``--help``); the paper trains 100 epochs
with 3000 DIP steps on 512x512 images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common.bundle import run_workflow  # noqa: E402
from common.classical.baselines import classical_segmentation, report_on_items  # noqa: E402
from common.classical.coarse_masks import coarse_mask  # noqa: E402
from common.metrics import MetricsFile, read_metrics  # noqa: E402

METRICS = ("accuracy", "precision", "recall", "dice")
PAPER = {  # Table 1 of Yu, Dong et al. (ISBI 2020): accuracy, precision, recall, Dice (mean, std)
    ("cells", "classical"): (0.982, 0.894, 0.806, 0.839, 0.070),
    ("cells", "supervised"): (0.996, 0.961, 0.974, 0.967, 0.011),
    ("cells", "AF-Seg"): (0.990, 0.906, 0.926, 0.915, 0.029),
    ("vessels", "classical"): (0.927, 0.943, 0.481, 0.636, 0.046),
    ("vessels", "supervised"): (0.976, 0.892, 0.937, 0.913, 0.017),
    ("vessels", "AF-Seg"): (0.953, 0.833, 0.810, 0.820, 0.028),
}
CLASSICAL_NAME = {"cells": "level set (Chan-Vese)", "vessels": "Hessian (Frangi)"}
METHODS = ("classical", "classical, no erosion", "Otsu", "AF-Seg", "supervised")


def _scores(metrics: MetricsFile) -> dict[str, list[float]]:
    """``{metric: [mean, std]}`` over test images (foreground class) of one report."""
    return {m: [metrics.mean(m), metrics.std(m)] for m in METRICS}


def classical_scores(test_items: list[dict], segment: Callable[[np.ndarray], np.ndarray]) -> dict[str, list[float]]:
    """``segment(image (H, W)) -> mask (H, W)`` on the test images scored against their labels (in memory)."""
    content = report_on_items(test_items, segment).to_dict()
    return _scores(MetricsFile(Path("classical"), content["summary"], content["per_image"], content["class_names"]))


def run_task(task: str, out: Path, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Classical, AF-Seg and supervised scores on one demo task."""
    common_overrides = {
        "demo_task": task,
        "demo_kwargs": {"num_cases": args.num_cases, "image_size": args.image_size},
        "val_fraction": 0.2,
        "test_fraction": 0.3,
        "seed": 0,
        "patch_size": [args.patch, args.patch],
        "batch_size": args.batch_size,
        "val_interval": args.epochs,
    }
    af_dir = out / task / "af_seg"
    af = {
        **common_overrides,
        "output_dir": str(af_dir / "outputs"),
        "ckpt_dir": str(af_dir / "models"),
        "constant_epochs": args.epochs // 2,
        "decay_epochs": args.epochs - args.epochs // 2,
        "dip_steps": args.dip_steps,
        "background#dsp_max_steps": args.dsp_steps,
        "background#dsp_learning_rate": args.dsp_learning_rate,
        "learning_rate": args.learning_rate,
    }
    configs = ["train.json"] + (["vessels.json"] if task == "vessels" else [])
    start = time.time()
    workflow = run_workflow("af_seg", configs, **af)
    run_workflow("af_seg", configs + ["evaluate.json"], **af)
    print(f"[{task}] AF-Seg: {time.time() - start:.0f} s", flush=True)
    scores = {"AF-Seg": _scores(read_metrics(af_dir / "outputs" / "eval"))}
    parser = workflow.parser
    test_items = parser.get_parsed_content("datalists")["test"]
    coarse = dict(
        parser.get_parsed_content("coarse"), erosion_radius=parser.get_parsed_content("stage1_erosion_radius")
    )
    scores["classical"] = classical_scores(test_items, lambda image: coarse_mask(image, **coarse))
    uneroded = dict(coarse, erosion_radius=0)
    scores["classical, no erosion"] = classical_scores(test_items, lambda image: coarse_mask(image, **uneroded))
    scores["Otsu"] = classical_scores(test_items, lambda image: classical_segmentation(image, "otsu"))

    sup_dir = out / task / "supervised"
    start = time.time()
    sup = {
        **common_overrides,
        "output_dir": str(sup_dir / "outputs"),
        "ckpt_dir": str(sup_dir / "models"),
        "max_epochs": args.supervised_epochs,
        "val_interval": args.supervised_epochs,
    }
    run_workflow("supervised_seg", ["train.json"], **sup)
    run_workflow("supervised_seg", ["train.json", "evaluate.json"], **sup)
    print(f"[{task}] supervised: {time.time() - start:.0f} s", flush=True)
    scores["supervised"] = _scores(read_metrics(sup_dir / "outputs" / "eval"))
    return scores


def table(results: dict[str, dict[str, dict[str, list[float]]]]) -> str:
    """Markdown table in the layout of the paper's Table 1, measured beside the paper's numbers."""
    lines = [
        "| data | method | accuracy | precision | recall | Dice | paper: accuracy | precision | recall | Dice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, scores in results.items():
        for method in (m for m in METHODS if m in scores):
            s = scores[method]
            name = method.replace("classical", CLASSICAL_NAME[task])
            measured = [f"{s[m][0]:.3f}" for m in METRICS[:3]] + [f"{s['dice'][0]:.3f} ± {s['dice'][1]:.3f}"]
            if (task, method) in PAPER:
                acc, prec, rec, dice, std = PAPER[(task, method)]
                paper = f"{acc:.3f} | {prec:.3f} | {rec:.3f} | {dice:.3f} ± {std:.3f}"
            else:
                paper = "- | - | - | -"
            lines.append(f"| {task} | {name} | " + " | ".join(measured) + f" | {paper} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "af_seg_table")
    parser.add_argument("--tasks", nargs="+", default=["cells", "vessels"], choices=["cells", "vessels"])
    parser.add_argument("--num-cases", type=int, default=24, help="demo images per task (split 50/20/30)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=64, help="random training patch side (paper: 256)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100, help="AF-Seg stage-3 epochs, half constant (paper: 100)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="AF-Seg Adam (paper: 2e-4)")
    parser.add_argument("--dip-steps", type=int, default=150, help="Deep Image Prior steps (paper: thousands)")
    parser.add_argument(
        "--dsp-steps", type=int, default=150, help="maximum Deep Segmentation Prior steps (1e-2: rule met in 16-82)"
    )
    parser.add_argument("--dsp-learning-rate", type=float, default=1e-2, help="Deep Segmentation Prior Adam")
    parser.add_argument("--supervised-epochs", type=int, default=40)
    parser.add_argument("--merge", type=Path, nargs="+", help="only tabulate earlier af_seg_table.json files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        results = {task: scores for run in runs for task, scores in run["results"].items()}
        settings: dict[str, Any] = {"merged": [run["settings"] for run in runs]}
    else:
        results = {task: run_task(task, args.out, args) for task in args.tasks}
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "merge"}
    text = table(results)
    (args.out / "af_seg_table.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    (args.out / "af_seg_table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
