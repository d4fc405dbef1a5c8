"""Where the adversarial method's gain comes from: test Dice, precision and recall of the runs that
``adversarial_selection.py --chosen`` left for the full setting, its two ablations and the control, each paired with
the control by seed (mean and 95 % t interval), read from each run's ``eval/metrics.json``.

    python benchmarks/experiments/adversarial_ablation_table.py --runs /tmp/le/cluttered_mnist/selection/runs \
        --seeds 3 4 5 ...

The runs (each ``--chosen`` over the same seeds, one results folder):

* both: ``semi_threshold=0.2,semi_weight=1`` (the setting chosen on validation);
* adversarial terms only: ``semi_threshold=0.2,semi_weight=0`` (no pseudo-label loss);
* pseudo-labels only: ``adv_weight=0,semi_adv_weight=0,semi_threshold=0.2,semi_weight=1`` (D trained, but S gets
  no adversarial gradient: D only makes the confidence map);
* the control, ``supervised_only.json`` (``adversarial_control``).

A seed missing from a run is left out of that run's pairs (the table says which seeds each row has).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.metrics.results import paired_difference, read_metrics  # noqa: E402

CONTROL = "its U-Net alone (supervised_only.json)"
RUNS = {  # row -> run folder pattern of adversarial_selection.spec_for ({} = seed)
    CONTROL: "adversarial_control_20_s{}",
    "adversarial terms only (semi_weight 0)": "adversarial_semi_threshold=0.2_semi_weight=0__20_s{}",
    "pseudo-labels only (adv_weight 0, semi_adv_weight 0)": (
        "adversarial_adv_weight=0_semi_adv_weight=0_semi_threshold=0.2_semi_weight=1__20_s{}"
    ),
    "both (semi_weight 1)": "adversarial_semi_threshold=0.2_semi_weight=1__20_s{}",
}
METRICS = ("dice", "precision", "recall")


def interval(a: Sequence[float], b: Sequence[float]) -> str:
    """``+m [lo, hi]``: the mean of the paired differences ``a - b`` with its 95 % t interval."""
    d = paired_difference(a, b)
    return f"{d.mean:+.3f} (one seed)" if d.n < 2 else f"{d.mean:+.3f} {d.interval_text()}"


def read(runs: Path, seeds: Sequence[int]) -> dict[tuple[str, int], dict[str, float]]:
    """``{(row, seed): {metric: mean over the test images}}`` of the runs that finished."""
    out = {}
    for row, pattern in RUNS.items():
        for s in seeds:
            path = runs / pattern.format(s) / "eval" / "metrics.json"
            if path.is_file():
                metrics = read_metrics(path)
                out[row, s] = {m: metrics.mean(m) for m in METRICS}
    return out


def markdown(values: dict[tuple[str, int], dict[str, float]], seeds: Sequence[int]) -> str:
    lines = [
        "| run | seeds | test Dice | vs control | precision | vs control | recall | vs control |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in RUNS:
        done = [s for s in seeds if (row, s) in values and (CONTROL, s) in values]
        if not done:
            lines.append(f"| {row} | none | | | | | | |")
            continue
        cells = []
        for m in METRICS:
            x = [values[row, s][m] for s in done]
            c = [values[CONTROL, s][m] for s in done]
            cells += [f"{sum(x) / len(x):.3f}", "" if row == CONTROL else interval(x, c)]
        lines.append(f"| {row} | {len(done)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="<out>/<task>/selection/runs")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    args = parser.parse_args(argv)
    values = read(args.runs, args.seeds)
    if not values:
        raise SystemExit(f"no finished run under {args.runs}")
    print(markdown(values, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
