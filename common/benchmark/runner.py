"""Plan and run the benchmark's runs, each in its own process with one torch thread, and record their rows.

A run is a spec (arm, labelled cases, seed, overrides, folders): :func:`plan` makes them, :func:`run_specs` runs
those not yet in the results file (same id and settings hash), ``jobs`` at a time, appending each row as it
finishes (:mod:`common.benchmark.results`). The child (``python -m common.benchmark.runner --one SPEC``) trains the
bundle on the run's training datalist, then evaluates the last network on the test cases. On 3D data every row is
scored per test volume (:mod:`common.benchmark.volumes`): the bundles evaluate slice by slice, and their slices are
restacked into volumes, as are those of the classical arms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.atomic_write import write_text_atomic

from .arms import ARMS, RunContext, bundle_version
from .dataset import DatasetInfo
from .protocol import PROTOCOL, Budget, labelled_subset, write_run_datalists, write_truth_datalist
from .results import append_rows, read_rows

REPO = Path(__file__).resolve().parents[2]
EVALUATION_RUN = ["$@validate#evaluator.run()"]  # the benchmark's evaluation: the test images' scores only


def spec_hash(spec: dict[str, Any]) -> str:
    """What identifies a run's settings: 12 hex digits of the SHA-256 of its settings as sorted JSON."""
    keys = ("arm", "labelled", "seed", "labelled_cases", "budget", "overrides", "train_configs", "protocol")
    return hashlib.sha256(json.dumps({k: spec[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:12]


def _relative(overrides: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The overrides with the run's own paths replaced by placeholders (so the hash does not depend on folders)."""
    return {k: (v.replace(str(run_dir), "<run>") if isinstance(v, str) else v) for k, v in overrides.items()}


def plan(
    data: DatasetInfo,
    task: str,
    budget: Budget,
    arms: Sequence[str],
    labelled: Sequence[int],
    seeds: Sequence[int],
    runs_dir: Path,
    not_applicable: dict[str, str],
    many_objects: bool = True,
    eval_batch_size: int = 1,
) -> list[dict[str, Any]]:
    """The run specs (arm x labelled amount x seed; label-free and classical arms at 0); a method and its control
    are planned with the same segmenter steps (``ValueError`` otherwise). ``eval_batch_size``: test images per
    evaluation batch (images of one shape only; it is not part of a run's settings hash, as it changes no
    prediction)."""
    specs = []
    for key in arms:
        if key not in ARMS:
            raise ValueError(f"unknown arm {key!r}; choose from {list(ARMS)}")
        arm = ARMS[key]
        if key in not_applicable:
            continue
        for k in labelled if arm.labels else [0]:
            for seed in seeds:
                run_id = f"{key}@{k}#s{seed}"
                run_dir = runs_dir / run_id.replace("@", "_").replace("#", "_")
                cases = labelled_subset(data, k, seed)
                context = RunContext(data, budget, k, seed, str(run_dir / "datalist_train.json"), many_objects)
                overrides = arm.overrides(context) if arm.overrides else {}
                steps = arm.planned_steps(context)
                if arm.control:
                    theirs = ARMS[arm.control].planned_steps(context)
                    if theirs != steps:
                        raise ValueError(f"{key} plans {steps} segmenter steps, its control {arm.control} {theirs}.")
                spec = {
                    "id": run_id,
                    "task": task,
                    "arm": key,
                    "label": arm.label,
                    "role": arm.role,
                    "control": arm.control,
                    "bundle": arm.bundle,
                    "train_configs": list(arm.configs),
                    "labelled": k,
                    "seed": seed,
                    "labelled_cases": [data.case_id(c) for c in cases],
                    "budget": budget.as_row(),
                    "protocol": PROTOCOL,
                    "overrides": _relative(overrides, run_dir),
                    "planned_steps": steps,
                    "num_classes": data.num_classes,
                    "class_names": list(data.class_names),
                    "num_channels": data.num_channels,
                    "spatial_dims": data.spatial_dims,
                    "use_unlabelled": arm.use_unlabelled,
                    "dataset_dir": str(data.root),
                }
                if arm.use_absent:  # only here, so that the other arms' specs and rows stay as they were
                    spec["use_absent"] = True
                spec["hash"] = spec_hash(spec)
                spec["eval_batch_size"] = eval_batch_size
                spec["run_dir"] = str(run_dir)
                spec["_cases"] = cases
                specs.append(spec)
    return specs


def provenance() -> dict[str, Any]:
    """The code's commit, whether the work tree differs from it (results and outputs aside), and the versions."""
    import monai
    import torch

    def git(*args: str) -> str:
        """The command's standard output as is (``--porcelain`` lines begin with a status column that may be a
        space), or "" when git is missing or fails."""
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [
        line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith(("results/", "docs/"))
    ]  # fmt: skip
    return {
        "commit": git("rev-parse", "--short=12", "HEAD").strip() or "unknown",
        "dirty": bool(changed),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__},
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread per run",
    }


# ---------------------------------------------------------------------------------------------------------------------
# the child: one run in this process
# ---------------------------------------------------------------------------------------------------------------------


def _classical(spec: dict[str, Any], run_dir: Path, eval_datalist: Path) -> Path:
    """Otsu or Chan-Vese on the prepared test images (their volume forms on each test volume's prepared slices,
    restacked, with intensities affine in the raw ones), scored per slice as the bundles' evaluations are, and per
    volume on 3D data (``volumes.json``); returns the evaluation folder."""
    from common.classical.baselines import (
        VOLUME_INTENSITY,
        VOLUME_METHODS,
        classical_segmentation,
        classical_segmentation_3d,
        report_on_items,
        report_on_volumes,
    )
    from common.data import prepare_datalists

    from .volumes import VOLUME_PREFIX, VolumeReport, slice_observer

    lists = prepare_datalists(
        None,
        str(run_dir / "outputs"),
        datalist_file=str(eval_datalist),
        val_fraction=0.0,
        test_fraction=0.0,
        num_channels=spec["num_channels"],
        num_classes=spec["num_classes"],
        require_labels=False,
        intensity=VOLUME_INTENSITY if spec["arm"] in VOLUME_METHODS else None,
    )
    volumes = VolumeReport(spec["num_classes"], spec["class_names"]) if spec.get("spatial_dims") == 3 else None
    on_slice = slice_observer(volumes) if volumes is not None else None
    if spec["arm"] in VOLUME_METHODS:
        report = report_on_volumes(
            lists["test"],
            lambda volume: classical_segmentation_3d(volume, spec["arm"], spec["num_classes"]),
            spec["num_classes"],
            spec["class_names"],
            on_slice,
        )
    else:
        report = report_on_items(
            lists["test"],
            lambda image: classical_segmentation(image, spec["arm"], spec["num_classes"]),
            spec["num_classes"],
            spec["class_names"],
            on_slice,
        )
    report.write(run_dir / "eval")
    if volumes is not None:
        volumes.finish().write(run_dir / "eval", VOLUME_PREFIX)
    return run_dir / "eval"


def record_coverage(trainer: Any) -> list[float | None]:
    """A list that fills, as ``trainer`` runs, with each epoch's mean ``coverage`` (the share of unlabelled pixels
    whose pseudo-label passes the method's confidence threshold, from the trainer's iteration output; ``None`` for an
    epoch without it): what explains a method whose unlabelled terms do not move Dice."""
    from ignite.engine import Events

    per_epoch: list[float | None] = []
    values: list[float] = []

    def collect(engine: Any) -> None:
        output = engine.state.output
        if isinstance(output, dict) and output.get("coverage") is not None:
            values.append(float(output["coverage"]))

    def close(engine: Any) -> None:
        per_epoch.append(round(sum(values) / len(values), 4) if values else None)
        values.clear()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, collect)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, close)
    return per_epoch


def run_overrides(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's config overrides with its run folder in place of ``<run>``; a bundle's outputs and checkpoints go
    under the run folder."""
    run_dir = Path(spec["run_dir"])
    overrides = {
        k: (v.replace("<run>", str(run_dir)) if isinstance(v, str) else v) for k, v in spec["overrides"].items()
    }
    if spec["bundle"] is not None:
        overrides.update(output_dir=str(run_dir / "outputs"), ckpt_dir=str(run_dir / "models"))
    return overrides


def train_workflow(spec: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The bundle's training workflow of a run, not yet initialised (``common.bundle.load_workflow``)."""
    from common.bundle import load_workflow

    return load_workflow(spec["bundle"], spec["train_configs"], "train", **overrides)


def evaluation_workflow(
    spec: dict[str, Any], overrides: dict[str, Any], datalist: str = "datalist_eval.json", eval_name: str = "eval"
) -> Any:
    """The bundle's ``evaluate.json`` workflow on the ``test`` list of the run's ``datalist`` (by default its test
    cases), writing to ``<run>/<eval_name>``, not yet initialised; on 3D data it also scores each test volume
    (:mod:`.volumes`). It runs the evaluator alone (:data:`EVALUATION_RUN`): AF-Seg's ``evaluate.json`` also draws
    a panel of its whole pipeline, which reruns its stages 1 and 2 on the run's training images when the test
    datalist differs from the training one, as here (a minute per run on sparse_stack, and no score)."""
    from common.bundle import load_workflow

    from .volumes import report_per_volume

    run_dir = Path(spec["run_dir"])
    eval_overrides = {
        **overrides,
        "datalist_file": str(run_dir / datalist),
        "validate#dataloader#batch_size": int(spec.get("eval_batch_size", 1)),
        "run": EVALUATION_RUN,
    }
    configs = [*spec["train_configs"], "evaluate.json"]
    workflow = load_workflow(spec["bundle"], configs, "eval", **eval_overrides, eval_dir=str(run_dir / eval_name))
    if spec.get("spatial_dims") == 3:
        report_per_volume(workflow)
    return workflow


def segmenter_steps(spec: dict[str, Any], overrides: dict[str, Any], steps: int) -> int:
    """The segmenter steps of a run whose trainer ran ``steps`` iterations (MIPR trains its segmenter anew in each
    of its rounds)."""
    rounds = overrides.get("num_rounds", 0) if spec["bundle"] == "mipr_auto_annotation" else 0
    return steps * (rounds + 1)


def run_scores(spec: dict[str, Any]) -> dict[str, Any]:
    """A finished run's test Dice (mean, per image; on 3D data per volume, with the mean over the test slices)."""
    from common.metrics import read_metrics

    from .volumes import VOLUME_PREFIX

    eval_dir = Path(spec["run_dir"]) / "eval"
    metrics = read_metrics(eval_dir)
    scores: dict[str, Any] = {}
    if spec.get("spatial_dims") == 3:  # scored per test volume; the mean over the test slices kept beside it
        scores["slice_dice_mean"] = metrics.mean()
        metrics = read_metrics(eval_dir / f"{VOLUME_PREFIX}.json")
    scores.update(dice_mean=metrics.mean(), dice_per_image=metrics.by_image(), test_cases=len(metrics.per_image))
    return scores


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train then evaluate one run in this process; returns its Dice per test image (per test volume on 3D data, the
    mean over slices beside it), steps, time and memory."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    run_dir = Path(spec["run_dir"])
    overrides = run_overrides(spec)
    result: dict[str, Any] = {}
    if spec["bundle"] is None:
        _classical(spec, run_dir, run_dir / "datalist_eval.json")
        result["segmenter_steps"] = 0
    else:
        workflow = train_workflow(spec, overrides)
        workflow.initialize()
        coverage = record_coverage(workflow.parser.get_parsed_content("train#trainer"))
        workflow.run()
        workflow.finalize()
        if any(v is not None for v in coverage):
            result["coverage_per_epoch"] = coverage
        steps = int(workflow.parser.get_parsed_content("train#trainer").state.iteration)
        result["segmenter_steps"] = segmenter_steps(spec, overrides, steps)
        lists = workflow.parser.get_parsed_content("datalists")
        result["unlabelled_images"] = len(lists.get("unlabeled", []))
        del workflow
        workflow = evaluation_workflow(spec, overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    result.update(run_scores(spec))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        peak_mib=round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
    )
    return result


def prepare_run_dir(spec: dict[str, Any], data: DatasetInfo) -> Path:
    """An emptied run folder holding the run's training and test datalists (``write_run_datalists``; the data set's
    target-absent images only for an arm that reads them, ``use_absent``)."""
    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    write_run_datalists(
        data, spec["_cases"], run_dir, use_unlabelled=spec["use_unlabelled"], use_absent=spec.get("use_absent", False)
    )
    return run_dir


# ---------------------------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------------------------


def run_parent(
    spec: dict[str, Any], data: DatasetInfo, timeout: float | None, keep: bool = False, diagnose: bool = False
) -> dict[str, Any]:
    """Run one spec in a child process with one thread, in an emptied folder; returns its row's run fields.
    ``diagnose``: afterwards, for a bundle in :data:`.diagnostics.THRESHOLD_KEYS`, its pseudo-labels on unlabelled
    pool cases against their labels (:mod:`.diagnostics`; benchmark tasks only, after training and testing)."""
    from .diagnostics import THRESHOLD_KEYS, TRUTH_CASES

    run_dir = prepare_run_dir(spec, data)
    child = {k: v for k, v in spec.items() if not k.startswith("_")}
    result_file = run_dir / "result.json"
    runner = [sys.executable, "-m", "common.benchmark.runner"]
    command = [*runner, "--one", json.dumps(child), "--result", str(result_file)]
    row = run_logged_child(command, run_dir, result_file, timeout)
    if row["status"] == "ok" and diagnose and spec["bundle"] in THRESHOLD_KEYS and spec["_cases"]:
        write_truth_datalist(data, spec["_cases"], run_dir, TRUTH_CASES)  # only now: the run has trained
        truth_file = run_dir / "truth.json"
        command = [*runner, "--diagnose", json.dumps(child), "--result", str(truth_file)]
        found = run_logged_child(command, run_dir, truth_file, timeout, "log_truth.txt")
        row["pseudo_labels"] = found.get("pseudo_labels") or {"status": "failed", "error": found.get("error")}
    if row["status"] == "ok" and not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def run_logged_child(
    command: list[str], run_dir: Path, result_file: Path, timeout: float | None = None, log_name: str = "log.txt"
) -> dict[str, Any]:
    """Run ``command`` from the repository with one thread (the ``*_NUM_THREADS`` variables), its output in
    ``run_dir/<log_name>``; returns ``{"wall_s", "status": "ok", **the JSON of result_file}``, or, when it failed, timed
    out or wrote no result, ``{"wall_s", "status": "failed", "returncode", "error": the log's last 15 lines}``."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {
        **os.environ,
        **threads,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    with open(run_dir / log_name, "w", encoding="utf-8") as log:
        try:
            rc: int | str = subprocess.run(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    row: dict[str, Any] = {"wall_s": round(time.perf_counter() - start, 1)}
    if rc == 0 and result_file.is_file():
        row.update(status="ok", **json.loads(result_file.read_text(encoding="utf-8")))
    else:
        tail = (run_dir / log_name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        row.update(status="failed", returncode=rc, error="\n".join(tail))
    return row


def run_specs(
    specs: Sequence[dict[str, Any]],
    data: DatasetInfo,
    results_file: Path,
    command: str,
    jobs: int = 1,
    timeout: float | None = None,
    force: bool = False,
    keep: bool = False,
    diagnose: bool = False,
) -> list[dict[str, Any]]:
    """Run the specs not finished before in ``results_file`` (same id and hash; ``force``: all), ``jobs`` at a time,
    each row appended as it finishes; returns every row of the file. ``diagnose``: see :func:`run_parent`."""
    rows = {r["id"]: r for r in read_rows(results_file)}
    todo = []
    for spec in specs:
        done = rows.get(spec["id"])
        if done and done["status"] == "ok" and done["hash"] == spec["hash"] and not force:
            print(f"== {spec['id']}: done before (Dice {done['dice_mean']:.3f}), skipped", flush=True)
        else:
            todo.append(spec)
    origin = provenance()
    if origin["dirty"]:
        print("note: the work tree differs from its commit; these rows are marked dirty", flush=True)
    versions = {b: bundle_version(b, REPO) for b in {s["bundle"] for s in todo if s["bundle"]}}

    def one(spec: dict[str, Any]) -> None:
        print(f"== {spec['id']}: started", flush=True)
        row = {k: v for k, v in spec.items() if not k.startswith("_") and k not in ("run_dir", "dataset_dir")}
        row["settings"] = row.pop("overrides")
        row.update(run_parent(spec, data, timeout, keep, diagnose))
        row.update(origin, bundle_version=versions.get(spec["bundle"]), command=command)
        row["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        append_rows(results_file, [row])
        if row["status"] == "ok":
            print(f"   {spec['id']}: Dice {row['dice_mean']:.3f}, {row['segmenter_steps']} steps, {row['wall_s']} s")
        else:
            print(f"   {spec['id']}: FAILED ({row['returncode']}); log {spec['run_dir']}/log.txt\n{row['error']}")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    return read_rows(results_file)


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: ``--one SPEC --result FILE`` (a run), ``--diagnose SPEC --result FILE`` (its
    pseudo-labels against the truth, after it ran)."""
    parser = argparse.ArgumentParser(description="one benchmark run (used by common.benchmark.runner.run_parent)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--one")
    what.add_argument("--diagnose")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    if args.diagnose is not None:
        from .diagnostics import diagnose_run

        result = diagnose_run(json.loads(args.diagnose))
    else:
        result = run_child(json.loads(args.one))
    write_text_atomic(args.result, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
