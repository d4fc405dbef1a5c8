"""Command line of the label-efficiency benchmark (``python benchmarks/label_efficiency.py``).

# your own data: any MSD-layout folder (dataset.json; 2D images or 3D volumes), your label budgets in cases
python benchmarks/label_efficiency.py --dataset-dir DIR --labelled 4 8 [--arms ...] [--seeds ...] [--steps N]
    [--quick] [--out OUT]          # -> OUT/<name>/: results, label_efficiency.md, .png, recommendation.md

# a built-in task (rows go to the committed results/<task>/runs.jsonl.gz)
python benchmarks/label_efficiency.py --task cluttered_mnist [--labelled 20] [--arms ...] [--seeds ...]

# each method's own paper schedule (common.benchmark.budgets) for one method's arms, its control and the U-Net; rows
# go to results/<task>_paper_<method>/; --dry-run prints the plan with the estimated hours and runs nothing
python benchmarks/label_efficiency.py --task mni_tissue --budget paper --arms unimatch unimatch_control unet --dry-run

# regenerate docs/label_efficiency.md's tables and plots from the committed results alone
python benchmarks/label_efficiency.py --report
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from common.atomic_write import write_text_atomic

from .arms import ARMS, not_applicable
from .budgets import PaperSchedule, paper_plan, plan_lines, schedule_for_arms
from .dataset import DatasetInfo, read_dataset
from .protocol import SEEDS, Budget
from .results import read_rows, results_path
from .runner import REPO, plan, run_specs
from .tasks import TASKS

DOCS_PAGE = REPO / "docs" / "label_efficiency.md"
RESULTS_DIR = REPO / "results"
DEFAULT_ARMS = tuple(ARMS)


def user_budget(data: DatasetInfo, quick: bool, steps: int | None, image_size: int | None) -> Budget:
    """The budget on a user's folder: 600 steps in 6 epochs of batch 8 (quick: 8 steps in 2), square patches of the
    smaller in-plane side of the first case, rounded down to a multiple of 16, at most 128 (quick: 32)."""
    from common.data import load_array

    if image_size is None:
        shape = load_array(str(data.pool[0]["image"])).shape[1:3]
        image_size = max(16, min(min(shape), 32 if quick else 128) // 16 * 16)
    epochs = 2 if quick else 6
    total = steps if steps is not None else (8 if quick else 600)
    return Budget(
        "quick" if quick else "default", max(total // epochs, 1) * epochs, epochs, 4 if quick else 8, image_size
    )


def _task_info(name: str, title: str, data: DatasetInfo, budget: Budget, na: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "not_applicable": na,
        "budget": budget.as_row(),
        "dataset": {
            "classes": list(data.class_names),
            "channels": data.num_channels,
            "spatial_dims": data.spatial_dims,
            "pool_cases": len(data.pool_cases),
            "test_cases": len(data.test),
            "test_given": data.test_given,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dataset-dir", help="an MSD-layout folder (dataset.json)")
    where.add_argument("--task", choices=list(TASKS), help="a built-in task")
    where.add_argument("--report", action="store_true", help="regenerate the docs from the committed results")
    parser.add_argument("--labelled", type=int, nargs="+", help="labelled cases per run (built-in: the task's)")
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help=f"from {list(ARMS)}")
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 3 4 (quick: 0 1)")
    parser.add_argument("--steps", type=int, help="segmenter steps of every trained run (default: the task's)")
    parser.add_argument("--image-size", type=int, help="training patch side (default: from the data)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of minutes: tiny budget, not a result")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    parser.add_argument("--out", default=str(REPO / "outputs" / "label_efficiency"), help="output folder")
    parser.add_argument("--results-dir", help="where the results files go (built-in tasks: results/)")
    parser.add_argument("--force", action="store_true", help="rerun the runs already finished")
    parser.add_argument("--keep-runs", action="store_true", help="keep each finished run's folder")
    parser.add_argument("--timeout", type=float, help="seconds per run before it counts as failed")
    parser.add_argument(
        "--budget",
        choices=("default", "paper"),
        default="default",
        help="default: the task's equal budget; paper: the paper schedule of the one method named in --arms, given to "
        "every trained arm (results name <task>_paper_<method>)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and estimated hours, run nothing")
    args = parser.parse_args(argv)
    if args.budget == "paper" and (args.quick or args.steps is not None):
        parser.error("--budget paper sets the papers' schedules: it takes neither --quick nor --steps")

    if args.report:
        from .report import regenerate

        pages = sorted(REPO.glob("bundles/*/docs/README.md"))
        for path in regenerate(RESULTS_DIR, DOCS_PAGE, DOCS_PAGE.parent, bundle_pages=pages):
            print(f"written: {path}")
        return 0

    out = Path(args.out).resolve()
    if args.task:
        builtin = TASKS[args.task]
        data = read_dataset(builtin.prepare(out / "data" / ("quick" if args.quick else "full"), args.quick))
        name, title = builtin.name + ("_quick" if args.quick else ""), builtin.title
        budget = builtin.quick_budget if args.quick else builtin.budget
        if args.steps is not None:
            budget = Budget(budget.name, args.steps, budget.epochs, budget.batch_size, budget.image_size)
        labelled = args.labelled or list(builtin.labelled)
        na = not_applicable(data, builtin.not_applicable)
        many_objects = builtin.many_objects
        eval_batch_size = builtin.eval_batch_size
        results_dir = Path(args.results_dir) if args.results_dir else (out / "results" if args.quick else RESULTS_DIR)
    else:
        data = read_dataset(args.dataset_dir)
        name, title = data.name, f"{data.name} ({args.dataset_dir})"
        budget = user_budget(data, args.quick, args.steps, args.image_size)
        if not args.labelled:
            parser.error("--labelled is required with --dataset-dir (labelled cases per run, e.g. --labelled 4 8)")
        labelled = args.labelled
        na = not_applicable(data)
        many_objects = True
        eval_batch_size = 1  # a user's images may differ in shape
        results_dir = Path(args.results_dir) if args.results_dir else out / "results"
    too_many = [k for k in labelled if k > len(data.pool_cases) or k < 1]
    if too_many:
        parser.error(f"--labelled {too_many}: the pool of {data.root} holds {len(data.pool_cases)} cases (1 or more)")
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else list(SEEDS))
    for key, why in na.items():
        if key in args.arms:
            print(f"n/a {key}: {why}")
    reference_file = results_path(results_dir, name)  # the default budget's rows: seconds per step for the estimate
    schedule: PaperSchedule | None = None
    if args.budget == "paper":
        try:
            schedule = schedule_for_arms([a for a in args.arms if a not in na])
        except ValueError as e:
            parser.error(str(e))
        name, title = f"{name}_paper_{schedule.method}", f"{title}; {schedule.method}'s paper schedule"
    task_dir = out / name
    if schedule is None:
        specs = plan(
            data, name, budget, args.arms, labelled, seeds, task_dir / "runs", na, many_objects, eval_batch_size
        )
    else:
        specs, budgets = paper_plan(
            data,
            name,
            schedule,
            budget,
            args.arms,
            labelled,
            seeds,
            task_dir / "runs",
            na,
            many_objects,
            eval_batch_size,
        )
        budget = budgets[min(labelled)]
    if not specs:
        raise SystemExit(f"nothing to run: every arm of {args.arms} is n/a on {data.root}")
    results_file = results_path(results_dir, name)
    if schedule is not None or args.dry_run:
        reference_rows = read_rows(reference_file) if reference_file.is_file() else []
        for line in plan_lines(specs, reference_rows, str(reference_file), str(results_file), schedule, args.jobs):
            print(line, flush=True)
    if args.dry_run:
        return 0
    info = _task_info(name, title, data, budget, na)
    if schedule is not None:
        info.update(schedule=schedule.as_row(), budget_per_labelled={str(k): b.as_row() for k, b in budgets.items()})
    write_text_atomic(results_file.parent / "task.json", json.dumps(info, indent=1) + "\n")
    command = "python benchmarks/label_efficiency.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    diagnose = bool(args.task)  # built-in tasks: the benchmark holds every pool label (common.benchmark.diagnostics)
    rows = run_specs(specs, data, results_file, command, args.jobs, args.timeout, args.force, args.keep_runs, diagnose)
    print(f"this invocation: {time.perf_counter() - start:.0f} s", flush=True)
    failed = [r["id"] for r in rows if r["status"] != "ok"]
    write_outputs(name, title, rows, results_file.parent / "task.json", task_dir, labelled, str(data.root))
    if failed:
        print(f"FAILED runs: {failed}")
    return 1 if failed else 0


def write_outputs(
    name: str, title: str, rows: list[dict], task_json: Path, task_dir: Path, labelled: list[int], dataset_dir: str
) -> None:
    """``task_dir``: ``label_efficiency.md`` (tables), ``label_efficiency.png`` (plot), ``recommendation.md``."""
    from .recommend import recommendation_markdown
    from .report import plot_task, task_markdown

    info = json.loads(task_json.read_text(encoding="utf-8"))
    task_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(task_dir / "label_efficiency.md", task_markdown(name, title, rows, task_info=info))
    plot_task(name, rows, task_dir / "label_efficiency.png")
    trained = {r["labelled"] for r in rows if r["status"] == "ok" and r["role"] in ("method", "reference")}
    parts = [recommendation_markdown(name, rows, k, dataset_dir) for k in sorted(labelled) if k in trained]
    if not parts:
        parts = ["No method or U-Net run with labels finished, so there is nothing to recommend at these budgets."]
    write_text_atomic(task_dir / "recommendation.md", "\n\n".join(parts) + "\n")
    for path in ("label_efficiency.md", "label_efficiency.png", "recommendation.md"):
        print(f"written: {task_dir / path}")
