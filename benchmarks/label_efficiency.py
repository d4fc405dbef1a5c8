"""Label efficiency of every method of the collection on one demo task: Dice against the labelled fraction, with
wall time, CPU time and peak memory per run.

    python benchmarks/label_efficiency.py [--out outputs/label_efficiency] [--methods supervised_seg af_seg ...]
        [--fractions 0 0.125] [--epochs-scale 1.0] [--num-cases 48] [--image-size 64] [--force] [--with-translation]

Every image method is trained and evaluated on the same synthetic ``cells`` demo data set (``common.data.demo``,
2D grey, generated once under ``<out>/data``) with the same seed-0 split (validation 0.15, test 0.2 of the images;
the labelled share is drawn from the training images by ``labelled_fraction`` with the same seed, so the labelled
sets are nested: the 1/8 set is part of the 1/4 set, and so on). Default methods and fractions:

* ``supervised_seg``: U-Net on the labelled share only (the baseline), at 1/8, 1/4, 1/2 and 1;
* ``adversarial_semi_seg``: adversarial semi-supervised U-Net (``semi_1_8.json`` etc.) at 1/8, 1/4, 1/2;
* ``acwe_mode1``: ``acwe_unsup_seg`` mode 1, no labels (0); ``acwe_mode4``: ``mode4_joint.json`` (ACWE + label
  loss on the labelled share) at 1/8 and 1/2;
* ``af_seg``: no labels (0);
* ``mipr_auto_annotation``: 3 annotation rounds from the labelled share plus the unlabelled rest, at 1/8 and 1/4.

Optional (``--methods``): ``adversarial_unet_only`` (the adversarial bundle's ``supervised_only.json`` at 1/8),
``mipr_multi_object`` (MIPR with a pseudo-label cleaning that keeps every object and 100 generator epochs) and
``translation_semi_seg`` (also ``--with-translation``: cluttered MNIST, its own data and 1 % labels, so its point is
not comparable with the cells).

Supervised, semi-supervised, ACWE and MIPR's segmenter all get the same number of iterations (epochs x
``epoch_length``, batch 8) whatever the fraction. No run selects its model on labels beyond its labelled share:
validation runs once, after the last epoch, and the last model is evaluated (``val_interval`` = the number of
epochs). Each (method, fraction) run is a separate process (``python benchmarks/label_efficiency.py --one <spec>``)
with one torch thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) in an emptied folder
``<out>/runs/<method>_<fraction>/`` (log in ``log.txt``), so the wall time (measured by the parent, process start to
exit), the CPU time and the peak resident memory (the child's own ``getrusage``) are per run and include every
stage. Results are appended to ``<out>/results.json`` as the runs finish; a rerun skips the runs already finished
with the same settings (``--force`` runs them again), so a long run can be resumed. Then
``<out>/label_efficiency.md`` (table, schedule, machine, command) and ``<out>/label_efficiency.png`` (Dice vs
labelled fraction) are written from every finished run in ``results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic_write import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
INTENSITY = {"k": 5.0, "clip": [-1.0, 1.0], "foreground_threshold": None}
UNET_CHANNELS = [16, 32, 64, 128, 256]


@dataclass
class Method:
    """One method: its bundle, configs, labelled fractions, schedule (integers scaled by ``--epochs-scale``) and a
    function ``(fraction, schedule, settings) -> overrides``."""

    key: str
    label: str
    bundle: str
    train_configs: Callable[[float], list[str]]
    fractions: tuple[float, ...]
    schedule: dict[str, int]
    overrides: Callable[[float, dict[str, int], dict[str, Any]], dict[str, Any]]
    describe: Callable[[dict[str, int]], str]
    task: str = "cells"
    eval_configs: tuple[str, ...] = ("evaluate.json",)
    default: bool = True


def _cells(fraction: float, settings: dict[str, Any]) -> dict[str, Any]:
    """Overrides shared by every image method: the same data set, split and seed."""
    return {
        "dataset_dir": settings["dataset_dir"],
        "seed": 0,
        "val_fraction": 0.15,
        "test_fraction": 0.2,
        "labelled_fraction": fraction,
        "num_channels": 1,
        "num_classes": 2,
        "class_names": ["cell"],
    }


def _supervised(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    size = settings["image_size"]
    return {
        **_cells(fraction, settings),
        "patch_size": [size, size],
        "batch_size": 8,
        "network_def#channels": UNET_CHANNELS,
        "max_epochs": s["epochs"],
        "train#trainer#epoch_length": s["iterations"],
        "val_interval": s["epochs"],
    }


def _adversarial(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    size = settings["image_size"]
    return {
        **_cells(fraction, settings),
        "intensity": INTENSITY,
        "patch_size": [size, size],
        "batch_size": 8,
        "unlabeled_batch_size": 8,
        "network_def#channels": UNET_CHANNELS,
        "network_def#strides": [2, 2, 2, 2],
        "discriminator_channels": [64, 128],
        "max_epochs": s["epochs"],
        "epoch_length": s["iterations"],
        "semi_start_epoch": s["semi_start_epoch"],
        "val_interval": s["epochs"],
    }


def _acwe(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        **_cells(fraction, settings),
        "batch_size": 8,
        "max_epochs": s["epochs"],
        "train#trainer#epoch_length": s["iterations"],
        "val_interval": s["epochs"],
    }


def _af_seg(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    size = settings["image_size"]
    return {
        **_cells(fraction, settings),
        "patch_size": [size, size],
        "batch_size": 4,
        "learning_rate": 0.001,
        "dip_steps": s["dip_steps"],
        "background#dsp_max_steps": s["dsp_max_steps"],
        "constant_epochs": s["constant_epochs"],
        "decay_epochs": s["decay_epochs"],
        "val_interval": s["constant_epochs"] + s["decay_epochs"],
    }


def _mipr(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    size = settings["image_size"]
    return {
        **_cells(fraction, settings),
        "image_size": [size, size],
        "batch_size": 8,
        "network_def#channels": UNET_CHANNELS,
        "max_epochs": s["epochs"],
        "val_interval": s["epochs"],
        # a fixed number of iterations per epoch whatever the round's training set (labelled + accepted pairs)
        "train#dataloader#shuffle": False,
        "train#dataloader#sampler": {
            "_target_": "torch.utils.data.RandomSampler",
            "data_source": "@train#dataset",
            "replacement": True,
            "num_samples": s["iterations"] * 8,
        },
        "generator_epochs": s["generator_epochs"],
        "generator_channels": [16, 32, 64, 128],
        "spade_hidden_channels": 32,
        "discriminator_channels": 32,
        "discriminator_layers": 2,
        "num_rounds": s["rounds"],
    }


def _mipr_multi_object(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    """MIPR with a pseudo-label cleaning for images of many objects: the bundle's cleaning keeps the largest
    connected component (one lesion per ISIC image), which leaves one cell of each pseudo-label."""
    cleaning = [
        {"_target_": "FillHoles"},
        {"_target_": "GaussianSmooth", "sigma": "@cleaning_smoothing_sigma"},
        {"_target_": "AsDiscrete", "threshold": 0.5},
        {"_target_": "FillHoles"},
    ]
    return {**_mipr(fraction, s, settings), "cleaning#transforms": cleaning}


def _translation(fraction: float, s: dict[str, int], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "num_train": 2000,
        "num_test": 500,
        "network_width": 0.25,
        "batch_size": 10,
        "absent_batch_size": 10,
        "max_epochs": s["epochs"],
        "epoch_length": s["iterations"],
        "val_interval": s["epochs"],
        "resume": False,
        "seed": 0,
    }


def _its(s: dict[str, int]) -> str:
    return f"{s['epochs']} epochs x {s['iterations']} iterations"


METHODS = {
    m.key: m
    for m in (
        Method(
            "supervised_seg",
            "U-Net, labelled share only (supervised_seg)",
            "supervised_seg",
            lambda f: ["train.json"],
            (0.125, 0.25, 0.5, 1.0),
            {"epochs": 10, "iterations": 10},
            _supervised,
            lambda s: f"{_its(s)} of batch 8 (DiceCE, Adam 1e-3)",
        ),
        Method(
            "adversarial_semi_seg",
            "adversarial semi-supervised U-Net (adversarial_semi_seg)",
            "adversarial_semi_seg",
            lambda f: ["train.json", f"semi_1_{round(1 / f)}.json"],
            (0.125, 0.25, 0.5),
            {"epochs": 10, "iterations": 10, "semi_start_epoch": 2},
            _adversarial,
            lambda s: (
                f"{_its(s)} of batch 8 labelled + 8 unlabelled, pseudo-label loss after epoch "
                f"{s['semi_start_epoch']}, discriminator widths 64-128"
            ),
        ),
        Method(
            "adversarial_unet_only",
            "U-Net, labelled share only (adversarial_semi_seg supervised_only.json)",
            "adversarial_semi_seg",
            lambda f: ["train.json", "supervised_only.json"],
            (0.125,),
            {"epochs": 10, "iterations": 10, "semi_start_epoch": 2},
            _adversarial,
            lambda s: f"{_its(s)} of batch 8 (cross-entropy, no discriminator)",
            default=False,
        ),
        Method(
            "acwe_mode1",
            "RCNN + ACWE loss, no labels (acwe_unsup_seg mode 1)",
            "acwe_unsup_seg",
            lambda f: ["train.json"],
            (0.0,),
            {"epochs": 10, "iterations": 10},
            _acwe,
            lambda s: f"{_its(s)} of batch 8",
        ),
        Method(
            "acwe_mode4",
            "RCNN + ACWE + 0.4 label loss (acwe_unsup_seg mode 4)",
            "acwe_unsup_seg",
            lambda f: ["train.json", "mode4_joint.json"],
            (0.125, 0.5),
            {"epochs": 10, "iterations": 10},
            _acwe,
            lambda s: f"{_its(s)} of batch 8 (labelled images only)",
        ),
        Method(
            "af_seg",
            "AF-Seg, no labels (af_seg)",
            "af_seg",
            lambda f: ["train.json"],
            (0.0,),
            {"constant_epochs": 8, "decay_epochs": 8, "dip_steps": 50, "dsp_max_steps": 50},
            _af_seg,
            lambda s: (
                f"Chan-Vese coarse masks, DSP <= {s['dsp_max_steps']} + DIP {s['dip_steps']} steps per image, "
                f"{s['constant_epochs']} + {s['decay_epochs']} epochs of batch 4"
            ),
        ),
        Method(
            "mipr_auto_annotation",
            "MIPR, 3 annotation rounds (mipr_auto_annotation)",
            "mipr_auto_annotation",
            lambda f: ["train.json"],
            (0.125, 0.25),
            {"epochs": 10, "iterations": 10, "generator_epochs": 20, "rounds": 3},
            _mipr,
            lambda s: (
                f"S {_its(s)} of batch 8 per round (sampled with replacement), G {s['generator_epochs']} epochs "
                f"(widths 16-128, D 32 x 2 layers), {s['rounds']} rounds"
            ),
        ),
        Method(
            "mipr_multi_object",
            "MIPR, 3 rounds, cleaning without largest-component step (mipr_auto_annotation)",
            "mipr_auto_annotation",
            lambda f: ["train.json"],
            (0.125, 0.25),
            {"epochs": 10, "iterations": 10, "generator_epochs": 100, "rounds": 3},
            _mipr_multi_object,
            lambda s: (
                f"S {_its(s)} of batch 8 per round (sampled with replacement), G {s['generator_epochs']} epochs "
                f"(widths 16-128, D 32 x 2 layers), {s['rounds']} rounds, pseudo-label cleaning without "
                "KeepLargestConnectedComponent"
            ),
            default=False,
        ),
        Method(
            "translation_semi_seg",
            "translation semi-supervised (translation_semi_seg, cluttered MNIST)",
            "translation_semi_seg",
            lambda f: ["train.json"],
            (0.01,),
            {"epochs": 2, "iterations": 50},
            _translation,
            lambda s: f"cluttered MNIST 48x48, 2000 + 2000 training images, width 0.25, {_its(s)} of batch 10 + 10",
            task="cluttered MNIST",
            default=False,
        ),
    )
}


FIXED = ("rounds",)  # schedule entries that --epochs-scale leaves alone


def _scaled(schedule: dict[str, int], scale: float) -> dict[str, int]:
    return {k: v if k in FIXED else max(1, round(v * scale)) for k, v in schedule.items()}


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The run specs (one per method and fraction) of this invocation."""
    keys = args.methods or [k for k, m in METHODS.items() if m.default]
    if args.with_translation and "translation_semi_seg" not in keys:
        keys = [*keys, "translation_semi_seg"]
    unknown = [k for k in keys if k not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    out = Path(args.out).resolve()
    settings = {"dataset_dir": str(out / "data" / "cells"), "image_size": args.image_size}
    specs = []
    for key in keys:
        method = METHODS[key]
        schedule = _scaled(method.schedule, args.epochs_scale)
        if "semi_start_epoch" in schedule:  # self-training after about a quarter of the epochs (paper: 5k of 20k)
            schedule["semi_start_epoch"] = max(schedule["epochs"] // 4, 1)
        for fraction in method.fractions:
            if args.fractions is not None and not any(abs(fraction - f) < 1e-9 for f in args.fractions):
                continue
            run_id = f"{key}@{fraction:g}"
            run_dir = out / "runs" / run_id.replace("@", "_")
            overrides = {
                **method.overrides(fraction, schedule, settings),
                "output_dir": str(run_dir / "outputs"),
                "ckpt_dir": str(run_dir / "models"),
            }
            spec = {
                "id": run_id,
                "method": key,
                "label": method.label,
                "bundle": method.bundle,
                "task": method.task,
                "fraction": fraction,
                "train_configs": method.train_configs(fraction),
                "eval_configs": [*method.train_configs(fraction), *method.eval_configs],
                "overrides": overrides,
                "schedule": schedule,
                "schedule_text": method.describe(schedule),
                "num_cases": args.num_cases if method.task == "cells" else None,
                "image_size": args.image_size if method.task == "cells" else None,
            }
            spec["hash"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
            spec["run_dir"] = str(run_dir)
            specs.append(spec)
    return specs


# ---------------------------------------------------------------------------------------------------------------------
# the child: one run
# ---------------------------------------------------------------------------------------------------------------------


def _workflow(spec: dict[str, Any], configs: list[str], workflow_type: str, **extra: Any):
    from common.bundle import load_workflow

    root = REPO / "bundles" / spec["bundle"]
    workflow = load_workflow(
        spec["bundle"], configs, workflow_type, bundle_root=str(root), **spec["overrides"], **extra
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _dice(eval_dir: Path) -> dict[str, Any]:
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    dice = report["summary"]["dice"]["mean"]
    return {"dice_mean": dice["mean"], "dice_std": dice["std"], "test_images": len(report["per_image"])}


def per_image_dice(eval_dir: Path) -> dict[str, float]:
    """Test image file name -> Dice (mean over the foreground classes) from an evaluation's ``metrics.json``."""
    report = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        Path(item["name"]).name: sum(item["dice"].values()) / len(item["dice"])
        for item in report["per_image"]
        if item.get("dice")
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train then evaluate one run in this process; returns Dice, seconds and this process's peak memory."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    run_dir = Path(spec["run_dir"])
    start = time.perf_counter()
    _workflow(spec, spec["train_configs"], "train")
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    eval_dir = run_dir / "eval"
    _workflow(spec, spec["eval_configs"], "eval", eval_dir=str(eval_dir))
    result: dict[str, Any] = {**_dice(eval_dir), "train_s": round(train_s, 1)}
    result["dice_per_image"] = per_image_dice(eval_dir)
    if spec["bundle"] == "mipr_auto_annotation":  # every round's S on the same test images (round 0: labels only)
        rounds = json.loads((run_dir / "outputs" / "mipr" / "rounds.json").read_text(encoding="utf-8"))
        result["rounds"] = []
        for record in rounds:
            k = record["round"]
            ckpt = run_dir / "models" / f"round{k}" / "model.pt"
            _workflow(spec, spec["eval_configs"], "eval", eval_dir=str(run_dir / f"eval_round{k}"), ckpt_path=str(ckpt))
            dice = _dice(run_dir / f"eval_round{k}")
            result["rounds"].append(
                {"round": k, "pairs": record["pairs"], "train_items": record["train_items"], **dice}
            )
    result["eval_s"] = round(time.perf_counter() - start, 1)
    prepared = run_dir / "outputs" / "prepared"
    lists = sorted(prepared.glob("*/datalist.json")) if prepared.is_dir() else []
    if lists:
        datalist = json.loads(lists[0].read_text(encoding="utf-8"))
        result["labelled_images"] = len(datalist["training"])
        result["training_images"] = len(datalist["training"]) + len(datalist["unlabeled"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_mib"] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    result["torch_threads"] = torch.get_num_threads()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# the parent: the schedule, results.json, table and plot
# ---------------------------------------------------------------------------------------------------------------------


def load_results(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def save_results(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, json.dumps(rows, indent=1) + "\n")


def run_parent(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Run one spec in a child process with one thread; returns its result row (status ok or failed)."""
    run_dir = Path(spec["run_dir"])
    # start from nothing: the bundles cache stages (prepared slices, AF-Seg's coarse masks and backgrounds, MIPR's
    # rounds) under their output folder, and a reused stage would leave its time out of the run's wall time
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    result_file = run_dir / "result.json"
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {
        **os.environ,
        **threads,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec), "--result", str(result_file)]
    start = time.perf_counter()
    with open(run_dir / "log.txt", "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - start
    row = {k: spec[k] for k in ("id", "method", "label", "bundle", "task", "fraction", "schedule", "hash")}
    row.update(schedule_text=spec["schedule_text"], num_cases=spec["num_cases"], image_size=spec["image_size"])
    row["run_dir"] = spec["run_dir"]
    row["wall_s"] = round(wall, 1)
    if rc == 0 and result_file.is_file():
        row.update(status="ok", **json.loads(result_file.read_text(encoding="utf-8")))
    else:
        tail = (run_dir / "log.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        row.update(status="failed", returncode=rc, error="\n".join(tail))
    return row


def _fraction_text(f: float) -> str:
    names = {0.0: "0", 0.125: "1/8", 0.25: "1/4", 0.5: "1/2", 1.0: "1"}
    return names.get(f, f"{100 * f:g} %")


def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = list(METHODS)
    return sorted(rows, key=lambda r: (keys.index(r["method"]) if r["method"] in keys else len(keys), r["fraction"]))


def _paired(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Mean per-image Dice difference to the U-Net (supervised_seg) at the same fraction (at the smallest one for a
    run without labels) over the same test images, and on how many images the run is better."""
    if row["method"] == "supervised_seg" or row["task"] != "cells":
        return "-"
    unets = [r for r in rows if r["method"] == "supervised_seg" and r["status"] == "ok" and r["task"] == "cells"]
    if not unets:
        return "-"
    same = [r for r in unets if abs(r["fraction"] - row["fraction"]) < 1e-9]
    unet = same[0] if same else (min(unets, key=lambda r: r["fraction"]) if row["fraction"] == 0 else None)
    if unet is None:
        return "-"
    a, b = row.get("dice_per_image"), unet.get("dice_per_image")
    if not a or not b:
        return "-"
    common = sorted(set(a) & set(b))
    if not common:
        return "-"
    delta = sum(a[k] - b[k] for k in common) / len(common)
    wins = sum(a[k] > b[k] for k in common)
    where = "" if same else f" (vs {_fraction_text(unet['fraction'])})"
    return f"{delta:+.3f}, {wins}/{len(common)}{where}"


def markdown(rows: list[dict[str, Any]], command: str, machine: str) -> str:
    lines = [
        "| method | task | labelled fraction | labelled / training images | Dice (mean ± std over test images) | "
        "vs U-Net: mean paired Δ, images better | test images | wall s | CPU s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _order(rows):
        if r["status"] != "ok":
            lines.append(
                f"| {r['label']} | {r['task']} | {_fraction_text(r['fraction'])} | - | failed | - | - | "
                f"{r['wall_s']} | - | - |"
            )
            continue
        images = f"{r['labelled_images']} / {r['training_images']}" if "labelled_images" in r else "-"
        lines.append(
            f"| {r['label']} | {r['task']} | {_fraction_text(r['fraction'])} | {images} | "
            f"{r['dice_mean']:.3f} ± {r['dice_std']:.3f} | {_paired(r, rows)} | {r['test_images']} | "
            f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_mib']:.0f} |"
        )
    mipr = [r for r in _order(rows) if r["status"] == "ok" and r.get("rounds")]
    extra = []
    for r in mipr:
        steps = ", ".join(f"round {x['round']} {x['dice_mean']:.3f} ({x['pairs']} pairs)" for x in r["rounds"])
        extra.append(f"MIPR at {_fraction_text(r['fraction'])}, Dice of S after each round: {steps}.")
    cells = next((r for r in rows if r["task"] == "cells"), None)
    data = (
        f"Data: synthetic `cells` demo (`common.data.demo`), {cells['num_cases']} grey images of "
        f"{cells['image_size']} x {cells['image_size']} px, one seed-0 split for every method (validation 0.15, "
        "test 0.2, the labelled share drawn from the training images with seed 0, nested across fractions); "
        "no model selection on labels (the last epoch's model is evaluated). "
        if cells
        else ""
    )
    seen: dict[str, str] = {}
    for r in _order(rows):
        seen.setdefault(r["method"], f"{r['method']}: {r['schedule_text']}")
    schedule = (
        data
        + "Schedule: "
        + "; ".join(seen.values())
        + ". vs U-Net: the mean over the test images of the run's Dice minus the U-Net's (supervised_seg at the same "
        "labelled fraction; at the smallest one for runs without labels), and on how many test images the run "
        "scores higher. Wall s: the run's whole process (start-up, data preparation, training, evaluation), as seen "
        "by the parent; CPU s: that process's user + system CPU time (insensitive to other load on the machine); peak "
        "MiB: its maximum resident set size."
    )
    total = sum(r["wall_s"] for r in rows)
    return "\n".join(
        lines
        + [""]
        + extra
        + ["", schedule, "", f"Machine: {machine}. Sum of run wall times: {total:.0f} s.", "", f"Command: `{command}`"]
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Dice against labelled fraction, one line per method (one marker for a single point), error bars ± std over
    test images; left the whole Dice range, right a zoom on the runs with labels. Methods are shifted sideways a
    little so that their error bars do not overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    methods = list(dict.fromkeys(r["method"] for r in _order(ok)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1]})
    labelled = [r for r in ok if r["fraction"] > 0]
    for ax in axes:
        for i, method in enumerate(methods):
            points = sorted((r for r in ok if r["method"] == method), key=lambda r: r["fraction"])
            shift = 0.006 * (i - (len(methods) - 1) / 2)
            ax.errorbar(
                [r["fraction"] + shift for r in points],
                [r["dice_mean"] for r in points],
                yerr=[r["dice_std"] for r in points],
                linestyle="-" if len(points) > 1 else "none",
                marker="osD^vP*Xh"[i % 9],
                color=f"C{i}",
                markersize=7,
                capsize=3,
                alpha=0.85,
                label=points[0]["label"],
            )
        ax.set_xticks([0, 0.125, 0.25, 0.5, 1.0], ["0", "1/8", "1/4", "1/2", "1"])
        ax.set_xlabel("labelled fraction of the training images")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(-0.05, 1.05)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("Dice on the test images (mean ± std)")
    axes[0].set_title("all runs")
    if labelled:
        low = min(r["dice_mean"] - r["dice_std"] for r in labelled)
        high = max(r["dice_mean"] + r["dice_std"] for r in labelled)
        axes[1].set_ylim(max(low - 0.02, 0), min(high + 0.02, 1))
    axes[1].set_xlim(0.08, 1.05)
    axes[1].set_title("zoom on the runs with labels")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Label efficiency on the synthetic cells demo (one split, seed 0, short schedule)")
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(methods) + 1) // 2), 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine_text() -> str:
    import torch

    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread per run, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "outputs" / "label_efficiency"), help="output folder")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"methods to run (default: all but the optional " f"ones); from {list(METHODS)}",
    )
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=None, help="run only these labelled fractions (e.g. 0 0.25)"
    )
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch/step count by this")
    parser.add_argument("--num-cases", type=int, default=48, help="cells demo images")
    parser.add_argument("--image-size", type=int, default=64, help="side of the cells demo images")
    parser.add_argument("--force", action="store_true", help="rerun the runs already finished")
    parser.add_argument("--with-translation", action="store_true", help="add translation_semi_seg (cluttered MNIST)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is counted failed")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:  # the child
        result = run_child(json.loads(args.one))
        Path(args.result).write_text(json.dumps(result, indent=1), encoding="utf-8")
        return 0

    specs = plan(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if any(s["task"] == "cells" for s in specs):
        sys.path.insert(0, str(REPO))
        from common.data.demo import ensure_demo_dataset

        ensure_demo_dataset("cells", out / "data", seed=0, num_cases=args.num_cases, image_size=args.image_size)
    results_path = out / "results.json"
    rows = load_results(results_path)
    for row in rows:  # results written before per-image Dice was stored: read it from the run's evaluation
        eval_dir = Path(row.get("run_dir", out / "runs" / row["id"].replace("@", "_"))) / "eval"
        if row["status"] == "ok" and "dice_per_image" not in row and (eval_dir / "metrics.json").is_file():
            row["dice_per_image"] = per_image_dice(eval_dir)
            save_results(results_path, rows)
    command = " ".join(
        ["python benchmarks/label_efficiency.py", shlex.join(argv if argv is not None else sys.argv[1:])]
    )
    command = command.strip()
    start = time.perf_counter()
    for spec in specs:
        done = next((r for r in rows if r["id"] == spec["id"]), None)
        if done and done["status"] == "ok" and done["hash"] == spec["hash"] and not args.force:
            print(f"== {spec['id']}: done before (Dice {done['dice_mean']:.3f}), skipped", flush=True)
            continue
        print(f"== {spec['id']}: {spec['schedule_text']}", flush=True)
        row = run_parent(spec, args.timeout)
        row["command"] = command
        rows = [r for r in rows if r["id"] != spec["id"]] + [row]
        save_results(results_path, rows)
        if row["status"] == "ok":
            print(f"   Dice {row['dice_mean']:.3f} ± {row['dice_std']:.3f}, {row['wall_s']} s, {row['peak_mib']} MiB")
        else:
            print(f"   FAILED ({row['returncode']}); log: {Path(spec['run_dir']) / 'log.txt'}\n{row['error']}")
    print(f"this invocation: {time.perf_counter() - start:.0f} s", flush=True)
    text = markdown(rows, command, machine_text())
    (out / "label_efficiency.md").write_text(text + "\n", encoding="utf-8")
    plot(rows, out / "label_efficiency.png")
    print("\n" + text + f"\n\nwritten: {results_path}, {out / 'label_efficiency.md'}, {out / 'label_efficiency.png'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
