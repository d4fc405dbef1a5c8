"""MIPR Table 1 protocol on the demo lesions: S trained on the true labels of the unlabelled set vs S trained on the
labelled images plus MIPR's pairs after rounds 1, 2, 3, for U-Net and Attention U-Net, beside the paper's numbers.

    python benchmarks/experiments/mipr_table.py [--out outputs/mipr_table] [--segmenters unet attention_unet]

Per segmenter, on one split of the synthetic dermoscopy-like demo data (``common.data.demo`` "lesions", ISIC 2018
layout; seed 0):

* "true labels": ``train.json`` with ``labelled_fraction`` 1 and ``num_rounds`` 0, as ``true_labels.json`` sets
  them (every training image with its true label: the paper's "doctors" row);
* "labelled only": round 0 of the MIPR loop (S on the labelled images alone, the starting point);
* "labelled only, steps of all rounds": the like-for-like control, S on the labelled images for the segmenter steps
  of all MIPR's rounds together;
* "MIPR round k": the loop's S after round k (labelled images + the pairs accepted in round k).

Every segmenter training takes the same steps per epoch (``--steps-per-epoch``, a sampler with replacement), so a
row's model differs from another's by its training data, not by how long it trained. G is trained once, in the
first segmenter's loop, and reused by the second (it depends only on the labelled pairs and the seed). A rerun
with the same ``--out`` skips every finished training and only re-evaluates.

Every workflow runs in-process through ``common.bundle.run_workflow``. Every model is evaluated by ``evaluate.json``
on the same test images (Dice and pixel accuracy of the lesion, mean +- std over images, from
:class:`common.metrics.SegmentationReport`, read back with ``common.metrics.read_metrics``). Writes
``<out>/mipr_table.md`` and ``.json``, and copies the per-round panels (image | pseudo-label | rearranged image | its
label | truth). The default schedule is reduced to fit CPU minutes (see ``--help``); the paper uses 2594 ISIC images at
256 x 256, 100 segmenter epochs and 500 generator epochs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common.bundle import run_workflow  # noqa: E402
from common.metrics import read_metrics  # noqa: E402

BUNDLE = "mipr_auto_annotation"
# Table 1 of Dai, Zhu et al. (2022), ISIC 2018: (pairs, DSC %, accuracy %) per row
PAPER = {
    ("unet", "true labels"): (1800, 68.41, 90.46),
    ("unet", "MIPR round 1"): (1513, 66.52, 89.78),
    ("unet", "MIPR round 2"): (1691, 67.61, 90.29),
    ("unet", "MIPR round 3"): (1781, 68.17, 89.82),
    ("attention_unet", "true labels"): (1800, 69.94, 91.37),
    ("attention_unet", "MIPR round 1"): (1622, 68.57, 90.81),
    ("attention_unet", "MIPR round 2"): (1780, 68.70, 90.54),
    ("attention_unet", "MIPR round 3"): (1800, 70.09, 90.93),
}
NAMES = {"unet": "U-Net", "attention_unet": "Att U-Net"}


def _evaluate(configs: list[str], overrides: dict[str, Any], ckpt: Path, eval_dir: Path) -> dict[str, float]:
    run_workflow(
        BUNDLE,
        ["train.json"] + configs + ["evaluate.json"],
        "eval",
        **{**overrides, "ckpt_path": str(ckpt), "eval_dir": str(eval_dir)},
    )
    metrics = read_metrics(eval_dir)
    return {
        "dice_mean": metrics.mean("dice"),
        "dice_std": metrics.std("dice"),
        "accuracy_mean": metrics.mean("accuracy"),
        "accuracy_std": metrics.std("accuracy"),
    }


def _share_generator(out: Path, ckpt_dir: Path) -> None:
    """G does not depend on S (it is trained on the labelled pairs only, with the same seed), so a G trained for
    another segmenter in this benchmark is reused: the loop then skips its generator training."""
    target = ckpt_dir / "generator.pt"
    trained = sorted(out.glob("*/mipr_models/generator.pt"))
    if trained and not target.is_file():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained[0], target)


def run_segmenter(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All rows of one segmenter: true labels, labelled only, MIPR rounds 1..num_rounds."""
    base = [] if name == "unet" else [f"{name}.json"]
    common = {
        "output_dir": str(args.out / "data"),
        "demo_kwargs": {"num_cases": args.num_cases, "image_size": args.image_size},
        "image_size": [args.image_size, args.image_size],
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "labelled_fraction": args.labelled_fraction,
        "network_def#channels": args.segmenter_channels,
        "max_epochs": args.epochs,
        "val_interval": args.epochs,
        "generator_epochs": args.generator_epochs,
        "generator_channels": args.generator_channels,
        "spade_hidden_channels": args.spade_hidden_channels,
        "discriminator_channels": args.discriminator_channels,
        "discriminator_layers": args.discriminator_layers,
        "num_rounds": args.num_rounds,
        "seed": args.seed,
        # equal segmenter steps for every row, whatever its training set (labelled, + pairs, or all true labels)
        "train#dataloader#shuffle": False,
        "train#dataloader#sampler": {
            "_target_": "torch.utils.data.RandomSampler",
            "data_source": "@train#dataset",
            "replacement": True,
            "num_samples": args.steps_per_epoch * args.batch_size,
        },
        "batch_size": args.batch_size,
    }
    rows = []
    run_dir = args.out / name
    start = time.perf_counter()
    true_overrides = {
        **common,  # the same split; every training image keeps its true label, no annotation round
        "labelled_fraction": 1.0,
        "num_rounds": 0,
        "ckpt_dir": str(run_dir / "true_labels"),
        "output_dir": str(run_dir / "true_outputs"),
    }
    run_workflow(BUNDLE, ["train.json"] + base, "train", **true_overrides)
    rounds = json.loads((run_dir / "true_outputs" / "mipr" / "rounds.json").read_text(encoding="utf-8"))
    metrics = _evaluate(base, true_overrides, run_dir / "true_labels" / "model.pt", run_dir / "eval_true_labels")
    rows.append(
        {
            "segmenter": name,
            "labels": "true labels",
            "pairs": rounds[0]["train_items"],
            **metrics,
            "seconds": round(time.perf_counter() - start),
        }
    )

    start = time.perf_counter()
    control_overrides = {  # the like-for-like control: labelled only, for the steps of all MIPR's rounds together
        **common,
        "num_rounds": 0,
        "max_epochs": args.epochs * (args.num_rounds + 1),
        "val_interval": args.epochs * (args.num_rounds + 1),
        "ckpt_dir": str(run_dir / "control"),
        "output_dir": str(run_dir / "control_outputs"),
    }
    run_workflow(BUNDLE, ["train.json"] + base, "train", **control_overrides)
    metrics = _evaluate(base, control_overrides, run_dir / "control" / "model.pt", run_dir / "eval_control")
    rows.append(
        {
            "segmenter": name,
            "labels": "labelled only, steps of all rounds",
            "pairs": 0,
            **metrics,
            "seconds": round(time.perf_counter() - start),
        }
    )

    start = time.perf_counter()
    mipr_overrides = {**common, "ckpt_dir": str(run_dir / "mipr_models"), "output_dir": str(run_dir / "mipr_outputs")}
    _share_generator(args.out, run_dir / "mipr_models")
    run_workflow(BUNDLE, ["train.json"] + base, "train", **mipr_overrides)
    seconds = round(time.perf_counter() - start)
    rounds = json.loads((run_dir / "mipr_outputs" / "mipr" / "rounds.json").read_text(encoding="utf-8"))
    for record in rounds:
        k = record["round"]
        label = "labelled only" if k == 0 else f"MIPR round {k}"
        metrics = _evaluate(
            base, mipr_overrides, run_dir / "mipr_models" / f"round{k}" / "model.pt", run_dir / f"eval_round{k}"
        )
        rows.append(
            {
                "segmenter": name,
                "labels": label,
                "pairs": record["pairs"],
                "train_items": record["train_items"],
                "counts": record["counts"],
                **metrics,
                "seconds": seconds if k == args.num_rounds else None,
            }
        )
        panel = run_dir / "mipr_outputs" / "mipr" / f"panel_round{k}.png"
        if panel.is_file():
            (args.out / "panels").mkdir(parents=True, exist_ok=True)
            shutil.copy(panel, args.out / "panels" / f"{name}_round{k}.png")
    return rows


def _markdown(rows: list[dict[str, Any]], schedule: str) -> str:
    lines = [
        "| S | training labels | pairs accepted / unlabelled | DSC (%) | accuracy (%) | paper: pairs | paper: DSC | "
        "paper: accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = PAPER.get((row["segmenter"], row["labels"]))
        counts = row.get("counts")
        pairs = (
            "-"
            if row["labels"].startswith("labelled only")
            else (f"{row['pairs']} / {counts['unlabelled']}" if counts else f"all {row['pairs']} (true)")
        )
        lines.append(
            f"| {NAMES[row['segmenter']]} | {row['labels']} | {pairs} | "
            f"{100 * row['dice_mean']:.2f} ± {100 * row['dice_std']:.2f} | "
            f"{100 * row['accuracy_mean']:.2f} ± {100 * row['accuracy_std']:.2f} | "
            + (" | ".join(f"{v}" for v in paper) if paper else "- | - | -")
            + " |"
        )
    return "\n".join(lines + ["", schedule])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "mipr_table")
    parser.add_argument("--segmenters", nargs="+", default=["unet", "attention_unet"], choices=list(NAMES))
    parser.add_argument("--num-cases", type=int, default=120, help="demo images (paper: 2594 ISIC images)")
    parser.add_argument("--image-size", type=int, default=64, help="image side (paper: 256)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.25, help="paper: 594 / 2594")
    parser.add_argument("--labelled-fraction", type=float, default=0.15, help="of the training images (paper: 0.1)")
    parser.add_argument(
        "--segmenter-channels",
        type=int,
        nargs="+",
        default=[16, 32, 64, 128, 256],
        help="S widths (config default: 32 64 128 256 512)",
    )
    parser.add_argument("--epochs", type=int, default=20, help="segmenter epochs per round (paper: 100)")
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=10,
        help="segmenter steps per epoch in every row (a sampler with replacement; 10: the true-label set at batch 8)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--generator-epochs", type=int, default=60, help="generator epochs (paper: 500)")
    parser.add_argument(
        "--generator-channels",
        type=int,
        nargs="+",
        default=[32, 64, 128, 256],
        help="G encoder widths (paper / config default: 64 128 256 512)",
    )
    parser.add_argument("--spade-hidden-channels", type=int, default=64, help="config default: 128")
    parser.add_argument("--discriminator-channels", type=int, default=32, help="config default: 64")
    parser.add_argument("--discriminator-layers", type=int, default=2, help="config default: 3 (at 256 px)")
    parser.add_argument("--num-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for name in args.segmenters for row in run_segmenter(name, args)]
    schedule = (
        f"Demo lesions: {args.num_cases} images at {args.image_size}x{args.image_size}, fractions validation "
        f"{args.val_fraction} / test {args.test_fraction}, labelled {args.labelled_fraction} of the training images, "
        f"seed {args.seed}; S widths {args.segmenter_channels}, {args.epochs} epochs of {args.steps_per_epoch} "
        f"steps (batch {args.batch_size}) per round and for the true-label row, {args.epochs * (args.num_rounds + 1)} "
        "for the control, G "
        f"{args.generator_epochs} epochs (widths "
        f"{args.generator_channels}, SPADE hidden {args.spade_hidden_channels}, D {args.discriminator_channels} x "
        f"{args.discriminator_layers} layers), {args.num_rounds} rounds. Dice and accuracy of the lesion class on "
        "the test images, mean ± std over images. The paper's values are ISIC 2018 (200 labelled / 1800 "
        "unlabelled / 594 test at 256x256) and are not comparable."
    )
    text = _markdown(rows, schedule)
    print(text)
    (args.out / "mipr_table.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "mipr_table.json").write_text(
        json.dumps({"schedule": schedule, "rows": rows}, indent=1) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
