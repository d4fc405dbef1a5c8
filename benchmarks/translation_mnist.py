"""Cluttered MNIST 48x48 "simple" table of the translation_semi_seg bundle (Vorontsov et al., MedIA 2022, Table 2):
trains and evaluates the proposed model and every baseline / ablation config for a list of seeds at a stated (reduced)
schedule and prints mean (std) over seeds beside the paper's values.

    python benchmarks/translation_mnist.py --seeds 0 1 2 --num-train 2000 --max-epochs 5 --width 0.25 \\
        --out outputs/translation_mnist

Two Dice values per run, both on all P test images: the paper's soft Dice accumulated over the test set
(``soft_dice_accumulated``) and the mean per-image Dice of the thresholded prediction. ``--seeds`` vary the training
seed; the data set (``--data-seed``) stays the same. Results go to ``<out>/results.json`` and ``results.md``; the
translation panels to ``<out>/panels/``. The paper trains on the full set (59500 P + 59500 A images, width 1, batch
20 + 20) on a GPU; any reduced schedule here is stated in the printed table and is not comparable to the paper.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundles" / "translation_semi_seg" / "configs"
# name -> (variant config or None for train.json alone, paper Dice on cluttered MNIST 48x48 simple, 1% labels)
METHODS: dict[str, tuple[str | None, float | None]] = {
    "seg only": ("seg_only.json", 0.61),
    "autoencoder": ("ae_baseline.json", 0.75),
    "mean teacher": ("mean_teacher.json", 0.83),
    "proposed": (None, 0.84),
    "sep dec": ("sep_dec.json", 0.83),
    "P to A only": ("p_to_a_only.json", None),
    "no translation": ("no_translation.json", None),
}


def _workflow(configs: list[str], workflow_type: str, overrides: dict[str, Any]) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )


def run_one(variant: str | None, seed: int, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Trains then evaluates one config for one seed; returns its Dice values and the training time."""
    name = (variant or "train.json").removesuffix(".json")
    run_dir = out / "runs" / f"{name}_seed{seed}"
    overrides = {
        "output_dir": str(out / "data"),
        "ckpt_dir": str(run_dir / "models"),
        "seed": seed,
        "data_seed": args.data_seed,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "network_width": args.width,
        "batch_size": args.batch_size,
        "absent_batch_size": args.batch_size,
        "max_epochs": args.max_epochs,
        "epoch_length": args.epoch_length,
        "val_interval": 1,
        "resume": False,
    }
    train_configs = ["train.json"] + ([variant] if variant else [])
    start = time.perf_counter()
    for workflow_type, configs, extra in (
        ("train", train_configs, {}),
        ("eval", train_configs + ["evaluate.json"], {"eval_dir": str(run_dir / "eval")}),
    ):
        workflow = _workflow(configs, workflow_type, {**overrides, **extra})
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        if workflow_type == "train":
            train_s = time.perf_counter() - start
    report = json.loads((run_dir / "eval" / "metrics.json").read_text(encoding="utf-8"))
    panels = out / "panels"
    panels.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "eval" / "panel.png", panels / f"{name}_seed{seed}.png")
    return {
        "soft_dice_accumulated": float(report["soft_dice_accumulated"]["digit"]),
        "dice_per_image": float(report["summary"]["dice"]["mean"]["mean"]),
        "train_seconds": train_s,
    }


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({statistics.stdev(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2000, help="P (= A) training images (paper: 59500)")
    parser.add_argument("--num-test", type=int, default=None, help="test images (paper: all 10000)")
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch (default: one pass)")
    parser.add_argument("--width", type=float, default=0.25, help="network width multiplier (paper: 1)")
    parser.add_argument("--batch-size", type=int, default=10, help="P and A images per iteration each (paper: 20)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "translation_mnist")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {}
    for method in args.methods:
        variant = METHODS[method][0]
        results[method] = [run_one(variant, seed, args.out, args) for seed in args.seeds]
    schedule = (
        f"schedule: {args.num_train} P + {args.num_train} A training images, {args.max_epochs} epochs"
        f"{'' if args.epoch_length is None else f' of {args.epoch_length} iterations'}, batch {args.batch_size} + "
        f"{args.batch_size}, width x{args.width}, seeds {args.seeds}, test images "
        f"{'all 10000' if args.num_test is None else args.num_test}"
    )
    lines = [
        "Cluttered MNIST 48x48 simple, 1% labels (only 9s). Soft Dice accumulated over all P test images (as the "
        "paper) and mean per-image Dice of the thresholded prediction; mean (std) over seeds.",
        "",
        "| method | soft Dice (accumulated) | Dice (per image, thresholded) | train s / run | paper (soft Dice) |",
        "|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        paper = METHODS[method][1]
        lines.append(
            f"| {method} | {_fmt([r['soft_dice_accumulated'] for r in runs])} | "
            f"{_fmt([r['dice_per_image'] for r in runs])} | {statistics.mean(r['train_seconds'] for r in runs):.0f} | "
            f"{'-' if paper is None else f'{paper:.2f}'} |"
        )
    lines += ["", f"Reduced {schedule}; the paper's values come from the full schedule on a GPU."]
    text = "\n".join(lines)
    print(text)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(
        json.dumps({"schedule": schedule, "results": results}, indent=1), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
