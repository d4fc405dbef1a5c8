"""The quick-start job: train and evaluate every bundle on the embedded demo data, print a results table, write
pictures.

    python benchmarks/run_demo.py [--out outputs/demo] [--only supervised_seg] [--epochs-scale 1.0]

Each run is ``python -m monai.bundle run`` of the bundle's training then evaluation configs (done in-process
through ``common.bundle.run_workflow``), with outputs under ``<out>/<bundle>/<task>``; the evaluation's
``metrics.json`` is read back with ``common.metrics.read_metrics``. The table is printed and
written to ``<out>/results.md`` and ``<out>/results.json``; each run's picture panel is copied to
``<out>/panels/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.bundle import run_workflow
from common.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DemoRun:
    """One bundle trained and evaluated on one demo task."""

    bundle: str
    task: str
    train_configs: list[str]
    eval_configs: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs_key: str = "max_epochs"
    epochs: int = 10
    label: str = ""
    name: str = "default"


ACWE_DEMO = {"demo_task": "bone", "demo_kwargs": {"num_cases": 8, "image_size": 48, "depth": 16}, "val_interval": 1}

ADVERSARIAL_DEMO = {
    "demo_task": "tubular",
    "demo_kwargs": {"num_cases": 12, "image_size": 64, "depth": 16},
    "epoch_length": 10,
    "semi_start_epoch": 8,
    "val_interval": 5,
    "patch_size": [32, 32],
    "batch_size": 8,
    "unlabeled_batch_size": 8,
    "network_def#channels": [16, 32, 64, 128],
    "network_def#strides": [2, 2, 2],
    "discriminator_channels": [64, 128],
}

AF_SEG_DEMO = {
    "patch_size": [64, 64],
    "batch_size": 4,
    "learning_rate": 0.001,
    "dip_steps": 150,
    "background#dsp_max_steps": 150,
    "val_fraction": 0.2,
    "test_fraction": 0.3,
    "val_interval": 50,
    "constant_epochs": 50,
    "decay_epochs": 50,
}

MIPR_DEMO = {
    "demo_task": "lesions",
    "demo_kwargs": {"num_cases": 60, "image_size": 64},
    "class_names": ["lesion"],
    "image_size": [64, 64],
    "val_fraction": 0.1,
    "test_fraction": 0.25,
    "labelled_fraction": 0.3,
    "val_interval": 10,
    "network_def#channels": [16, 32, 64, 128, 256],
    "num_rounds": 2,
    "generator_epochs": 20,
    "generator_channels": [16, 32, 64, 128],
    "spade_hidden_channels": 32,
    "discriminator_channels": 16,
    "discriminator_layers": 2,
}

DEMO_RUNS = [
    DemoRun(
        "supervised_seg",
        "cells",
        ["train.json"],
        ["train.json", "evaluate.json"],
        {"demo_task": "cells", "demo_kwargs": {"num_cases": 40}, "class_names": ["cell"], "val_interval": 10},
        epochs=60,
        label="U-Net, full labels",
    ),
    DemoRun(
        "supervised_seg",
        "tumour",
        ["train.json"],
        ["train.json", "evaluate.json"],
        {
            "demo_task": "tumour",
            "class_names": ["tumour"],
            "patch_size": [64, 64],
            "val_interval": 5,
            "slicing": {"axis": 2, "foreground_threshold": 0.0, "min_foreground_fraction": 0.05},
            "intensity": {"k": 5.0, "clip": [-1.0, 1.0], "foreground_threshold": 0.0},
        },
        epochs=10,
        label="U-Net, full labels (2D slices of 3D volumes)",
    ),
    DemoRun(
        "acwe_unsup_seg",
        "bone",
        ["train.json"],
        ["train.json", "evaluate.json"],
        {**ACWE_DEMO, "eval_dir": "$@output_dir + '/eval'"},
        epochs=20,
        label="RCNN + ACWE loss, no labels (mode 1)",
        name="mode1",
    ),
    DemoRun(
        "acwe_unsup_seg",
        "bone",
        ["train.json", "mode4_joint.json"],
        ["train.json", "mode4_joint.json", "evaluate.json"],
        {**ACWE_DEMO, "eval_dir": "$@output_dir + '/eval'"},
        epochs=20,
        label="RCNN + ACWE + 0.4 label loss (mode 4)",
        name="mode4",
    ),
    DemoRun(
        "adversarial_semi_seg",
        "tubular",
        ["train.json", "semi_1_8.json"],
        ["train.json", "semi_1_8.json", "evaluate.json"],
        ADVERSARIAL_DEMO,
        epochs=25,
        label="adversarial semi-supervised U-Net, 1/8 labels",
        name="semi_1_8",
    ),
    DemoRun(
        "adversarial_semi_seg",
        "tubular",
        ["train.json", "supervised_only.json"],
        ["train.json", "supervised_only.json", "evaluate.json"],
        {**ADVERSARIAL_DEMO, "labelled_fraction": 0.125},
        epochs=25,
        label="U-Net, 1/8 labels alone",
        name="unet_1_8",
    ),
    DemoRun(
        "af_seg",
        "cells",
        ["train.json"],
        ["train.json", "evaluate.json"],
        {**AF_SEG_DEMO, "demo_task": "cells", "class_names": ["cell"]},
        epochs=100,
        label="AF-Seg, no labels",
    ),
    DemoRun(
        "mipr_auto_annotation",
        "lesions",
        ["train.json"],
        ["train.json", "evaluate.json"],
        MIPR_DEMO,
        epochs=30,
        label="MIPR, 30% labels + 2 annotation rounds",
    ),
]


def run_one(run: DemoRun, out_root: Path, epochs_scale: float) -> dict[str, Any]:
    out = out_root / run.bundle / run.task / run.name
    shutil.rmtree(out / "models", ignore_errors=True)
    epochs = max(1, round(run.epochs * epochs_scale))
    overrides = {
        "bundle_root": str(REPO / "bundles" / run.bundle),
        "output_dir": str(out / "outputs"),
        "ckpt_dir": str(out / "models"),
        **run.overrides,
    }
    start = time.perf_counter()
    run_workflow(run.bundle, run.train_configs, **{**overrides, run.epochs_key: epochs})
    train_seconds = time.perf_counter() - start
    run_workflow(run.bundle, run.eval_configs, **overrides)
    eval_dir = out / "outputs" / "eval"
    metrics = read_metrics(eval_dir)
    panel = eval_dir / "panel.png"
    if panel.is_file():
        (out_root / "panels").mkdir(parents=True, exist_ok=True)
        shutil.copy(panel, out_root / "panels" / f"{run.bundle}_{run.task}_{run.name}.png")
    summary = metrics.summary
    return {
        "bundle": run.bundle,
        "task": run.task,
        "method": run.label,
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "test_images": len(metrics.per_image),
        # {"mean", "std", "n"} over test images of each image's mean over its classes
        **{m: summary[m]["mean"] for m in ("dice", "iou", "precision", "recall") if m in summary},
    }


def results_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per run, metric cells 'mean ± std' over test images."""
    lines = [
        "| bundle | task | method | Dice | IoU | precision | recall | test images | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" if r.get(m) and r[m]["mean"] is not None else "-"
            for m in ("dice", "iou", "precision", "recall")
        ]
        lines.append(
            f"| {r['bundle']} | {r['task']} | {r['method']} | {' | '.join(cells)} | {r['test_images']} | "
            f"{r['epochs']} | {r['train_seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "outputs" / "demo"), help="output folder")
    parser.add_argument("--only", nargs="*", default=None, help="bundles to run (default: all)")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every run's epochs by this")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out_root = Path(args.out).resolve()
    rows = []
    for run in DEMO_RUNS:
        if args.only and run.bundle not in args.only:
            continue
        print(f"== {run.bundle} on demo task '{run.task}' ==", flush=True)
        rows.append(run_one(run, out_root, args.epochs_scale))
    table = results_table(rows)
    (out_root / "results.md").write_text(table + "\n", encoding="utf-8")
    (out_root / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print("\n" + table)
    print(f"\nresults: {out_root / 'results.md'}; pictures: {out_root / 'panels'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
