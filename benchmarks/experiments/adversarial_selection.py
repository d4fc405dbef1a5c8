"""Hung et al.'s semi-supervised hyper-parameters chosen on the labelled validation images, then the chosen setting
against its like-for-like control on the test images.

    python benchmarks/experiments/adversarial_selection.py [--task cluttered_mnist] [--labelled 20]
        [--thresholds 0.2 0.1 0.03] [--semi-weights 0.1 1.0] [--adv-weights 0.001 0.1] [--semi-starts 0 3]
        [--selection-seeds 0] [--seeds 0 1 2] [--jobs 2] [--out outputs/label_efficiency] [--quick]
    python benchmarks/experiments/adversarial_selection.py --chosen semi_threshold=0.2,semi_weight=1 --seeds 3 4 5 ...

Stage 1 (selection): the ``adversarial`` arm of ``benchmarks/experiments/label_efficiency_v1.py`` (same data, labelled
share, segmenter steps, semi start and network) with every pair of ``semi_threshold`` (Hung et al.'s T_semi, 0.2) and
``semi_weight`` (lambda_semi, 0.1) on the grid, for each ``--selection-seeds``. Each run's Dice on the task's
labelled **validation** images after its last step (the ``validation_dice`` the benchmark records) is the only
thing the choice reads: the setting with the highest mean validation Dice wins (ties: the grid's order, paper values
first). Then, one coordinate at a time from that choice (stage 1b), ``adv_weight`` (lambda_adv, 0.01) takes each of
``--adv-weights`` and ``semi_start_epoch`` (the semi start; the benchmark's is a quarter of the epochs, as 5k of 20k
iterations in the paper) each of ``--semi-starts``, and the best of the stage-1 choice and those variants on
validation is the final choice (ties: the stage-1 choice). ``semi_adv_weight`` (0.001) stays at the paper's value.

Stage 2 (test): the chosen setting for every ``--seeds`` against ``adversarial_control`` (``supervised_only.json``,
the same recipe without the discriminator and the unlabelled images), paired over seeds with the 95 % interval, and
the paper's setting beside it. (Every run is also evaluated on the test images, as every run of the benchmark is,
and kept in the results file; the choice never reads those numbers, and the table shows them only for stage 2.)

``--chosen SETTING`` (``key=value,...``, as the tables name settings) skips stages 1 and 1b and runs stage 2 for that
setting and the control only (no paper row): a choice made earlier on validation, tested again on seeds it never
saw (a confirmatory run; the table says the choice was given).

Runs go through ``label_efficiency.run_specs`` (one process, one torch thread each, ``--jobs`` at a time) into
``<out>/<task>/selection/runs/<id>/``; finished runs are kept in ``<out>/<task>/selection/results.json`` and a rerun
skips them. Written: ``<out>/<task>/selection/adversarial_selection.md`` (the validation grid, the choice, the test
comparison) next to the results file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.experiments import label_efficiency_v1 as le  # noqa: E402
from common.atomic_write import write_text_atomic  # noqa: E402

PAPER = {"semi_threshold": 0.2, "semi_weight": 0.1}  # Hung et al. (2018), Sec. 4.2
PAPER_ADV_WEIGHT = 0.01  # lambda_adv, Hung et al. (2018), Sec. 4.2


def setting_name(setting: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(setting.items()))


def parse_setting(text: str) -> dict[str, float]:
    """``"semi_threshold=0.2,semi_weight=1"`` -> ``{"semi_threshold": 0.2, "semi_weight": 1.0}`` (the inverse of
    ``setting_name``); a key outside the searched ones is an error naming it."""
    known = ("semi_threshold", "semi_weight", "adv_weight", "semi_adv_weight", "semi_start_epoch")
    setting: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in known:
            raise ValueError(f"--chosen: expected key=value with a key of {known}, got {part!r}")
        number = float(value)
        setting[key.strip()] = int(number) if key.strip() == "semi_start_epoch" else number
    return setting


def grid(thresholds: Sequence[float], weights: Sequence[float]) -> list[dict[str, float]]:
    """Every ``{semi_threshold, semi_weight}`` pair, the paper's first when it is on the grid."""
    settings = [{"semi_threshold": t, "semi_weight": w} for t in thresholds for w in weights]
    return sorted(settings, key=lambda s: s != PAPER)


def coordinate_variants(
    chosen: dict[str, float], adv_weights: Sequence[float], semi_starts: Sequence[int], paper_start: int
) -> list[dict[str, float]]:
    """Stage 1b: ``chosen`` with ``adv_weight`` set to each of ``adv_weights``, then with ``semi_start_epoch`` set to
    each of ``semi_starts``, one key at a time (the paper's values, 0.01 and ``paper_start``, are ``chosen`` itself and
    left out)."""
    variants = [{**chosen, "adv_weight": w} for w in dict.fromkeys(adv_weights) if w != PAPER_ADV_WEIGHT]
    variants += [{**chosen, "semi_start_epoch": e} for e in dict.fromkeys(semi_starts) if e != paper_start]
    return variants


def spec_for(base: dict[str, Any], setting: dict[str, float] | None, out: Path) -> dict[str, Any]:
    """``base`` (a ``label_efficiency.plan`` spec) with ``setting`` over its overrides, its own id, hash and folder."""
    spec = json.loads(json.dumps(base))
    for key in ("run_dir", "hash"):
        spec.pop(key)
    spec["overrides"].pop("output_dir", None)
    spec["overrides"].pop("ckpt_dir", None)
    if setting is not None:
        spec["overrides"].update(setting)
        spec["id"] = f"{spec['arm']}[{setting_name(setting)}]@{le.amount_text(spec['labelled'])}#s{spec['seed']}"
        spec["setting"] = setting
    return le.place_spec(spec, out / "runs" / "".join(c if c.isalnum() or c in "._-=" else "_" for c in spec["id"]))


def choose(rows: Sequence[dict[str, Any]], settings: Sequence[dict[str, float]], seeds: Sequence[int]) -> tuple:
    """``(chosen setting, {setting name: [validation Dice per selection seed]})``: the highest mean validation
    Dice; a setting with a failed or missing run is not eligible."""
    table: dict[str, list[float | None]] = {}
    for setting in settings:
        name = setting_name(setting)
        table[name] = [
            next(
                (
                    r.get("validation_dice")
                    for r in rows
                    if r.get("setting") == setting and r["seed"] == s and r["status"] == "ok"
                ),
                None,
            )
            for s in seeds
        ]
    eligible = [s for s in settings if all(v is not None for v in table[setting_name(s)])]
    if not eligible:
        raise RuntimeError("no setting finished on every selection seed")
    best = max(eligible, key=lambda s: sum(table[setting_name(s)]) / len(seeds))  # first of ties: grid order
    return best, table


def markdown(
    task: le.Task, labelled: int, table: dict, chosen: dict, rows: Sequence[dict], seeds: Sequence[int], command: str
) -> str:
    lines = [
        f"# Adversarial semi-supervised hyper-parameters chosen on validation: {task.title}",
        "",
        f"Labelled training images: {labelled}; segmenter steps {task.steps} per run; command: `{command}`.",
        "",
    ]
    if not table:
        lines.append(
            f"## Stage 1: not run; the setting `{setting_name(chosen)}` was given (`--chosen`), chosen earlier on "
            "validation"
        )
    else:
        sel_seeds = len(next(iter(table.values())))
        lines += [
            f"## Stage 1: validation Dice after the last step ({sel_seeds} selection seed(s)), test images not read",
            "",
            "| setting | validation Dice per seed | mean | |",
            "|---|---|---|---|",
        ]
    for name, values in table.items():
        shown = ", ".join("failed" if v is None else f"{v:.3f}" for v in values)
        ok = [v for v in values if v is not None]
        mean = f"{sum(ok) / len(ok):.3f}" if len(ok) == len(values) else "-"
        marks = " ".join(
            m for m, on in (("chosen", name == setting_name(chosen)), ("paper", name == setting_name(PAPER))) if on
        )
        lines.append(f"| {name} | {shown} | {mean} | {marks} |")
    if table:
        lines += [
            "",
            "Rows naming `adv_weight` or `semi_start_epoch` are stage 1b: the stage-1 choice with that one key "
            "changed; elsewhere lambda_adv is 0.01 and the semi start the benchmark's (a quarter of the epochs).",
        ]

    def is_control(r: dict) -> bool:
        return r["arm"] == "adversarial_control" and "setting" not in r

    controls = [r for r in rows if r["seed"] in seeds and is_control(r)]
    control = {s: r["dice_mean"] for s, r in le._ok(controls, "adversarial_control", labelled).items()}
    lines += [
        "",
        f"## Stage 2: test Dice, {len(seeds)} seeds, paired with the control (95 % interval over seeds)",
        "",
        "| arm | test Dice per seed | vs control | 95 % interval | |",
        "|---|---|---|---|---|",
        f"| control (supervised_only.json) | {', '.join(f'{control[s]:.3f}' for s in sorted(control))} | | | |",
    ]
    for label, setting in (("chosen: " + setting_name(chosen), chosen), ("paper: " + setting_name(PAPER), PAPER)):
        if label.startswith("paper") and (setting == chosen or not table):
            continue
        # the setting's runs and the control's, paired by the benchmark's own rule (common seeds, equal steps)
        pair = [r for r in rows if r["seed"] in seeds and (r.get("setting") == setting or is_control(r))]
        diff, common, note = le.compare(pair, "adversarial", "adversarial_control", labelled)
        if diff is None:
            lines.append(f"| {label} | {'not run' if not common else note} | | | |")
            continue
        mine = le._ok(pair, "adversarial", labelled)  # the rows compare paired
        shown = ", ".join(f"{mine[s]['dice_mean']:.3f}" for s in common)
        lines.append(f"| {label} | {shown} | {diff.mean:+.3f} | {diff.interval_text()} | {le._verdict(diff)} |")
    return "\n".join(lines) + "\n"


def select(base: dict, args: argparse.Namespace, out: Path, results: Path, command: str) -> tuple:
    """Stages 1 and 1b on ``args.selection_seeds``: ``(chosen setting, validation table)``."""
    settings = grid(args.thresholds, args.semi_weights)
    specs = [spec_for(base["adversarial", s], setting, out) for setting in settings for s in args.selection_seeds]
    rows = le.run_specs(specs, results, args.jobs, command)
    first, table = choose(rows, settings, args.selection_seeds)
    paper_start = base["adversarial", args.selection_seeds[0]]["overrides"]["semi_start_epoch"]
    variants = coordinate_variants(first, args.adv_weights, args.semi_starts, paper_start)
    specs = [spec_for(base["adversarial", s], setting, out) for setting in variants for s in args.selection_seeds]
    rows = le.run_specs(specs, results, args.jobs, command)
    chosen, table_1b = choose(rows, [first, *variants], args.selection_seeds)
    table.update(table_1b)
    print(f"chosen on validation: {setting_name(chosen)}", flush=True)
    return chosen, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(le.TASKS), default="cluttered_mnist")
    parser.add_argument("--labelled", type=int, default=None, help="labelled images (default: the task's lowest)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.1, 0.03])
    parser.add_argument("--semi-weights", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--adv-weights", type=float, nargs="+", default=[0.001, 0.1], help="stage 1b lambda_adv")
    parser.add_argument("--semi-starts", type=int, nargs="+", default=[0, 3], help="stage 1b semi_start_epoch")
    parser.add_argument("--selection-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "outputs" / "label_efficiency"))
    parser.add_argument("--quick", action="store_true", help="the benchmark's reduced data and steps (a smoke run)")
    parser.add_argument(
        "--chosen",
        type=parse_setting,
        default=None,
        help="skip the selection: stage 2 for this setting and the control",
    )
    args = parser.parse_args(argv)
    task = le.TASKS[args.task].scaled(args.quick)
    labelled = args.labelled if args.labelled is not None else task.labelled[0]
    out = Path(args.out).resolve() / (task.name + ("_quick" if args.quick else "")) / "selection"
    out.mkdir(parents=True, exist_ok=True)
    data = le.prepare_task(task, Path(args.out).resolve() / "data" / ("quick" if args.quick else "full"), args.quick)
    seeds = sorted(set(args.seeds) | (set() if args.chosen else set(args.selection_seeds)))
    base = {
        (s["arm"], s["seed"]): s
        for s in le.plan(task, data, ["adversarial", "adversarial_control"], seeds, out)
        if s["labelled"] == labelled
    }
    if not base:
        raise SystemExit(f"{task.name} has no labelled amount {labelled}; choose from {task.labelled}")
    command = "python benchmarks/experiments/adversarial_selection.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    results = out / "results.json"
    if args.chosen is not None:
        chosen, table = args.chosen, {}
        print(f"given (--chosen), no selection run: {setting_name(chosen)}", flush=True)
    else:
        chosen, table = select(base, args, out, results, command)
    stage2 = [spec_for(base["adversarial", s], chosen, out) for s in args.seeds]
    stage2 += [spec_for(base["adversarial", s], PAPER, out) for s in args.seeds if PAPER != chosen and table]
    stage2 += [spec_for(base["adversarial_control", s], None, out) for s in args.seeds]
    rows = le.run_specs(stage2, results, args.jobs, command)
    text = markdown(task, labelled, table, chosen, rows, args.seeds, command)
    write_text_atomic(out / "adversarial_selection.md", text)
    print("\n" + text + f"\nwritten: {results}, {out / 'adversarial_selection.md'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
