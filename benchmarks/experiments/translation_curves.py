"""Learning curves of every translation_semi_seg config on the label-scarce benchmark's cluttered MNIST recipe.

    python benchmarks/experiments/translation_curves.py [--labelled 20] [--seeds 0]
        [--configs train.json seg_only.json ...] [--jobs 2] [--out outputs/label_efficiency] [--png PATH]
        [--epochs-scale 1] [--select-on-validation] [--quick]

Each config (merged over ``train.json``; default every training variant of the bundle, and the key changes of
``VARIANTS``: ``train.json`` with ``segmentation_weight_decay`` 0 against the authors' decay of every parameter) runs
the benchmark's translation recipe (``label_efficiency``: ``network_width`` 0.25, batch 10 + 10 target-absent images,
the labelled share, ``Task.steps`` segmenter steps in ``Task.epochs`` epochs) with one change: it validates after
**every** epoch (``val_interval`` 1) and keeps its last network (``select_by_key_metric`` false, so the test Dice is the
last model's, as in the benchmark). The validation key metric (soft Dice on the validation target-present images) of
each epoch is the curve; the last network's test Dice is given beside it. ``--select-on-validation`` tests the network
of the highest validation Dice instead (``select_by_key_metric`` true, the bundle's default ``model.pt``; this reads
the validation images' labels, which the benchmark's rule does not), into ``.../curves[_xK]_best_validation/``.

Runs go through ``label_efficiency.run_specs`` (one process and torch thread each, ``--jobs`` at a time) into
``<out>/cluttered_mnist/curves/runs/<id>/``; finished runs are kept in ``.../curves/results.json`` and a rerun skips
them. Written: ``.../curves/translation_curves.md`` (per config: validation Dice per epoch, test Dice, wall s; then
each method of ``PAIRS`` against its control, the translation terms off, paired by seed with the 95 % interval) and
the plot (``--png``, default ``.../curves/translation_curves.png``). ``--epochs-scale K`` trains K times the
benchmark's epochs (and steps), every config alike, into ``.../curves_xK/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.experiments import label_efficiency_v1 as le  # noqa: E402
from common.atomic_write import write_text_atomic  # noqa: E402

# every training variant of the bundle (configs/), in the order of its docs: the method, its ablations, the baselines
CONFIGS = (
    "train.json",
    "no_translation.json",
    "p_to_a_only.json",
    "sep_dec.json",
    "segmentation_path_only.json",
    "seg_only.json",
    "ae_baseline.json",
    "mean_teacher.json",
)
# key changes measured beside the configs: name -> (config, overrides); the authors decay every parameter
# (genseg utils/experiment.py), the key leaves the segmentation-only parameters undecayed (issue 17)
VARIANTS = {
    "train.json+segmentation_weight_decay=0": ("train.json", {"segmentation_weight_decay": 0.0}),
    "segmentation_path_only.json+segmentation_weight_decay=0": (
        "segmentation_path_only.json",
        {"segmentation_weight_decay": 0.0},
    ),
}
# (method, its like-for-like control): the translation terms off, all else equal; paired by seed in the table
PAIRS = (
    ("train.json", "segmentation_path_only.json"),
    ("train.json+segmentation_weight_decay=0", "segmentation_path_only.json+segmentation_weight_decay=0"),
)
CURVE = {"val_interval": 1}  # select_by_key_metric: curve_spec's select_on_validation (default false)
# what the test Dice is of: the last network (the benchmark's rule) or, with --select-on-validation, the network of
# the highest validation Dice (the bundle's default model.pt; it reads the validation images' labels)
TESTED = {False: "the last network", True: "the network of the highest validation Dice"}


def config_and_overrides(name: str) -> tuple[str, dict[str, Any]]:
    """A name of :data:`CONFIGS` or :data:`VARIANTS` -> (the config merged over train.json, extra overrides)."""
    return VARIANTS.get(name, (name, {}))


def curve_spec(base: dict[str, Any], name: str, out: Path, select_on_validation: bool = False) -> dict[str, Any]:
    """The ``translation`` arm's spec ``base`` with config ``name`` (or a variant's config and overrides) merged over
    ``train.json`` and :data:`CURVE` (``select_on_validation``: ``select_by_key_metric`` true, so that ``model.pt``,
    the network evaluated on test, is the one of the highest validation Dice)."""
    config, extra = config_and_overrides(name)
    spec = {k: v for k, v in base.items() if k not in ("run_dir", "hash")}
    configs = ["train.json"] + ([] if config == "train.json" else [config])
    spec = {
        **spec,
        "arm": f"translation:{name}",
        "train_configs": configs,
        "eval_configs": configs + ["evaluate.json"],
    }
    spec["overrides"] = {
        **{k: v for k, v in base["overrides"].items() if k not in ("output_dir", "ckpt_dir")},
        **CURVE,
        "select_by_key_metric": select_on_validation,
        **extra,
    }
    label = name.removesuffix(".json").replace(".json+", "+").replace("=", "")
    spec["id"] = f"{label}@{le.amount_text(spec['labelled'])}#s{spec['seed']}"
    return le.place_spec(spec, out / "runs" / spec["id"].replace("@", "_").replace("#", "_"))


def markdown(
    rows: Sequence[dict[str, Any]],
    configs: Sequence[str],
    command: str,
    quick: bool,
    select_on_validation: bool = False,
) -> str:
    tested = TESTED[select_on_validation]
    epochs = sorted({p["epoch"] for r in rows if r["status"] == "ok" for p in r.get("validation_curve", [])})
    lines = [
        "# translation_semi_seg: validation Dice after every epoch, every config" + (" (QUICK RUN)" if quick else ""),
        "",
        f"Command: `{command}`. One row per run; the test Dice is {tested}'s.",
        "",
        "| config | seed | " + " | ".join(f"epoch {e}" for e in epochs) + " | test Dice | steps | wall s |",
        "|---|---|" + "---|" * (len(epochs) + 3),
    ]
    for config in configs:
        for r in sorted((r for r in rows if r["arm"] == f"translation:{config}"), key=lambda r: r["seed"]):
            if r["status"] != "ok":
                lines.append(f"| {config} | {r['seed']} | failed |" + " |" * (len(epochs) + 2))
                continue
            by_epoch = {p["epoch"]: p["dice"] for p in r["validation_curve"]}
            cells = [f"{by_epoch[e]:.3f}" if e in by_epoch else "-" for e in epochs]
            lines.append(
                f"| {config} | {r['seed']} | {' | '.join(cells)} | {r['dice_mean']:.3f} | {r['segmenter_steps']} "
                f"| {r['wall_s']:.0f} |"
            )
    paired = []
    labelled = next((r["labelled"] for r in rows if "labelled" in r), None)  # one labelled amount per invocation
    for method, control in PAIRS:
        diff, seeds, note = le.compare(
            rows, f"translation:{method}", f"translation:{control}", labelled, equal_steps=True
        )
        if note and len(seeds) >= 2:
            paired.append(f"| {method} | {control} | {len(seeds)} | - | - | {note} |")
        elif len(seeds) >= 2:
            paired.append(
                f"| {method} | {control} | {len(seeds)} | {diff.mean:+.3f} | {diff.interval_text()} "
                f"| {le._verdict(diff)} |"
            )
    if paired:
        lines += [
            "",
            f"Test Dice of {tested}, each method against its control (translation terms off), paired by seed:",
            "",
            "| method | control | seeds | mean paired Δ | 95 % interval | reading |",
            "|---|---|---|---|---|---|",
            *paired,
        ]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], configs: Sequence[str], path: Path) -> None:
    """Validation Dice against segmenter steps, one line per run (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic_write import write_binary_atomic

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab10")
    for index, config in enumerate(configs):
        runs = [
            r for r in rows if r["arm"] == f"translation:{config}" and r["status"] == "ok" and r["validation_curve"]
        ]
        for r in runs:  # one colour per config, one line per seed, one legend entry per config
            steps = [p["iteration"] for p in r["validation_curve"]]
            dice = [p["dice"] for p in r["validation_curve"]]
            style = "-" if config.split("+")[0] in ("train.json", "segmentation_path_only.json") else "--"
            label = f"{config.removesuffix('.json')} ({len(runs)} seeds)" if r is runs[0] else None
            ax.plot(steps, dice, style, color=colours(index % 10), marker="o", markersize=3, alpha=0.8, label=label)
    ax.set_xlabel("segmenter steps")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: covers no curve
    ax.set_title("translation_semi_seg on cluttered MNIST: every config")
    write_binary_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def curve_specs(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """``(folder, specs)`` of the curve runs that the options of :func:`add_run_arguments` name (``configs`` x
    ``seeds``; ``labelled`` None: the task's lowest), in ``<out>/cluttered_mnist/curves[_xK][_best_validation]``;
    the task's data are prepared under ``<out>``."""
    task = le.TASKS["cluttered_mnist"].scaled(args.quick)
    if args.epochs_scale < 1:
        raise SystemExit(f"--epochs-scale must be >= 1, got {args.epochs_scale}")
    task = replace(task, steps=task.steps * args.epochs_scale, epochs=task.epochs * args.epochs_scale)
    labelled = args.labelled if args.labelled is not None else task.labelled[0]
    folder = ("curves" if args.epochs_scale == 1 else f"curves_x{args.epochs_scale}") + (
        "_best_validation" if args.select_on_validation else ""
    )
    out = Path(args.out).resolve() / (task.name + ("_quick" if args.quick else "")) / folder
    out.mkdir(parents=True, exist_ok=True)
    data = le.prepare_task(task, Path(args.out).resolve() / "data" / ("quick" if args.quick else "full"), args.quick)
    base = {s["seed"]: s for s in le.plan(task, data, ["translation"], args.seeds, out) if s["labelled"] == labelled}
    if not base:
        raise SystemExit(f"{task.name} has no labelled amount {labelled}; choose from {task.labelled}")
    return out, [curve_spec(base[s], c, out, args.select_on_validation) for c in args.configs for s in args.seeds]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name a set of curve runs (:func:`curve_specs`'s arguments), shared with the scripts that read
    those runs (``translation_separation.py``)."""
    parser.add_argument("--labelled", type=int, default=None, help="labelled images (default: the task's lowest)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--configs", nargs="+", default=[*CONFIGS, *VARIANTS], choices=[*CONFIGS, *VARIANTS])
    parser.add_argument("--out", default=str(REPO / "outputs" / "label_efficiency"))
    parser.add_argument(
        "--epochs-scale",
        type=int,
        default=1,
        help="train every config this many times the benchmark's epochs (same steps per epoch; own folder curves_xK)",
    )
    parser.add_argument(
        "--select-on-validation",
        action="store_true",
        help="test the network of the highest validation Dice (the bundle's default) instead of the last (own folder)",
    )
    parser.add_argument("--quick", action="store_true", help="the benchmark's reduced data and steps (a smoke run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    out, specs = curve_specs(args)
    command = "python benchmarks/experiments/translation_curves.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    results = out / "results.json"
    rows = [r for r in le.run_specs(specs, results, args.jobs, command) if r["id"] in {s["id"] for s in specs}]
    text = markdown(rows, args.configs, command, args.quick, args.select_on_validation)
    write_text_atomic(out / "translation_curves.md", text)
    plot(rows, args.configs, args.png or out / "translation_curves.png")
    print("\n" + text + f"\nwritten: {results}, {out / 'translation_curves.md'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
