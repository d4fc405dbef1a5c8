"""Five-fold protocol of Tan et al. (2022, Sec. 4.1) for the adversarial_semi_seg bundle.

    python benchmarks/experiments/adversarial_folds.py [--dataset-dir DIR] [--out outputs/adversarial_folds]
        [--folds 0 1 2 3 4] [--epochs 25] [--only "semi, 1/8 labels"]

Volumes are cut into five seeded folds (``common.data.folds.cross_validation_datalists``). Round ``k`` tests on
fold ``k``; the fully supervised rows train on the other four folds, the semi-supervised rows on two labelled folds
(of which ``labelled_fraction`` of the volumes keep their labels) and two unlabelled folds. Every row of
``adversarial_tables.ROWS`` is trained and evaluated per round (same schedule options as that script); the table
gives the mean ± std over rounds and is written to ``<out>/results.md`` and ``results.json``. Without
``--dataset-dir`` the demo data (tubular task) is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.experiments.adversarial_tables import METRICS, ROWS, _slug, demo_overrides, run_row  # noqa: E402
from common.data.demo import ensure_demo_dataset  # noqa: E402
from common.data.folds import cross_validation_datalists  # noqa: E402


def fold_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per row, mean ± std over rounds of mIoU, Dice, specificity, precision."""
    lines = ["| method | rounds | mIoU | Dice | specificity | precision |", "|---|---|---|---|---|---|"]
    for label, runs in results.items():
        cells = [f"{np.mean([r[m] for r in runs]):.3f} ± {np.std([r[m] for r in runs]):.3f}" for m in METRICS]
        lines.append(f"| {label} | {len(runs)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default="", help="MSD-layout folder (default: the demo data)")
    parser.add_argument("--out", default=str(REPO / "outputs" / "adversarial_folds"), help="output folder")
    parser.add_argument("--folds", type=int, nargs="*", default=None, help="rounds to run (default: all five)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of every run")
    parser.add_argument("--epoch-length", type=int, default=10, help="iterations per epoch")
    parser.add_argument("--semi-start", type=int, default=8, help="warm-up epochs before the pseudo-label loss")
    parser.add_argument("--only", nargs="*", default=None, help="row labels to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out).resolve()
    overrides = demo_overrides(args.epochs, args.epoch_length, args.semi_start)
    if args.dataset_dir:
        datalist = Path(args.dataset_dir).resolve() / "dataset.json"
    else:
        datalist = ensure_demo_dataset("tubular", root / "demo_data", **overrides["demo_kwargs"])
    overrides["dataset_dir"] = str(datalist.parent)
    rounds = cross_validation_datalists(datalist, root / "datalists", seed=args.seed)
    results: dict[str, list[dict[str, Any]]] = {}
    for k, paths in enumerate(rounds):
        if args.folds is not None and k not in args.folds:
            continue
        for label, configs, extra, _ in ROWS:
            if args.only and label not in args.only:
                continue
            full = extra.get("labelled_fraction") == 1.0 or "full_adversarial.json" in configs
            protocol = "full" if full else "semi"
            print(f"== round {k}: {label} ({protocol} protocol) ==", flush=True)
            row_overrides = {**overrides, **extra, "datalist_file": str(paths[protocol])}
            results.setdefault(label, []).append(run_row(configs, row_overrides, root / f"round{k}" / _slug(label)))
    table = fold_table(results)
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.md").write_text(table + "\n", encoding="utf-8")
    (root / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
