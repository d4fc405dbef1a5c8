"""Results as data: one row per run, appended to a committed, compressed file per task.

A results file is ``results/<task>/runs.jsonl.gz``: gzip-compressed JSON lines, one object per run (the newest row of
an ``id`` wins when a run was repeated). Tables, plots and recommendations are generated from these files alone
(:mod:`common.benchmark.report`); nothing is typed by hand.

A row (``status`` "ok"; a failed run has ``status`` "failed", ``error`` and no Dice):

.. code-block:: text

    id               "unet@8#s0": arm @ labelled cases # seed (unique in its file)
    task             task name (a built-in task or the dataset folder's name)
    arm              arm key (common.benchmark.arms.ARMS)
    label            the arm's line for the tables
    role             "reference" | "method" | "control" | "label-free" | "classical"
    control          a method's like-for-like control arm key, else null
    bundle           bundle name, null for a classical method
    bundle_version   the bundle's metadata.json "version", null for a classical method
    labelled         labelled training cases the run read (0: none)
    seed             seed of the run (its labelled subset and its training)
    labelled_cases   the case identifiers of its labelled subset (sorted)
    unlabelled_cases number of unlabelled training cases it could read
    use_absent       only on arms that read them (translation): true, its datalist held the data set's
                     target-absent images (dataset.json's "absent" list, image-level tags)
    test_cases       number of test cases
    budget           {"name", "steps", "epochs", "batch_size", "image_size"}
    protocol         "v2"
    settings         the config overrides the run was given (paths made relative to the data folder)
    segmenter_steps  optimiser steps of the segmenter (checked equal between a method and its control)
    spatial_dims     2 or 3: on 3D data every Dice is per test volume (common.benchmark.volumes)
    dice_per_image   {test image or volume id: Dice (mean over the foreground classes)}
    dice_mean        mean of dice_per_image
    slice_dice_mean  on 3D data: the mean Dice over the test slices the bundles' evaluation reports
    coverage_per_epoch  semi-supervised arms: each epoch's mean share of unlabelled pixels above the confidence
                     threshold (the pixels that get a pseudo-label)
    wall_s, cpu_s, peak_mib
    commit, dirty    git commit of the code and whether the work tree had changes
    versions         {"python", "torch", "monai", ...}
    machine          one line
    command          the command line that ran it
    finished         UTC time, ISO 8601
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from common.atomic_write import write_binary_atomic

RESULTS_NAME = "runs.jsonl.gz"


def results_path(results_dir: str | os.PathLike, task: str) -> Path:
    """``<results_dir>/<task>/runs.jsonl.gz``."""
    return Path(results_dir) / task / RESULTS_NAME


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a results file, the newest per ``id`` kept (in first-seen order); ``[]`` when absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON ({e}); expected one run per line.") from e
            if "id" not in row:
                raise ValueError(f"{path}: line {number} has no 'id'; expected a run row (common.benchmark.results).")
            rows.pop(row["id"], None)
            rows[row["id"]] = row
    return list(rows.values())


def append_rows(path: str | os.PathLike, new_rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to a results file under an exclusive lock (``<path>.lock``, git-ignored, so that parallel
    invocations keep every row); the file is rewritten to a temporary sibling and renamed, so a crash never leaves
    half a file. Rows of an existing ``id`` replace the older ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_rows = list(new_rows)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ids = {r["id"] for r in new_rows}
        rows = [r for r in read_rows(path) if r["id"] not in ids] + new_rows

        def write(raw: BinaryIO) -> None:
            # mtime 0 and no file name in the header: the same rows give the same bytes in any process
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
                for row in rows:
                    f.write((json.dumps(row, sort_keys=True) + "\n").encode("utf-8"))

        write_binary_atomic(path, write)
