"""acwe_unsup_seg mode 1 with no label anywhere, beside the classical methods, on one demo task and several seeds.

    python benchmarks/experiments/acwe_label_free.py [--out outputs/acwe_label_free] [--demo-task cells] [--seeds 0 1 2]

Per seed (the seed of the split, of the network's initialisation and of the batches), on the same test images:

* ``acwe_unsup_seg`` ``train.json`` with its defaults (mode 1, the foreground phase rule ``bright``), then
  ``evaluate.json``: the labels of the test split are the only labels read, after training;
* the same with ``foreground_phase none`` (the paper's behaviour: whichever phase training falls into);
* Otsu's threshold and the Chan-Vese level set without erosion per test image (``common.classical.baselines``).

Prints and writes ``<out>/results.md`` / ``.json``: the mean test Dice per seed and method, and the paired
differences over seeds (``common.metrics.paired_difference``, 95 % t interval). A finished run (its
``eval/metrics.json``) is reused; delete its folder to rerun it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common.bundle import run_workflow  # noqa: E402
from common.classical.baselines import classical_segmentation, report_on_items  # noqa: E402
from common.metrics import paired_difference, read_metrics  # noqa: E402

RULES = {"bright": "ACWE mode 1, phase rule bright (default)", "none": "ACWE mode 1, no phase rule (paper)"}
CLASSICAL = {"otsu": "Otsu threshold per image", "chan_vese": "Chan-Vese level set per image, no erosion"}


def bundle_dice(out: Path, rule: str, seed: int, demo_task: str) -> tuple[float, list[dict], float]:
    """Train (unless finished) and evaluate mode 1; returns the mean test Dice, the test items and seconds."""
    run_dir = out / f"{rule}-s{seed}"
    overrides = {
        "output_dir": str(out / "outputs"),
        "ckpt_dir": str(run_dir),
        "demo_task": demo_task,
        "seed": seed,
        "foreground_phase": rule,
    }
    start = time.perf_counter()
    metrics = run_dir / "eval" / "metrics.json"
    if not metrics.is_file():
        run_workflow("acwe_unsup_seg", ["train.json"], **overrides)
    workflow = run_workflow(
        "acwe_unsup_seg", ["train.json", "evaluate.json"], "eval", eval_dir=str(run_dir / "eval"), **overrides
    )
    test_items = workflow.parser.get_parsed_content("datalists")["test"]
    return read_metrics(metrics).mean("dice"), test_items, time.perf_counter() - start


def classical_dice(test_items: list[dict], method: str) -> float:
    """Mean Dice of ``method`` over the (prepared 2D) test items."""
    report = report_on_items(test_items, lambda image: classical_segmentation(image, method))
    return float(report.to_dict()["summary"]["dice"]["mean"]["mean"])


def tables(dice: dict[str, list[float]], seeds: list[int]) -> str:
    names = {**RULES, **CLASSICAL}
    lines = [
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for key, values in dice.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {names[key]} | {cells} | {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} |")
    lines += ["", "| comparison | mean paired Δ | 95% CI | reading |", "|---|---|---|---|"]
    for other in ("none", "otsu", "chan_vese"):
        d = paired_difference(dice["bright"], dice[other])
        reading = ("better" if d.mean > 0 else "worse") if d.excludes_zero else "no difference"
        lines.append(f"| {RULES['bright']} − {names[other]} | {d.mean:+.3f} | {d.interval_text()} | {reading} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "acwe_label_free")
    parser.add_argument("--demo-task", default="cells")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    dice: dict[str, list[float]] = {key: [] for key in (*RULES, *CLASSICAL)}
    for seed in args.seeds:
        for rule in RULES:
            value, test_items, seconds = bundle_dice(args.out, rule, seed, args.demo_task)
            dice[rule].append(value)
            print(f"seed {seed} {rule}: Dice {value:.3f} ({seconds:.0f} s)", flush=True)
        for method in CLASSICAL:
            dice[method].append(classical_dice(test_items, method))
    text = tables(dice, args.seeds)
    (args.out / "results.json").write_text(json.dumps({"seeds": args.seeds, "dice": dice}, indent=2))
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
