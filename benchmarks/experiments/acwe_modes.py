"""Train and evaluate the four modes of Chen & Frey (MIDL 2020) and the classical Chan-Vese on the bone demo data.

    python benchmarks/experiments/acwe_modes.py [--out outputs/acwe_modes] [--epochs-scale 1.0] [--threads 1]
        [--image-size 96]

Modes (configs of ``bundles/acwe_unsup_seg``): 1 = ``train.json`` (ACWE loss only, no labels read), 2 / 3 =
``mode2_finetune.json`` / ``mode3_finetune.json`` (mode 1 fine-tuned with the label loss on 10 / 80 seeded labelled
slices), 4 = ``mode4_joint.json`` (ACWE + 0.4 label loss). Each mode is trained through
``common.bundle.load_workflow`` (as ``python -m monai.bundle run training`` does) on a reduced demo schedule
(:data:`SCHEDULE`), then evaluated on the test slices with ``evaluate.json`` (``common.bundle.run_workflow``);
Chan-Vese and the network's speed are measured on the same test slices by ``benchmarks/acwe_speed.py``. Mode 4 is
compared with mode 1 slice by slice (``common.metrics.paired_difference``: mean difference of Dice and its 95 % t
interval over the test slices). Writes ``<out>/results.md``, ``<out>/results.json`` and the picture panel
``bundles/acwe_unsup_seg/docs/acwe_panel.png`` (image | truth | mode 1 | mode 4 | Chan-Vese).
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

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.acwe_speed import (  # noqa: E402
    BUNDLE,
    benchmark,
    bundle_parser,
    load_network,
    load_test_slices,
    run_network,
    speed_table,
)
from common.bundle import load_workflow, run_workflow  # noqa: E402
from common.classical.chan_vese import chan_vese_segment  # noqa: E402
from common.metrics import paired_difference, read_metrics  # noqa: E402
from common.visualize import save_panel  # noqa: E402

DEMO_KWARGS = {"num_cases": 8, "image_size": 96, "depth": 16}
"""Reduced demo data: 8 bone volumes of 96 x 96 x 16 (the paper: 8000 training slices of 192 x 192); ``--image-size``
changes the in-plane size (the same anatomy on a coarser or finer grid, see ``common.data.demo.generate_bone``; 48 is
the quick demo of ``benchmarks/run_demo.py``, on which ribs are 1-2 pixels thick)."""

SCHEDULE: dict[str, dict[str, Any]] = {
    "mode1": {"configs": ["train.json"], "max_epochs": 20, "val_interval": 5},
    "mode2": {"configs": ["train.json", "mode2_finetune.json"], "max_epochs": 20, "val_interval": 1},
    "mode3": {"configs": ["train.json", "mode3_finetune.json"], "max_epochs": 10, "val_interval": 1},
    "mode4": {"configs": ["train.json", "mode4_joint.json"], "max_epochs": 20, "val_interval": 5},
    "mode4, no length term": {
        "configs": ["train.json", "mode4_joint.json"],
        "max_epochs": 20,
        "val_interval": 5,
        "overrides": {"label_length_weight": 0.0},
    },
}
"""Per mode: bundle configs, the demo schedule (Adam 5e-4, batch 20 as in the paper; far fewer steps) and extra
overrides. The last entry is an ablation: mode 4 without the length term of the label loss."""

PAPER_DICE = {"mode1": "0.593 ± 0.19", "mode2": "0.661 ± 0.16", "mode3": "0.732 ± 0.12", "mode4": "0.856 ± 0.09"}


def train_and_evaluate(mode: str, out: Path, epochs_scale: float, demo_kwargs: dict[str, int]) -> dict[str, Any]:
    """Train ``mode`` from scratch (its checkpoint folder is cleared) and evaluate it on the test slices."""
    plan = SCHEDULE[mode]
    epochs = max(1, round(plan["max_epochs"] * epochs_scale))
    ckpt_dir = out / "models" / mode.replace(", ", "_").replace(" ", "_")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    overrides = {
        "bundle_root": str(BUNDLE),
        "mode_name": ckpt_dir.name,
        "output_dir": str(out / "outputs"),
        "ckpt_dir": str(ckpt_dir),
        "pretrained_ckpt": str(out / "models" / "mode1" / "model.pt"),
        "demo_kwargs": demo_kwargs,
        "max_epochs": epochs,
        "val_interval": min(plan["val_interval"], epochs),
        **plan.get("overrides", {}),
    }
    start = time.perf_counter()
    workflow = load_workflow("acwe_unsup_seg", plan["configs"], **overrides)
    workflow.initialize()
    iterations = len(workflow.parser.get_parsed_content("train#dataloader")) * epochs
    workflow.run()
    workflow.finalize()
    seconds = time.perf_counter() - start
    run_workflow("acwe_unsup_seg", plan["configs"] + ["evaluate.json"], **overrides)
    metrics = read_metrics(out / "outputs" / "eval" / ckpt_dir.name)
    return {
        "method": mode,
        "dice": dict(metrics.summary["dice"]["mean"]),  # {"mean", "std", "n"} over test slices
        "epochs": epochs,
        "iterations": iterations,
        "train_seconds": round(seconds, 1),
    }


def write_panel(out: Path, path: Path, demo_kwargs: dict[str, int], num_rows: int = 4) -> None:
    """image | truth | mode 1 | mode 4 | Chan-Vese for ``num_rows`` test slices evenly spread over the test list."""
    parser = bundle_parser({"output_dir": str(out / "outputs"), "demo_kwargs": demo_kwargs})
    images, labels, _ = load_test_slices(parser)
    chosen = torch.linspace(0, len(images) - 1, num_rows + 2).round().long()[1:-1]
    images, labels = images[chosen], labels[chosen]
    preds = {
        mode: run_network(load_network(parser, str(out / "models" / mode / "model.pt")), images, len(images))[0]
        for mode in ("mode1", "mode4")
    }
    rows = [
        {
            "image": images[i, 0].numpy(),
            "truth": labels[i, 0].numpy(),
            "mode 1 (no labels)": preds["mode1"][i, 0].numpy(),
            "mode 4 (joint)": preds["mode4"][i, 0].numpy(),
            "Chan-Vese": chan_vese_segment(images[i, 0].numpy()),
        }
        for i in range(len(images))
    ]
    label_keys = ["truth", "mode 1 (no labels)", "mode 4 (joint)", "Chan-Vese"]
    save_panel(rows, path, label_keys=label_keys, title="acwe_unsup_seg on the bone demo (test slices)")


def results_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per mode / baseline with the measured Dice beside the paper's."""
    lines = [
        "| method | Dice (demo, mean ± std over test slices) | Dice (paper, XCAT SPECT) "
        "| epochs | iterations | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["dice"]
        lines.append(
            f"| {r['method']} | {d['mean']:.3f} ± {d['std']:.3f} | {PAPER_DICE.get(r['method'], '-')} | "
            f"{r.get('epochs', '-')} | {r.get('iterations', '-')} | {r.get('train_seconds', '-')} |"
        )
    return "\n".join(lines)


def compare_modes(out: Path, mode: str, baseline: str) -> dict[str, Any]:
    """Per test slice Dice(``mode``) - Dice(``baseline``) (the bone class, the only foreground class, from the two
    evaluation reports): mean, its 95 % t interval over the slices (``common.metrics.paired_difference``) and on how
    many slices ``mode`` is higher / lower. Slices whose Dice is undefined in either report are left out."""
    a = read_metrics(out / "outputs" / "eval" / mode).by_image("dice")
    b = read_metrics(out / "outputs" / "eval" / baseline).by_image("dice")
    names = sorted(a.keys() & b.keys())
    diff = [a[name] - b[name] for name in names]
    result = paired_difference([a[name] for name in names], [b[name] for name in names], confidence=0.95)
    return {
        "comparison": f"{mode} - {baseline}",
        "mean": result.mean,
        "ci95": [result.lo, result.hi],
        "wins": sum(d > 0 for d in diff),
        "losses": sum(d < 0 for d in diff),
        "slices": result.n,
    }


def paired_text(paired: dict[str, Any]) -> str:
    low, high = paired["ci95"]
    return (
        f"{paired['comparison']}, per test slice: mean {paired['mean']:+.3f} Dice (95 % t interval "
        f"{low:+.3f} to {high:+.3f}), higher on {paired['wins']} and lower on {paired['losses']} of "
        f"{paired['slices']} slices"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(BUNDLE.parent.parent / "outputs" / "acwe_modes"), help="output folder")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every mode's epochs by this")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (training and timing)")
    parser.add_argument("--panel", default=str(BUNDLE / "docs" / "acwe_panel.png"), help="picture panel PNG")
    parser.add_argument("--image-size", type=int, default=DEMO_KWARGS["image_size"], help="in-plane demo size")
    args = parser.parse_args(argv)
    demo_kwargs = {**DEMO_KWARGS, "image_size": args.image_size}
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    start = time.perf_counter()
    rows = []
    for mode in SCHEDULE:
        print(f"== {mode} ==", flush=True)
        rows.append(train_and_evaluate(mode, out, args.epochs_scale, demo_kwargs))
    config = bundle_parser({"output_dir": str(out / "outputs"), "demo_kwargs": demo_kwargs})
    speed = benchmark(config, str(out / "models" / "mode4" / "model.pt"))
    rows.append({"method": "Chan-Vese (per image)", "dice": speed[0]["dice"]})
    write_panel(out, Path(args.panel), demo_kwargs)
    num_images = len(config.get_parsed_content("datalists")["test"])
    paired = compare_modes(out, "mode4", "mode1")
    text = results_table(rows) + "\n\n" + paired_text(paired) + "\n\n" + speed_table(speed, num_images)
    text += f"\n\ndemo data {demo_kwargs}; total wall time {time.perf_counter() - start:.0f} s"
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps({"modes": rows, "paired": paired, "speed": speed}, indent=2) + "\n", encoding="utf-8"
    )
    print("\n" + text)
    print(f"\nresults: {out / 'results.md'}; panel: {args.panel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
