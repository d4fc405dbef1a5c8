"""Tables 2 and 3 of Tan et al. (2022) on the demo data: train and evaluate every adversarial_semi_seg config.

    python benchmarks/experiments/adversarial_tables.py [--out outputs/adversarial_tables] [--epochs 25]
        [--only "semi, 1/8 labels"]
    python benchmarks/experiments/adversarial_tables.py --assemble  # table and panel from rows run before (in parallel)

Under CPU contention run it with ``OMP_NUM_THREADS=1`` (oversubscribed OpenMP threads slow PyTorch down many-fold).

Rows: U-Net, Attention U-Net and adversarial U-Net with all labels (Table 2); the semi-supervised model with 1/2, 1/4
and 1/8 of the labelled volumes plus the same U-Net trained on the 1/8 alone (Table 3). Every run uses the same
reduced schedule (``--epochs`` epochs of ``--epoch-length`` iterations, the semi-supervised phase starting after
``--semi-start`` epochs), so all rows see the same number of segmenter updates. Metrics are the mean over the two
foreground classes (aorta, pulmonary artery) of the per-slice means on the test slices, from
``common.handlers.SegmentationReportHandler`` (read back with ``common.metrics.read_metrics``); every workflow is
built by ``common.bundle.load_workflow`` / ``run_workflow`` over ``train.json``. Writes ``<out>/results.md``,
``<out>/results.json`` and the panel ``bundles/adversarial_semi_seg/docs/panel.png`` (test slices: label, both 1/8
models, confidence map, confident pixels).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common.bundle import load_workflow, run_workflow  # noqa: E402
from common.handlers.resume import latest_checkpoint  # noqa: E402
from common.metrics import read_metrics  # noqa: E402
from common.visualize import save_panel  # noqa: E402

BUNDLE = REPO / "bundles" / "adversarial_semi_seg"
METRICS = ("iou", "dice", "specificity", "precision")

# (label, configs merged over train.json, overrides, the paper's mIoU / Dice / specificity / precision)
ROWS: list[tuple[str, list[str], dict[str, Any], tuple[float, ...]]] = [
    ("U-Net, full labels", ["supervised_only.json"], {"labelled_fraction": 1.0}, (0.818, 0.879, 0.986, 0.903)),
    (
        "Attention U-Net, full labels",
        ["supervised_only.json", "attention_unet.json"],
        {"labelled_fraction": 1.0},
        (0.832, 0.892, 0.989, 0.904),
    ),
    ("adversarial U-Net, full labels", ["full_adversarial.json"], {}, (0.851, 0.905, 0.985, 0.924)),
    ("semi, 1/2 labels", ["semi_1_2.json"], {}, (0.810, 0.876, 0.981, 0.908)),
    ("semi, 1/4 labels", ["semi_1_4.json"], {}, (0.778, 0.849, 0.983, 0.884)),
    ("semi, 1/8 labels", ["semi_1_8.json"], {}, (0.724, 0.812, 0.984, 0.846)),
    ("U-Net, 1/8 labels alone", ["supervised_only.json"], {"labelled_fraction": 0.125}, ()),
]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


def run_row(configs: list[str], overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train then evaluate one row; return its summary metrics, training time and pseudo-label coverage."""
    shutil.rmtree(out, ignore_errors=True)
    overrides = {"output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models"), **overrides}
    start = time.perf_counter()
    workflow = load_workflow(BUNDLE.name, ["train.json", *configs], **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    coverage: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: coverage.append(e.state.output["coverage"]) if e.state.output["semi_active"] else None,
    )
    workflow.run()
    workflow.finalize()
    train_seconds = time.perf_counter() - start
    run_workflow(BUNDLE.name, ["train.json", *configs, "evaluate.json"], **overrides)
    metrics = read_metrics(out / "outputs" / "eval")
    result = {
        **{m: metrics.mean(m) for m in METRICS},
        "per_class_dice": {c: metrics.summary["dice"][c]["mean"] for c in metrics.class_names},
        "train_seconds": round(train_seconds, 1),
        "semi_iterations": len(coverage),
        "mean_coverage": float(np.mean(coverage)) if coverage else None,
    }
    (out / "row.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def results_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: measured (demo) beside the paper's numbers for mIoU, Dice, specificity, precision."""
    lines = [
        "| method | mIoU | Dice | specificity | precision | paper mIoU | paper Dice | paper spec. | paper prec. "
        "| pseudo-label coverage | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = " | ".join(f"{r[m]:.3f}" for m in METRICS)
        paper = " | ".join(f"{v:.3f}" for v in r["paper"]) if r["paper"] else "- | - | - | -"
        coverage = f"{r['mean_coverage']:.2f}" if r["mean_coverage"] is not None else "-"
        lines.append(f"| {r['method']} | {measured} | {paper} | {coverage} | {r['train_seconds']} |")
    return "\n".join(lines)


def _load_segmenter(configs: list[str], overrides: dict[str, Any], out: Path) -> tuple[Any, Any]:
    overrides = {"output_dir": str(out / "outputs"), "ckpt_dir": str(out / "models"), **overrides}
    workflow = load_workflow(BUNDLE.name, ["train.json", *configs], **overrides)
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    network.load_state_dict(torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True))
    return workflow, network.eval()


def write_panel(root: Path, overrides: dict[str, Any], path: Path, num_samples: int = 3) -> None:
    """PNG of test slices: image | label | U-Net 1/8 alone | semi 1/8 | confidence sigmoid(D(S(x))) | confident."""
    alone_label, alone_configs, alone_overrides, _ = ROWS[-1]
    semi_label, semi_configs, semi_overrides, _ = ROWS[-2]
    _, alone = _load_segmenter(alone_configs, {**overrides, **alone_overrides}, root / _slug(alone_label))
    workflow, semi = _load_segmenter(semi_configs, {**overrides, **semi_overrides}, root / _slug(semi_label))
    discriminator = workflow.parser.get_parsed_content("discriminator")
    state = torch.load(latest_checkpoint(root / _slug(semi_label) / "models"), map_location="cpu", weights_only=True)
    discriminator.load_state_dict(state["discriminator"])
    threshold = workflow.parser.get_parsed_content("semi_threshold")
    test = workflow.parser.get_parsed_content("datalists")["test"]
    # slices with both structures, spread over the test volumes
    candidates = [s for s in test if len(np.unique(np.load(s["label"]))) == 3]
    chosen = [candidates[i] for i in np.linspace(0, len(candidates) - 1, num_samples).astype(int)]
    rows = []
    with torch.no_grad():
        for sample in chosen:
            image = torch.from_numpy(np.load(sample["image"]))[None]
            probs = torch.softmax(semi(image), dim=1)
            confidence = torch.sigmoid(discriminator(probs))[0, 0]
            rows.append(
                {
                    "image": image[0, 0].numpy(),
                    "label": np.load(sample["label"])[0],
                    "U-Net 1/8 alone": alone(image).argmax(1)[0].numpy(),
                    "semi 1/8": probs.argmax(1)[0].numpy(),
                    "confidence": confidence.numpy(),
                    f"confidence > {threshold}": (confidence > threshold).float().numpy(),
                }
            )
    save_panel(rows, path, label_keys=("label", "U-Net 1/8 alone", "semi 1/8"), num_classes=3)


def demo_overrides(epochs: int, epoch_length: int, semi_start: int) -> dict[str, Any]:
    """The reduced demo schedule and sizes shared by every row (the paper: 5000 epochs on 512x512 slices).

    32x32 random crops of the 64x64 demo slices; a 3-layer discriminator (64-128 + classifier) so that its coarse
    logit map stays 4x4 on a crop, as the paper's 6 layers give 8x8 on 512x512 (6 layers would give 1x1 here).
    """
    return {
        "bundle_root": str(BUNDLE),
        "demo_kwargs": {"num_cases": 12, "image_size": 64, "depth": 16},
        "max_epochs": epochs,
        "epoch_length": epoch_length,
        "semi_start_epoch": semi_start,
        "val_interval": 5,
        "patch_size": [32, 32],
        "batch_size": 8,
        "unlabeled_batch_size": 8,
        "network_def#channels": [16, 32, 64, 128],
        "network_def#strides": [2, 2, 2],
        "discriminator_channels": [64, 128],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "outputs" / "adversarial_tables"), help="output folder")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of every run")
    parser.add_argument("--epoch-length", type=int, default=10, help="iterations per epoch")
    parser.add_argument("--semi-start", type=int, default=8, help="warm-up epochs before the pseudo-label loss")
    parser.add_argument("--only", nargs="*", default=None, help="row labels to run (default: all)")
    parser.add_argument("--panel", default=str(BUNDLE / "docs" / "panel.png"), help="panel PNG ('' for none)")
    parser.add_argument(
        "--assemble", action="store_true", help="no training: table and panel from the rows already run under --out"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out).resolve()
    overrides = demo_overrides(args.epochs, args.epoch_length, args.semi_start)
    rows = []
    for label, configs, extra, paper in ROWS:
        if args.only and label not in args.only:
            continue
        out = root / _slug(label)
        if args.assemble:
            result = json.loads((out / "row.json").read_text(encoding="utf-8"))
        else:
            print(f"== {label} ==", flush=True)
            result = run_row(configs, {**overrides, **extra}, out)
        rows.append({"method": label, "paper": paper, **result})
    table = results_table(rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.md").write_text(table + "\n", encoding="utf-8")
    (root / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print("\n" + table)
    if args.panel and len(rows) == len(ROWS):
        write_panel(root, overrides, Path(args.panel))
        print(f"\npanel: {args.panel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
