"""Which bundle to use on a task at a labelled budget, from the benchmark's results rows, with the commands to train
it and segment a folder of images.

A method is recommended only when it *helps* at that budget: its 95 % paired interval is above 0 against both its
like-for-like control and the supervised U-Net (``unet``, bundle ``supervised_seg``); among several, the largest mean
difference against the U-Net. Otherwise the U-Net is the recommendation.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.benchmark.statistics import (
    PROTOCOL_SEEDS,
    REFERENCE_ARM,
    Comparison,
    arm_info,
    arm_order,
    helps,
    select_rows,
    task_comparisons,
)

__all__ = ["REFERENCE_BUNDLE", "bundle_commands", "recommendation_markdown"]

REFERENCE_BUNDLE = "supervised_seg"
# a bundle's keys that must match the data, passed to its training and inference as the benchmark's runs set them
# (translation_semi_seg: its network preset is the images' size), and its inference configs for an MSD-folder model
DATA_KEYS: dict[str, tuple[str, ...]] = {"translation_semi_seg": ("image_size", "patch_size")}
INFERENCE_CONFIGS: dict[str, tuple[str, ...]] = {"translation_semi_seg": ("inference.json", "inference_msd.json")}
UNLABELLED_HINTS: dict[str, str] = {
    "translation_semi_seg": "# unlabelled images: dataset.json's 'unlabeled' list; target-absent: its 'absent' list"
}


def bundle_commands(
    bundle: str,
    train_configs: Sequence[str],
    dataset_dir: str,
    use_unlabelled: bool,
    settings: dict[str, Any] | None = None,
) -> str:
    """The shell commands (a fenced block) that train ``bundle`` with ``train_configs`` (file names under
    ``bundles/<bundle>/configs/``) on the MSD folder ``dataset_dir`` with all its labels, then segment its
    ``imagesTs`` folder with the bundle's ``inference.json`` (README, "Running a bundle"); the bundle's
    :data:`DATA_KEYS` from ``settings`` (a run's overrides) go to both, its :data:`INFERENCE_CONFIGS` to inference."""
    configs = ",".join(f"'bundles/{bundle}/configs/{name}'" for name in train_configs or ["train.json"])
    keys = "".join(
        f" --{k} {shlex.quote(json.dumps(settings[k]) if isinstance(settings[k], list) else str(settings[k]))}"
        for k in DATA_KEYS.get(bundle, ())
        if settings and k in settings
    )
    train = (
        f'python -m monai.bundle run training --config_file "[{configs}]" \\\n'
        f"    --dataset_dir {dataset_dir} --labelled_fraction 1.0{keys}"
    )
    if use_unlabelled:
        hint = UNLABELLED_HINTS.get(bundle, "# unlabelled images beyond dataset.json's: add --unlabeled_dir FOLDER")
        train = f"{hint}\n{train}"
    inference = INFERENCE_CONFIGS.get(bundle, ("inference.json",))
    config = (
        f"bundles/{bundle}/configs/{inference[0]}"
        if len(inference) == 1
        else '"[' + ",".join(f"'bundles/{bundle}/configs/{name}'" for name in inference) + ']"'
    )
    infer = (
        f"python -m monai.bundle run --config_file {config} \\\n"
        f"    --dataset_dir {dataset_dir}/imagesTs --output_dir {dataset_dir}/masks_{bundle}{keys}"
    )
    return f"```bash\n{train}\n{infer}\n```"


def _find(comparisons: Sequence[Comparison], arm: str, labelled: int, kind: str) -> Comparison | None:
    return next((c for c in comparisons if c.arm == arm and c.labelled == labelled and c.kind == kind), None)


def _delta(c: Comparison | None) -> str:
    """``"+0.031 [+0.004, +0.060] better *"``; the reason when not compared."""
    if c is None:
        return "-"
    if c.diff is None:
        return c.note or c.reading
    mark = " *" if c.significant_after_holm else ""
    return f"{c.diff.mean:+.3f} {c.diff.interval_text()} {c.reading}{mark}"


def _dice(rows: Sequence[dict[str, Any]]) -> str:
    values = [float(r["dice_mean"]) for r in rows]
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def recommendation_markdown(task: str, rows: list[dict[str, Any]], labelled: int, dataset_dir: str) -> str:
    """The recommendation for ``task`` at ``labelled`` labelled cases: a table of each method and the U-Net (Dice
    mean ± sd over seeds, Δ against the U-Net and against the method's control with their 95 % intervals and
    readings), then the verdict with the commands to train and infer on ``dataset_dir`` (an MSD folder)."""
    used, _ = select_rows(rows)
    amounts = sorted({int(r["labelled"]) for r in used if r.get("role") in ("method", "reference")} - {0})
    if labelled not in amounts:
        raise ValueError(f"{task}: no method or U-Net runs at {labelled} labelled cases; the results have {amounts}.")
    comparisons = task_comparisons(rows)
    info = arm_info(used)
    at_k = {a: [r for r in used if r["arm"] == a and int(r["labelled"]) == labelled] for a in arm_order(used)}
    methods = [a for a, group in at_k.items() if group and info[a].get("role") == "method"]
    lines = [
        f"## `{task}` at {labelled} labelled cases",
        "",
        "| arm | bundle | Dice (mean ± sd over seeds) | seeds | Δ vs U-Net [95% CI] reading "
        "| Δ vs its control [95% CI] reading |",
        "|---|---|---|---|---|---|",
    ]
    if at_k.get(REFERENCE_ARM):
        group = at_k[REFERENCE_ARM]
        label = info[REFERENCE_ARM].get("label", REFERENCE_ARM)
        lines.append(f"| {label} (`{REFERENCE_ARM}`) | {REFERENCE_BUNDLE} | {_dice(group)} | {len(group)} | - | - |")
    for arm in methods:
        group = at_k[arm]
        cells = [
            f"{info[arm].get('label', arm)} (`{arm}`)",
            str(info[arm].get("bundle")),
            _dice(group),
            str(len(group)),
            _delta(_find(comparisons, arm, labelled, "reference")),
            _delta(_find(comparisons, arm, labelled, "control")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    m = sum(1 for c in comparisons if c.p is not None)
    lines += [
        "",
        f"Readings from the 95% paired t interval over the seeds present in both arms; `*`: significant at 0.05 "
        f"after Holm over the task's {m} comparisons.",
        "",
    ]
    seeds = sorted({len(group) for arm, group in at_k.items() if group and (arm in methods or arm == REFERENCE_ARM)})
    seeds_text = " / ".join(str(n) for n in seeds)
    if seeds and seeds[0] < PROTOCOL_SEEDS:
        lines += [
            f"Seeds per arm: {seeds_text}. Fewer than the protocol's {PROTOCOL_SEEDS} seeds is not a verdict: "
            "read what follows as provisional.",
            "",
        ]
    else:
        lines += [f"Seeds per arm: {seeds_text}.", ""]

    helping = [a for a in methods if helps(comparisons, a, labelled)]
    if helping:
        best = max(helping, key=lambda a: (_find(comparisons, a, labelled, "reference").diff.mean, a))
        row = at_k[best][-1]
        pair = (_find(comparisons, best, labelled, "reference"), _find(comparisons, best, labelled, "control"))
        survives = all(c.significant_after_holm for c in pair)
        holm_text = "both differences stay" if survives else "not both differences stay"
        others = [a for a in helping if a != best]
        lines += [
            f"**Use {row['bundle']} ({info[best].get('label', best)})**: better than both its control and the U-Net "
            f"at {labelled} labelled cases (Δ vs U-Net {pair[0].diff.mean:+.3f}); {holm_text} significant after "
            f"Holm over the task's {m} comparisons."
            + (f" Also better than both: {', '.join(f'`{a}`' for a in others)}." if others else ""),
            "",
        ]
        bundle, configs, unlabelled = row["bundle"], row.get("train_configs") or ["train.json"], True
        settings = row.get("settings")
    else:
        lines += [
            f"**No method beats the supervised U-Net here at this budget: use {REFERENCE_BUNDLE}.**",
            "",
        ]
        reference = at_k.get(REFERENCE_ARM) or []
        configs = (reference[-1].get("train_configs") if reference else None) or ["train.json"]
        bundle, unlabelled, settings = REFERENCE_BUNDLE, False, None
    lines += [
        f"Train on your data (`{dataset_dir}`, MSD layout, all its labels), then segment a folder of images:",
        "",
        bundle_commands(bundle, configs, dataset_dir, unlabelled, settings),
        "",
        "The commands use the bundle's own schedule and network, not the benchmark's reduced budget; "
        f"`inference.json` reads the model training writes to `bundles/{bundle}/models/model.pt`.",
    ]
    return "\n".join(lines) + "\n"
