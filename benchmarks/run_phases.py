"""Where a whole benchmark run's time goes: start-up, data preparation, training, validation and test evaluation of a
real bundle run, against the bare arithmetic of its training steps.

    python benchmarks/run_phases.py [--task cluttered_mnist] [--arms unet ...] [--labelled 20] [--seed 0]
        [--bare-steps 20] [--out /tmp/run_phases] [--json FILE] [--set JSON] [--quick]
    python benchmarks/run_phases.py --table FILE [FILE ...]

Each arm runs as ``benchmarks/label_efficiency.py`` runs it (protocol v2: the task's MSD folder, prepared once under
``<out>/data``, the run's datalists and overrides from :func:`common.benchmark.runner.plan`, the bundle's own configs,
transforms, datasets and loaders, one torch thread, a fresh process, the training and test workflows of
:mod:`common.benchmark.runner`), but in a child that marks the boundaries of its phases (``translation`` too, an arm
of protocol v2 since the benchmark reads target-absent images; before, it ran here as
``benchmarks/experiments/label_efficiency_v1.py`` runs it). The phases:

* **start-up**: interpreter start, imports, reading and parsing the configs (``load_workflow`` + ``initialize``);
* **data**: the datalists (``prepare_datalists``) and the caches of the datasets (``CacheDataset._fill_cache``);
* **build**: the rest of building the trainer and evaluator (networks, optimisers, losses, loaders), in the order
  the run itself builds them (so that its random draws and its Dice are those of ``label_efficiency_v1.py``'s run);
* **training**: the runs of the segmenter's trainer (``train#trainer``; MIPR runs it once per round) less
  validation, split into fetching batches (the loaders and their random transforms), the iteration function
  (``prepare_batch``, forward, backward, optimiser steps, the engine's own work) and the rest (event handlers:
  checkpoints, logging);
* **other stages**: the rest of the training workflow (AF-Seg's stages 1 and 2, run while its trainer is built on
  their outputs; MIPR's generators and pseudo-labels);
* **validation**: the evaluator's runs;
* **test**: the evaluation workflow of ``evaluate.json`` (config parsing and run) on the test images.

Afterwards, in the same process, the **bare arithmetic** of the same steps: ``--bare-steps`` batches drawn from the
bundle's own training loaders are held in memory as plain tensors and the bare loop of
``benchmarks/engine_overhead.py`` (the trainer's networks, optimisers and losses, without the engine) runs over them
(after 2 untimed steps); its median time per step times the segmenter's steps is the training arithmetic. Printed: one
table row per arm with wall / CPU seconds of each phase, and the ratios training / bare arithmetic, iteration
function / bare arithmetic and whole run / bare arithmetic, each as wall / CPU (CPU seconds are not lengthened by
other processes on a shared machine). ``--set JSON`` adds config overrides to every arm (``'{"cpu_amp": true}'``);
``--table FILE ...`` prints the table of earlier ``--json`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

# arm -> (config ids of the trainer's loaders by bare-loop batch name, bare loop name in engine_overhead)
_SUPERVISED = ({"data_loader": "train#trainer#train_data_loader"}, "supervised_bare")
_ADVERSARIAL = (
    {"data_loader": "train#trainer#train_data_loader", "unlabeled_data_loader": "train#trainer#unlabeled_data_loader"},
    "adversarial_bare",
)
_UNIMATCH = ({"labeled_data_loader": "train#dataloader", "data_loader": "train#unlabeled_dataloader"}, "unimatch_bare")
BARE: dict[str, tuple[dict[str, str], str]] = {
    "unet": _SUPERVISED,
    "adversarial": _ADVERSARIAL,
    "unimatch": _UNIMATCH,
    "unimatch_control": _UNIMATCH,
    "mipr": _SUPERVISED,  # the segmenter of every round; the generators are "other stages"
    "mipr_control": _SUPERVISED,
    "translation": (
        {"data_loader": "train#trainer#train_data_loader", "absent_data_loader": "train#trainer#absent_data_loader"},
        "translation_bare",
    ),
    "acwe_unsup": ({"data_loader": "train#trainer#train_data_loader"}, "acwe_bare"),
    "af_seg": ({"data_loader": "train#trainer#train_data_loader"}, "af_seg_bare"),
}


def _now() -> tuple[float, float]:
    """Wall clock (``time.time``: comparable across processes) and this process's CPU seconds (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.time(), usage.ru_utime + usage.ru_stime


class Clock:
    """Phase marks of one process: ``mark(name)`` ends the phase ``name`` begun at the previous mark."""

    def __init__(self, start: tuple[float, float]) -> None:
        self.last = start
        self.phases: dict[str, list[float]] = {}

    def mark(self, name: str) -> None:
        now = _now()
        wall, cpu = self.phases.get(name, [0.0, 0.0])
        self.phases[name] = [wall + now[0] - self.last[0], cpu + now[1] - self.last[1]]
        self.last = now


class Span:
    """Wall and CPU seconds summed over calls of ``begin`` / ``end`` (Ignite event handlers or a wrapped call); calls
    nested in a running one, or made while ``paused``, are not counted again."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.paused = 0
        self._t: tuple[float, float] | None = None

    def begin(self, *_: Any) -> None:
        if self._t is None and not self.paused:
            self._t = (time.perf_counter(), time.process_time())

    def end(self, *_: Any) -> None:
        if self._t is not None:
            self.wall += time.perf_counter() - self._t[0]
            self.cpu += time.process_time() - self._t[1]
            self._t = None

    def wrap(self, fn: Any, pause: Span | None = None) -> Any:
        """``fn`` timed by this span; ``pause``: a span that does not count while ``fn`` runs."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = self._t is not None
            if pause is not None:
                pause.paused += 1
            self.begin()
            try:
                return fn(*args, **kwargs)
            finally:
                if not outer:
                    self.end()
                if pause is not None:
                    pause.paused -= 1

        return timed


def _plain(batch: Any) -> Any:
    """A batch with every tensor as a plain ``torch.Tensor`` (no MetaTensor) and no metadata entries."""
    import torch

    if isinstance(batch, dict):
        return {k: _plain(v) for k, v in batch.items() if not k.endswith("_meta_dict") and k != "_transforms"}
    if isinstance(batch, torch.Tensor):
        return batch.as_subclass(torch.Tensor).clone() if type(batch) is not torch.Tensor else batch
    return batch


def bare_arithmetic(workflow: Any, arm: str, steps: int) -> dict[str, Any]:
    """Median seconds (wall, CPU) per step of the bare loop of ``engine_overhead`` over ``steps`` batches drawn from
    the trainer's own loaders, after 2 untimed steps."""
    import torch

    from benchmarks import engine_overhead

    loaders, bare_name = BARE[arm]
    bare = getattr(engine_overhead, bare_name)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    batches: dict[str, list[dict[str, Any]]] = {}
    for attr, config_id in loaders.items():
        loader, out = workflow.parser.get_parsed_content(config_id), []
        while len(out) < steps + 2:
            for b in loader:
                out.append(_plain(b))
                if len(out) == steps + 2:
                    break
        batches[attr] = out
    if "labelled" in batches["data_loader"][0]:  # the translation loader's per-image flag as the engine reads it
        for b in batches["data_loader"]:
            b["labelled"] = torch.as_tensor(b["labelled"]).float()
    ctx = {"seed": 0}
    bare(trainer, {k: v[:2] for k, v in batches.items()}, ctx)
    walls, cpus = [], []
    for i in range(2, steps + 2):
        one = {k: v[i : i + 1] for k, v in batches.items()}
        w, c = time.perf_counter(), time.process_time()
        bare(trainer, one, ctx)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"bare_step_s": statistics.median(walls), "bare_step_cpu_s": statistics.median(cpus), "bare_steps": steps}


def run_child(spec: dict[str, Any], start: tuple[float, float], bare_steps: int) -> dict[str, Any]:
    """One arm's run with its phases marked (``start``: the parent's launch time and 0 CPU seconds)."""
    import logging

    import torch
    from ignite.engine import Events
    from monai.data import CacheDataset

    import common.classical.coarse_masks
    import common.data
    import common.priors.deep_priors
    from common.benchmark import runner
    from common.bundle import load_workflow

    STAGES = [
        (common.classical.coarse_masks, "write_coarse_masks"),
        (common.priors.deep_priors, "write_clean_backgrounds"),
    ]

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    clock = Clock(start)
    v1 = spec.get("protocol") != runner.PROTOCOL
    overrides = spec["overrides"] if v1 else runner.run_overrides(spec)
    workflow = runner.train_workflow(spec, overrides)
    workflow.initialize()
    clock.mark("start-up")
    parser = workflow.parser
    data, stages = Span(), Span()  # built in the run's own order (the random draws of initialisation follow it)
    wrapped = [(common.data, "prepare_datalists", data, None), (CacheDataset, "_fill_cache", data, None)]
    wrapped += [(module, name, stages, data) for module, name in STAGES]  # AF-Seg's trainer is built on them
    originals = [getattr(owner, name) for owner, name, _, _ in wrapped]
    for owner, name, span, pause in wrapped:
        setattr(owner, name, span.wrap(getattr(owner, name), pause))
    try:
        trainer = parser.get_parsed_content("train#trainer")
        evaluator = parser.get_parsed_content("validate#evaluator") if "validate#evaluator" in parser else None
    finally:
        for (owner, name, _, _), original in zip(wrapped, originals):
            setattr(owner, name, original)
    clock.mark("build")
    clock.phases["data"] = [data.wall, data.cpu]
    build = clock.phases["build"]
    clock.phases["build"] = [build[0] - data.wall - stages.wall, build[1] - data.cpu - stages.cpu]
    batch, step, validation, training = Span(), Span(), Span(), Span()
    iterations = [0]
    trainer.add_event_handler(Events.STARTED, training.begin)
    trainer.add_event_handler(Events.COMPLETED, training.end)
    trainer.add_event_handler(Events.GET_BATCH_STARTED, batch.begin)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, batch.end)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: iterations.__setitem__(0, iterations[0] + 1))
    trainer._process_function = step.wrap(trainer._process_function)
    if evaluator is not None:
        evaluator.add_event_handler(Events.STARTED, validation.begin)
        evaluator.add_event_handler(Events.COMPLETED, validation.end)
    workflow.run()
    workflow.finalize()
    clock.mark("training")
    wall, cpu = clock.phases.pop("training")
    clock.phases["training"] = [training.wall - validation.wall, training.cpu - validation.cpu]
    clock.phases["validation"] = [validation.wall, validation.cpu]
    clock.phases["other stages"] = [wall - training.wall + stages.wall, cpu - training.cpu + stages.cpu]
    parts = {
        "batches": [batch.wall, batch.cpu],
        "iterations": [step.wall, step.cpu],
        "handlers": [
            training.wall - validation.wall - batch.wall - step.wall,
            training.cpu - validation.cpu - batch.cpu - step.cpu,
        ],
    }
    steps = iterations[0]
    clock.last = _now()
    bare = bare_arithmetic(workflow, spec["arm"], bare_steps) if spec["arm"] in BARE else {}
    del workflow, trainer, evaluator, parser
    clock.last = _now()
    if v1:
        eval_dir = Path(spec["run_dir"]) / "eval"
        configs = spec["eval_configs"]
        test = load_workflow(spec["bundle"], configs, "eval", **overrides, eval_dir=str(eval_dir))
    else:
        test = runner.evaluation_workflow(spec, overrides)
    test.initialize()
    clock.mark("test start-up")
    test.run()
    test.finalize()
    clock.mark("test")
    if v1:
        from common.metrics import read_metrics

        dice = read_metrics(Path(spec["run_dir"]) / "eval").mean()
    else:
        dice = runner.run_scores(spec)["dice_mean"]
    return {"phases": clock.phases, "training_parts": parts, "steps": steps, "dice": dice, **bare}


def run_parent(spec: dict[str, Any], bare_steps: int, data: Any = None) -> dict[str, Any]:
    """One arm in a fresh child process with one thread; returns its phases. ``data``: the task's
    ``DatasetInfo`` for a protocol-v2 spec (its datalists are written first), ``None`` for a v1 spec."""
    import shutil

    from common.benchmark.runner import prepare_run_dir

    run_dir = Path(spec["run_dir"])
    if data is not None:
        prepare_run_dir(spec, data)
        spec = {k: v for k, v in spec.items() if not k.startswith("_")}
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
    result = run_dir / "phases.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    start = time.time()
    command = [sys.executable, __file__, "--one", json.dumps(spec), "--start", repr(start), "--result", str(result)]
    command += ["--bare-steps", str(bare_steps)]
    with open(run_dir / "log.txt", "w", encoding="utf-8") as log:
        subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    out = json.loads(result.read_text(encoding="utf-8"))
    out["wall_s"] = time.time() - start
    return out


PHASES = ("start-up", "data", "build", "training", "other stages", "validation", "test start-up", "test")


def table(rows: list[dict[str, Any]]) -> str:
    """The phase table (markdown) of ``rows`` (``arm`` + a child's result): wall / CPU seconds per phase; ratios to
    the bare arithmetic as wall / CPU (CPU time is not lengthened by other processes taking the cores)."""
    head = ["arm", "steps", "test Dice"] + [f"{p} s" for p in PHASES]
    head += ["training parts: batches / iterations / handlers s", "bare step ms", "bare arithmetic s"]
    head += ["training / bare", "iterations / bare", "whole run s", "whole / bare"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ph, parts = r["phases"], r["training_parts"]
        cells = [r["arm"], str(r["steps"]), f"{r['dice']:.3f}"]
        cells += [f"{ph[p][0]:.1f} / {ph[p][1]:.1f}" if p in ph else "-" for p in PHASES]
        cells.append(" / ".join(f"{parts[k][0]:.1f}" for k in ("batches", "iterations", "handlers")))
        total = [sum(v[0] for v in ph.values()), sum(v[1] for v in ph.values())]
        if "bare_step_s" in r:
            bare = [r["bare_step_s"] * r["steps"], r["bare_step_cpu_s"] * r["steps"]]
            cells += [f"{1e3 * r['bare_step_s']:.1f}", f"{bare[0]:.1f} / {bare[1]:.1f}"]
            for part in (ph["training"], parts["iterations"]):
                cells.append(f"{part[0] / bare[0]:.2f} / {part[1] / bare[1]:.2f}")
            cells += [f"{total[0]:.1f} / {total[1]:.1f}", f"{total[0] / bare[0]:.2f} / {total[1] / bare[1]:.2f}"]
        else:
            cells += ["-", "-", "-", "-", f"{total[0]:.1f} / {total[1]:.1f}", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, one torch thread"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cluttered_mnist")
    parser.add_argument("--arms", nargs="+", default=["unet"])
    parser.add_argument("--labelled", type=int, default=None, help="labelled cases (default: the task's first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bare-steps", type=int, default=20, help="timed steps of the bare loop")
    parser.add_argument("--quick", action="store_true", help="label_efficiency's reduced settings (a smoke run)")
    parser.add_argument("--out", default="/tmp/run_phases", help="data and run folders")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument(
        "--set", default="{}", help="extra config overrides of every arm, JSON (e.g. '{\"cpu_amp\": true}')"
    )
    parser.add_argument("--table", nargs="+", default=None, help="print the table of these --json files and exit")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # the child
        result = run_child(json.loads(args.one), (args.start, 0.0), args.bare_steps)
        Path(args.result).write_text(json.dumps(result), encoding="utf-8")
        return 0

    if args.table:
        print(table([r for f in args.table for r in json.loads(Path(f).read_text(encoding="utf-8"))]))
        return 0
    from common.benchmark.arms import ARMS, not_applicable
    from common.benchmark.dataset import read_dataset
    from common.benchmark.runner import plan
    from common.benchmark.tasks import TASKS

    out = Path(args.out).resolve()
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms {unknown}: choose from {list(ARMS)}")
    builtin = TASKS[args.task]
    budget = builtin.quick_budget if args.quick else builtin.budget
    labelled = int(args.labelled) if args.labelled else builtin.labelled[0]
    specs: list[tuple[dict[str, Any], Any]] = []
    v2_arms = [a for a in args.arms if a in ARMS]
    if v2_arms:
        data = read_dataset(builtin.prepare(out / "data" / ("quick" if args.quick else "full"), args.quick))
        na = not_applicable(data, builtin.not_applicable)
        for key in v2_arms:
            if key in na:
                parser.error(f"{key} does not apply to {args.task}: {na[key]}")
        runs = out / builtin.name / "runs"
        found = plan(
            data, builtin.name, budget, v2_arms, [labelled], [args.seed], runs, na, builtin.many_objects,
            builtin.eval_batch_size,
        )  # fmt: skip
        specs += [(s, data) for s in found]
    rows = []
    for spec, data in specs:
        spec["overrides"].update(json.loads(args.set))
        print(f"== {spec['id']}", file=sys.stderr, flush=True)
        rows.append({"arm": spec["arm"], **run_parent(spec, args.bare_steps, data)})
    print(f"{machine()}; task {args.task}, labelled {labelled}, seed {args.seed}; wall / CPU seconds\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
