"""Test evaluation one image at a time against in batches: the same trained run evaluated at both, interleaved.

    python benchmarks/eval_batch.py [--task cluttered_mnist] [--arms unet unimatch ...] [--seed 0] [--batch 50]
        [--repeats 2] [--out /tmp/eval_batch]

Each arm is trained once as ``benchmarks/label_efficiency.py`` trains it (protocol v2, its run kept under ``--out``,
the row in ``<out>/runs.jsonl.gz``, not in ``results/``); then, in this process with one torch thread, its
``evaluate.json`` workflow (:func:`common.benchmark.runner.evaluation_workflow`) runs on the test images at batch 1
and at ``--batch``, alternately, ``--repeats`` times each. Printed per arm: wall / CPU seconds of each evaluation
(config parsing, caching and the evaluator's run) and whether every test image's Dice is the same at both sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository root, for the common package
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cluttered_mnist")
    parser.add_argument("--arms", nargs="+", default=["unet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50, help="the batched evaluation's images per batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the task's quick budget (a smoke run)")
    parser.add_argument("--out", default="/tmp/eval_batch")
    args = parser.parse_args(argv)

    import torch

    from common.benchmark.arms import not_applicable
    from common.benchmark.dataset import read_dataset
    from common.benchmark.runner import evaluation_workflow, plan, run_overrides, run_scores, run_specs
    from common.benchmark.tasks import TASKS

    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    task = TASKS[args.task]
    data = read_dataset(task.prepare(out / "data", args.quick))
    budget = task.quick_budget if args.quick else task.budget
    na = not_applicable(data, task.not_applicable)
    specs = plan(
        data, task.name, budget, args.arms, [task.labelled[0]], [args.seed], out / "runs", na, task.many_objects
    )
    rows = {r["id"]: r for r in run_specs(specs, data, out / "runs.jsonl.gz", "eval_batch", keep=True)}
    print(f"task {task.name}, seed {args.seed}; test evaluation, wall / CPU seconds (median of {args.repeats})\n")
    print(f"| arm | test images | batch 1 | batch {args.batch} | CPU ratio | per-image Dice identical |")
    print("|---|---|---|---|---|---|")
    for spec in specs:
        if rows[spec["id"]]["status"] != "ok" or spec["bundle"] is None:
            continue
        spec = {k: v for k, v in spec.items() if not k.startswith("_")}
        times: dict[int, list[tuple[float, float]]] = {1: [], args.batch: []}
        dice: dict[int, dict] = {}
        for _ in range(args.repeats):
            for size in (1, args.batch):
                wall, cpu = time.perf_counter(), time.process_time()
                workflow = evaluation_workflow({**spec, "eval_batch_size": size}, run_overrides(spec))
                workflow.initialize()
                workflow.run()
                workflow.finalize()
                times[size].append((time.perf_counter() - wall, time.process_time() - cpu))
                dice[size] = run_scores(spec)["dice_per_image"]
        cells = []
        for size in (1, args.batch):
            wall_s, cpu_s = (statistics.median(t[i] for t in times[size]) for i in (0, 1))
            cells.append(f"{wall_s:.1f} / {cpu_s:.1f}")
        ratio = statistics.median(t[1] for t in times[1]) / statistics.median(t[1] for t in times[args.batch])
        same = dice[1] == dice[args.batch]
        print(f"| {spec['arm']} | {len(dice[1])} | {cells[0]} | {cells[1]} | {ratio:.2f} | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
