"""Does the translation separate the digit from the clutter? The residual of every finished curve run, scored on the
test target-present images of cluttered MNIST against their digit masks (a diagnostic; issue 17).

    python benchmarks/experiments/translation_separation.py [the options of translation_curves.py that name its runs:
        --seeds --configs --epochs-scale --select-on-validation --labelled --out --quick]

For each run of ``benchmarks/experiments/translation_curves.py`` with those options whose ``model.pt`` exists (the
network that run tested), the network is built from the run's own configs and overrides, and ``G_res(c, u)`` (mode
"translate") of each test P image is scored with :func:`common.metrics.translation_separation.residual_separation`: the
share of the residual's magnitude that lies on the digit against the digit's share of the pixels (enrichment 1: the
residual ignores the digit), and the Dice of Otsu's threshold of that magnitude (the mask translation alone would give,
no label). A control trained without the translation terms has an untrained residual path: its row is the reference.

Written: ``<curves folder>/translation_separation.md`` (one row per run, mean over the test images) and
``translation_separation.json`` (the per-run means). The digit masks are the benchmark's hidden truth: nothing here
selects or trains a model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.experiments import translation_curves as tc  # noqa: E402
from common.atomic_write import write_text_atomic  # noqa: E402
from common.bundle import load_workflow  # noqa: E402
from common.metrics.translation_separation import SEPARATION_KEYS, residual_separation  # noqa: E402


def run_separation(spec: dict[str, Any]) -> dict[str, float] | None:
    """Mean of each :data:`SEPARATION_KEYS` over the test P images for the run of ``spec`` (None when its
    ``model.pt`` is missing), plus ``images``."""
    checkpoint = Path(spec["overrides"]["ckpt_dir"]) / "model.pt"
    if not checkpoint.is_file():
        return None
    workflow = load_workflow("translation_semi_seg", spec["eval_configs"], "infer", **spec["overrides"], device="cpu")
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))  # model.pt: a state dict
    network.eval()
    scores: dict[str, list[np.ndarray]] = {key: [] for key in SEPARATION_KEYS}
    with torch.no_grad():
        for batch in workflow.parser.get_parsed_content("validate#dataloader"):
            _, residual = network.translate(batch["image"])
            for key, values in residual_separation(residual, batch["label"]).items():
                scores[key].append(values)
    merged = {key: np.concatenate(v) for key, v in scores.items()}
    return {**{key: float(np.nanmean(v)) for key, v in merged.items()}, "images": int(len(merged["mass_share"]))}


def markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    lines = [
        "Residual `G_res(c, u)` of the test target-present images against their digit masks (mean over images). "
        "Enrichment: the residual's share of magnitude on the digit over the digit's share of the pixels (1 = no "
        "separation). Otsu Dice: Otsu's threshold of the residual's magnitude against the digit (no label used).",
        "",
        f"Command: `{command}`.",
        "",
        "| config | seed | images | digit share of pixels | residual share on the digit | enrichment | "
        "Otsu Dice of the residual | test Dice of the segmentation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dice = "-" if r.get("dice_mean") is None else f"{r['dice_mean']:.3f}"
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['images']} | {r['target_share']:.3f} | {r['mass_share']:.3f} | "
            f"{r['enrichment']:.2f} | {r['otsu_dice']:.3f} | {dice} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tc.add_run_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out, specs = tc.curve_specs(args)
    results = out / "results.json"
    finished = {r["id"]: r for r in json.loads(results.read_text())} if results.is_file() else {}
    rows = []
    for spec in specs:
        scores = run_separation(spec)
        if scores is None:
            print(f"{spec['id']}: no model.pt (not run yet), skipped", flush=True)
            continue
        row = {"id": spec["id"], "config": spec["arm"].removeprefix("translation:"), "seed": spec["seed"], **scores}
        row["dice_mean"] = finished.get(spec["id"], {}).get("dice_mean")
        print(f"{spec['id']}: enrichment {row['enrichment']:.2f}, Otsu Dice {row['otsu_dice']:.3f}", flush=True)
        rows.append(row)
    if not rows:
        raise SystemExit(
            f"no finished run under {out}: run benchmarks/experiments/translation_curves.py with the same options"
        )
    command = "python benchmarks/experiments/translation_separation.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    text = markdown(rows, command)
    write_text_atomic(out / "translation_separation.md", text)
    write_text_atomic(out / "translation_separation.json", json.dumps(rows, indent=1))
    print("\n" + text + f"\nwritten: {out / 'translation_separation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
