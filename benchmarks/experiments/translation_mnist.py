"""Cluttered MNIST 48x48 "simple" table of the translation_semi_seg bundle (Vorontsov et al., MedIA 2022, Table 2):
trains and evaluates the proposed model and every baseline / ablation config for a list of seeds at a stated (reduced)
schedule and prints mean (std) over seeds beside the paper's values.

    python benchmarks/experiments/translation_mnist.py --seeds 0 1 2 --num-train 2000 --max-epochs 5 --width 0.25 \\
        --out outputs/translation_mnist [--jobs N]

Two Dice values per run, both on all P test images: the paper's soft Dice accumulated over the test set
(``soft_dice_accumulated``) and the mean per-image Dice of the thresholded prediction. ``--seeds`` vary the training
seed; the data set (``--data-seed``) stays the same. Results go to ``<out>/results.json`` and ``results.md``; the
translation panels to ``<out>/panels/``; the validation Dice after each epoch of every run is plotted against the
training iteration in ``<out>/learning_curves.png`` (``--epoch-length`` sets how often it is measured), to show
whether a schedule has run to convergence. ``--jobs N`` runs the (method, seed) runs as N parallel subprocesses (on one
GPU they share it; each has its own folder ``<out>/runs/<config>_seed<s>/`` with its log ``log.txt``), after the
parent has generated the data set once; the printed table and files are the same. The paper trains on the full set
(59500 P + 59500 A images: ``--num-train 59500``, width 1, batch 20 + 20) on a GPU; any reduced schedule here is
stated in the printed table and is not comparable to the paper.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for common without an install
    sys.path.insert(0, str(REPO))

from common.bundle import load_workflow  # noqa: E402
from common.metrics import read_metrics  # noqa: E402

BUNDLE = "translation_semi_seg"
CONFIGS = REPO / "bundles" / BUNDLE / "configs"
# name -> (variant config or None for train.json alone, paper Dice on cluttered MNIST 48x48 simple, 1% labels)
METHODS: dict[str, tuple[str | None, float | None]] = {
    "seg only": ("seg_only.json", 0.61),
    "autoencoder": ("ae_baseline.json", 0.75),
    "mean teacher": ("mean_teacher.json", 0.83),
    "proposed": (None, 0.84),
    "sep dec": ("sep_dec.json", 0.83),
    "P to A only": ("p_to_a_only.json", None),
    "no translation": ("no_translation.json", None),
}


def _overrides(seed: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides shared by every run (and by the parent's data preparation)."""
    overrides = {
        "output_dir": str(out / "data"),
        "seed": seed,
        "data_seed": args.data_seed,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "network_width": args.width,
        "batch_size": args.batch_size,
        "absent_batch_size": args.batch_size,
        "max_epochs": args.max_epochs,
        "val_interval": 1,
        "resume": False,
    }
    if args.epoch_length is not None:  # else each config's own (seg_only.json: one pass over all P images)
        overrides["epoch_length"] = args.epoch_length
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        overrides[key] = json.loads(value)
    return overrides


def _run_dir(variant: str | None, seed: int, out: Path) -> Path:
    return out / "runs" / f"{(variant or 'train.json').removesuffix('.json')}_seed{seed}"


def _add_time_limit(trainer: Any, evaluator: Any, start: float, args: argparse.Namespace) -> None:
    """Ends training once ``args.time_limit`` seconds have passed since ``start`` (checked after each iteration),
    then validates the unfinished epoch so that the best checkpoint also covers it."""
    from ignite.engine import Events

    def check(engine: Any) -> None:
        if time.perf_counter() - start > args.time_limit:
            engine.state.stopped_early = True
            engine.terminate()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, check)
    trainer.add_event_handler(Events.TERMINATE, lambda engine: evaluator.run(engine.state.epoch))


def run_one(variant: str | None, seed: int, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Trains then evaluates one config for one seed; returns its Dice values, the training and evaluation times
    and the median seconds per training iteration."""
    import torch
    from ignite.engine import Events

    run_dir = _run_dir(variant, seed, out)
    name = run_dir.name.removesuffix(f"_seed{seed}")
    overrides = {**_overrides(seed, out, args), "ckpt_dir": str(run_dir / "models")}
    train_configs = ["train.json"] + ([variant] if variant else [])
    stamps: list[float] = []
    curve: list[tuple[int, float]] = []
    seconds = {}
    for workflow_type, configs, extra in (
        ("train", train_configs, {}),
        ("eval", train_configs + ["evaluate.json"], {"eval_dir": str(run_dir / "eval")}),
    ):
        start = time.perf_counter()
        workflow = load_workflow(BUNDLE, configs, workflow_type, **{**overrides, **extra})
        workflow.initialize()
        if workflow_type == "train":
            trainer = workflow.parser.get_parsed_content("train#trainer")
            trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
            evaluator = workflow.parser.get_parsed_content("validate#evaluator")
            evaluator.add_event_handler(
                Events.COMPLETED,
                lambda e: curve.append((trainer.state.iteration, float(e.state.metrics[e.state.key_metric_name]))),
            )
            if args.time_limit is not None:
                _add_time_limit(trainer, evaluator, start, args)
        workflow.run()
        if workflow_type == "train":
            stopped = bool(getattr(trainer.state, "stopped_early", False))
        workflow.finalize()
        seconds[workflow_type] = time.perf_counter() - start
    metrics = read_metrics(run_dir / "eval")
    accumulated = metrics.soft_dice_accumulated
    panels = out / "panels"
    panels.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "eval" / "panel.png", panels / f"{name}_seed{seed}.png")
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "soft_dice_accumulated": float(accumulated["digit"]),
        "dice_per_image": metrics.mean("dice"),
        "train_seconds": seconds["train"],
        "eval_seconds": seconds["eval"],
        "iterations": len(stamps),
        "seconds_per_iteration": statistics.median(steps) if steps else float("nan"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "stopped_by_time_limit": stopped,
        "validation_curve": curve,
    }


def prepare_data(out: Path, args: argparse.Namespace) -> Path:
    """Generates the data set once, from ``train.json``'s own ``data_folder`` expression with the runs' overrides
    (so parallel runs find it instead of each generating it)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(_overrides(args.seeds[0], out, args))
    return Path(parser.get_parsed_content("data_folder"))


def run_parallel(
    runs: list[tuple[str, int]], out: Path, args: argparse.Namespace
) -> dict[tuple[str, int], dict[str, Any]]:
    """Runs each (method, seed) as a subprocess of this script (``--jobs`` at a time); returns each run's result, or
    ``{"error": ...}`` for a failed run."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    pending, active, results = list(runs), {}, {}
    while pending or active:
        while pending and len(active) < args.jobs:
            method, seed = pending.pop(0)
            run_dir = _run_dir(METHODS[method][0], seed, out)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "result.json").unlink(missing_ok=True)
            command = [sys.executable, __file__, *sys.argv[1:], "--worker", method, str(seed)]
            log = (run_dir / "log.txt").open("w", encoding="utf-8")
            active[(method, seed)] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        time.sleep(1.0)
        for key, (process, log) in list(active.items()):
            if process.poll() is None:
                continue
            log.close()
            del active[key]
            run_dir = _run_dir(METHODS[key[0]][0], key[1], out)
            if process.returncode == 0 and (run_dir / "result.json").is_file():
                results[key] = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
            else:
                results[key] = {"error": f"exit code {process.returncode}, log {run_dir / 'log.txt'}"}
                print(f"{key[0]} seed {key[1]} failed: {results[key]['error']}", flush=True)
    return results


def plot_learning_curves(results: dict[str, list[dict[str, Any]]], path: Path, schedule: str) -> None:
    """Validation Dice (thresholded, the validator's key metric) against the training iteration, one line per run,
    one colour per method; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic_write import atomic_path

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (method, runs_) in enumerate(results.items()):
        for run_index, run in enumerate(runs_):
            points = run.get("validation_curve") or []
            if points:
                iterations, dice = zip(*points)
                label = method if run_index == 0 else None
                axis.plot(iterations, dice, marker=".", color=f"C{index}", label=label)
    axis.set_xlabel("training iteration")
    axis.set_ylabel("validation Dice (thresholded)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    axis.set_title("\n".join(schedule[i : i + 100] for i in range(0, len(schedule), 100)), fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({statistics.stdev(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2000, help="P (= A) training images (paper: all 59500)")
    parser.add_argument("--num-test", type=int, default=None, help="test images (paper: all 10000)")
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch (default: one pass)")
    parser.add_argument("--width", type=float, default=0.25, help="network width multiplier (paper: 1)")
    parser.add_argument("--batch-size", type=int, default=10, help="P and A images per iteration each (paper: 20)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "translation_mnist")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, as subprocesses (1: in this process)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds of training per run (from building its workflow) after which it stops early, validates and is "
        "evaluated; the table gives the iterations each method reached",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="config overrides for every run, e.g. --set 'segment_norm=\"adain\"' (stated in the printed schedule)",
    )
    parser.add_argument("--worker", nargs=2, default=None, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker is not None:  # one run of a --jobs parent
        seed = int(args.worker[1])
        result = run_one(METHODS[args.worker[0]][0], seed, args.out, args)
        run_dir = _run_dir(METHODS[args.worker[0]][0], seed, args.out)
        (run_dir / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        return 0
    start = time.perf_counter()
    runs = [(method, seed) for method in args.methods for seed in args.seeds]
    data_seconds = None
    if args.jobs > 1:
        prepare_data(args.out, args)
        data_seconds = time.perf_counter() - start
        by_run = run_parallel(runs, args.out, args)
    else:
        by_run = {(m, s): run_one(METHODS[m][0], s, args.out, args) for m, s in runs}
    wall = time.perf_counter() - start
    results = {m: [by_run[(m, s)] for s in args.seeds if "error" not in by_run[(m, s)]] for m in args.methods}
    failed = [f"{m} seed {s}: {r['error']}" for (m, s), r in by_run.items() if "error" in r]
    devices = sorted({r["device"] for runs_ in results.values() for r in runs_})
    schedule = (
        f"schedule: {args.num_train} P + {args.num_train} A training images, {args.max_epochs} epochs"
        f"{'' if args.epoch_length is None else f' of {args.epoch_length} iterations'}, batch {args.batch_size} + "
        f"{args.batch_size}, width x{args.width}, seeds {args.seeds}, test images "
        f"{'all 10000' if args.num_test is None else args.num_test}; {args.jobs} run(s) at a time on "
        f"{', '.join(devices) or '-'}; wall time {wall:.0f} s"
        f"{'' if data_seconds is None else f' (data set ready after {data_seconds:.0f} s)'}"
        f"{'' if not args.set else '; overrides ' + ', '.join(args.set)}"
    )
    lines = [
        "Cluttered MNIST 48x48 simple, 1% labels (only 9s). Soft Dice accumulated over all P test images (as the "
        "paper) and mean per-image Dice of the thresholded prediction; mean (std) over seeds.",
        "",
        "| method | soft Dice (accumulated) | Dice (per image, thresholded) | iterations | s / iteration "
        "| train s / run | paper (soft Dice) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs_ in results.items():
        paper = METHODS[method][1]
        paper_cell = "-" if paper is None else f"{paper:.2f}"
        if not runs_:
            lines.append(f"| {method} | failed | failed | - | - | - | {paper_cell} |")
            continue
        lines.append(
            f"| {method} | {_fmt([r['soft_dice_accumulated'] for r in runs_])} | "
            f"{_fmt([r['dice_per_image'] for r in runs_])} | {statistics.mean(r['iterations'] for r in runs_):.0f} | "
            f"{statistics.median(r['seconds_per_iteration'] for r in runs_):.3f} | "
            f"{statistics.mean(r['train_seconds'] for r in runs_):.0f} | {paper_cell} |"
        )
    lines += ["", f"Reduced {schedule}; the paper's values come from the full schedule on a GPU."]
    if args.jobs > 1:
        lines.append("s / iteration: median per run (then over seeds) while the runs shared the device.")
    stopped = sorted({m for m, runs_ in results.items() for r in runs_ if r.get("stopped_by_time_limit")})
    if args.time_limit is not None:
        lines.append(
            f"Time limit {args.time_limit:.0f} s of training per run; stopped by it (iterations = mean reached): "
            f"{', '.join(stopped) or 'none'}."
        )
    if failed:
        lines += ["", "Failed runs: " + "; ".join(failed)]
    text = "\n".join(lines)
    print(text)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")
    plot_learning_curves(results, args.out / "learning_curves.png", schedule)
    (args.out / "results.json").write_text(
        json.dumps({"schedule": schedule, "results": results, "failed": failed}, indent=1), encoding="utf-8"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
