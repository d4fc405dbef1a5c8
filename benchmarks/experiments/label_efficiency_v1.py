"""Label efficiency on label-scarce tasks: each method of the collection against its like-for-like control at equal
segmenter steps, over seeds, with the paired difference and its 95 % interval.

    python benchmarks/experiments/label_efficiency_v1.py --task cluttered_mnist     # or mni_tissue, cells_hard
        [--seeds 0 1 2] [--arms unet adversarial ...] [--labelled 20 all] [--jobs 2]
        [--out outputs/label_efficiency] [--quick] [--force] [--timeout S]

Tasks (data prepared offline by ``common.data``; ``--task`` picks one):

* ``cluttered_mnist``: the translation paper's task (Vorontsov et al., MedIA 2022): real MNIST digits over clutter,
  48 x 48 (``common.data.cluttered_mnist``, exported for every bundle with ``export_msd``); labelled: 1 % and 5 % of
  the training images, and all of them (the ceiling); the other training images are the unlabelled ones.
* ``mni_tissue``: real T1 MRI, the MNI152 2009a template (``common.data.mni_tissue``): axial slices, background / grey
  / white matter, contiguous slabs per split; labelled: 4 and 12 slices, and all.
* ``cells_hard``: synthetic microscopy made hard on purpose (``common.data.demo``, 128 px); labelled: 4 images, and
  all.

Arms (``ARMS``): ``unet`` (``supervised_seg``, the common reference, at every labelled amount); each semi-supervised
method with its control, the same bundle and recipe with the unlabelled terms off (``adversarial`` /
``adversarial_control`` = ``supervised_only.json``, ``translation`` / ``translation_control`` (and
``translation_seg_wd0`` / ``translation_control_seg_wd0``, both with ``segmentation_weight_decay`` 0) =
``segmentation_path_only.json``, ``mipr``, ``mipr_reconstruction`` and ``mipr_new_layouts`` / ``mipr_control`` = round 0
alone trained for the steps of all rounds together, ``acwe_joint`` / ``acwe_joint_control`` = mode 4 with the ACWE term
off; ``translation_seg_only``: the authors' seg-only baseline, a reference row); the label-free ``acwe_unsup`` (mode 1)
and ``af_seg``, next to the classical methods a user would try first, ``otsu`` and ``chan_vese`` (the morphological
Chan-Vese level set without erosion), at labelled amount 0. An arm that does not apply to a task is listed as n/a with
the reason (``Task.not_applicable``).

Protocol, enforced here: every trained run of a task gets the same number of segmenter optimiser steps
(``Task.steps``; measured in each run and checked per pair); each seed draws its own labelled subset and training
seed (and, on ``cells_hard``, its own split); validation runs once, after the last step, and the last model is
evaluated, so no model, phase or threshold is chosen with labels outside the labelled share. Per run: Dice per test
image, wall s, CPU s, peak MiB. Runs are separate processes with one torch thread (``--jobs`` of them at a time) in
emptied folders ``<out>/<task>/runs/<id>/``; results are appended to ``<out>/<task>/results.json`` as they finish and
a rerun skips the finished ones (``--force`` reruns them); invocations that run other arms, seeds or labelled
amounts (``--arms``, ``--seeds``, ``--labelled``) of one task may run at the same time (the file is updated under a
lock). Then ``label_efficiency.md`` (tables) and
``label_efficiency.png`` (plot) are written from every finished run. ``--quick`` runs a reduced version (small data,
few steps, two seeds) in a few minutes; the tests smoke-run it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.atomic_write import write_text_atomic  # noqa: E402
from common.benchmark.arms import planned_steps  # noqa: E402
from common.benchmark.runner import run_logged_child  # noqa: E402
from common.metrics.results import paired_difference  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A label-scarce task and the budget every run on it gets.

    Attributes:
        name, title: ``--task`` name and a line for the tables.
        num_classes, class_names: classes including the background, and the foreground names.
        image_size: side of the (square) images.
        labelled: labelled training images of the runs with labels, lowest first; ``None`` = all (the ceiling).
        steps, epochs: segmenter optimiser steps of every trained run, in ``epochs`` epochs of ``steps // epochs``.
        batch_size: labelled batch (the unlabelled batch of the semi-supervised arms is the same size).
        unet_channels: widths of the U-Nets (supervised, adversarial, MIPR's segmenter).
        not_applicable: arm -> why it does not apply here.
        many_objects: images hold many objects (nuclei, tissue regions), so MIPR's pseudo-label cleaning keeps every
            object (the bundle's default); otherwise only the largest one (one digit per image).
        quick: the smaller settings of ``--quick``.
    """

    name: str
    title: str
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int
    labelled: tuple[int | None, ...]
    steps: int
    epochs: int
    batch_size: int
    unet_channels: tuple[int, ...]
    not_applicable: Mapping[str, str] = field(default_factory=dict)
    many_objects: bool = False
    quick: Mapping[str, Any] = field(default_factory=dict)

    def scaled(self, quick: bool) -> Task:
        if not quick:
            return self
        fields = {k: v for k, v in self.__dict__.items() if k != "quick"}
        return Task(**{**fields, **self.quick, "quick": {}})


TRANSLATION_ARMS = (
    "translation",
    "translation_control",
    "translation_seg_wd0",
    "translation_control_seg_wd0",
    "translation_seg_only",
)
TRANSLATION_NA = "needs target-absent images (slice-level labels); this task has none"
ACWE_NA = "two-phase (one foreground class); this task has two tissue classes"
TASKS: dict[str, Task] = {
    "cluttered_mnist": Task(
        name="cluttered_mnist",
        title="cluttered MNIST 48 x 48 (real MNIST digits over clutter of digit pieces)",
        num_classes=2,
        class_names=("digit",),
        image_size=48,
        labelled=(20, 100, None),
        steps=600,
        epochs=6,
        batch_size=8,
        unet_channels=(16, 32, 64, 128, 256),
        not_applicable={
            "af_seg": (
                "its premise, a classical coarse mask that is roughly right, does not hold: the clutter is made of "
                "digit pieces of the digit's intensity (Otsu and Chan-Vese rows show what such masks score), and "
                "stage 2 (a Deep Image Prior fit per image) over 2000 images is hours on a CPU"
            ),
        },
        quick={"labelled": (20, None), "steps": 8, "epochs": 2},
    ),
    "mni_tissue": Task(
        name="mni_tissue",
        title="MNI152 2009a T1 template, axial slices, grey / white matter",
        num_classes=3,
        class_names=("grey matter", "white matter"),
        image_size=64,
        labelled=(4, 12, None),
        steps=600,
        epochs=6,
        batch_size=8,
        unet_channels=(16, 32, 64, 128, 256),
        not_applicable={
            **{arm: TRANSLATION_NA for arm in TRANSLATION_ARMS},
            "acwe_unsup": ACWE_NA,
            "acwe_joint": ACWE_NA,
            "acwe_joint_control": ACWE_NA,
            "af_seg": "binary (one foreground class); this task has two tissue classes",
            "chan_vese": "two-phase; three-class Otsu is the classical row here",
        },
        many_objects=True,  # grey and white matter form several regions per slice
        quick={"labelled": (4, None), "steps": 8, "epochs": 2, "image_size": 32},
    ),
    "cells_hard": Task(
        name="cells_hard",
        title="synthetic microscopy, uneven illumination, dim and touching nuclei, 128 px",
        num_classes=2,
        class_names=("nucleus",),
        image_size=128,
        labelled=(4, None),
        steps=300,
        epochs=10,
        batch_size=8,
        unet_channels=(16, 32, 64, 128, 256),
        not_applicable={
            **{arm: TRANSLATION_NA for arm in TRANSLATION_ARMS},
        },
        many_objects=True,
        quick={"steps": 6, "epochs": 2, "image_size": 32},
    ),
}
CELLS_HARD_CASES = 48
TRANSLATION_SIZES = {"num_train": 2000, "num_val": 200, "num_test": 500}
QUICK_TRANSLATION_SIZES = {"num_train": 200, "num_val": 20, "num_test": 20}
SPLIT = {"val_fraction": 0.15, "test_fraction": 0.2}  # cells_hard, whose dataset.json has no validation/test lists


def prepare_task(task: Task, data_dir: Path, quick: bool) -> dict[str, Any]:
    """Prepare the task's data under ``data_dir`` (once; later calls find it) and return what the runs need:
    ``dataset_dir`` (an MSD-style folder every bundle reads), ``training_images`` (the training list's length, from
    which a labelled count becomes a fraction) and, for cluttered MNIST, the translation bundle's own settings."""
    from common.data.datalist import load_datalist, split_by_group

    if task.name == "cluttered_mnist":
        from common.data.cluttered_mnist import export_msd, prepare_cluttered_mnist

        sizes = QUICK_TRANSLATION_SIZES if quick else TRANSLATION_SIZES
        folder = prepare_cluttered_mnist(data_dir, "48_simple", labelled_digits=None, seed=0, **sizes)
        dataset_dir = export_msd(folder)
        extra: dict[str, Any] = {"translation_sizes": sizes, "split_given": True}
    elif task.name == "mni_tissue":
        from common.data.mni_tissue import prepare_mni_tissue

        dataset_dir = prepare_mni_tissue(data_dir / "mni_tissue", image_size=task.image_size)
        extra = {"split_given": True}
    elif task.name == "cells_hard":
        from common.data.demo import ensure_demo_dataset

        cases = 16 if quick else CELLS_HARD_CASES
        dataset_dir = ensure_demo_dataset(
            "cells_hard", data_dir / "cells_hard", seed=0, num_cases=cases, image_size=task.image_size
        ).parent
        extra = {"split_given": False}
    else:
        raise ValueError(f"unknown task {task.name!r}")
    training = load_datalist(Path(dataset_dir) / "dataset.json", "training")
    if extra["split_given"]:
        count = len(training)
    else:  # the same split the bundles make (by group, seeded); its sizes do not depend on the seed
        count = len(
            split_by_group(training, {"validation": SPLIT["val_fraction"], "test": SPLIT["test_fraction"]})["training"]
        )
    return {"dataset_dir": str(dataset_dir), "training_images": count, **extra}


# ---------------------------------------------------------------------------------------------------------------------
# arms: a bundle recipe (or a classical method) and its overrides
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What an arm's overrides are built from: the task, its prepared data, the labelled count and the seed."""

    task: Task
    data: Mapping[str, Any]
    labelled: int | None  # labelled training images; None = all; 0 = none
    seed: int

    @property
    def iterations(self) -> int:
        return self.task.steps // self.task.epochs

    def labelled_fraction(self) -> float:
        """The bundles' ``labelled_fraction`` that labels exactly ``labelled`` images: ``select_labelled`` labels
        ``ceil(f * n)`` of ``n``, so ``(k - 0.5) / n`` is exact whatever the rounding of ``k / n``."""
        if self.labelled is None:
            return 1.0
        return max(self.labelled - 0.5, 0.0) / self.data["training_images"]


def _data(c: RunContext) -> dict[str, Any]:
    """Overrides every image bundle shares: the data set, its split, the labelled share, the seed, the classes."""
    out = {
        "dataset_dir": c.data["dataset_dir"],
        "seed": c.seed,
        "labelled_fraction": c.labelled_fraction(),
        "num_channels": 1,
        "num_classes": c.task.num_classes,
        "class_names": list(c.task.class_names),
        "resume": False,
    }
    if not c.data["split_given"]:
        out.update(SPLIT)
    return out


def _schedule(c: RunContext, epoch_length_key: str) -> dict[str, Any]:
    """``epochs`` epochs of ``iterations`` steps, validated once, after the last one (so the last model is saved)."""
    return {"max_epochs": c.task.epochs, epoch_length_key: c.iterations, "val_interval": c.task.epochs}


def _unet(c: RunContext) -> dict[str, Any]:
    size = c.task.image_size
    return {
        **_data(c),
        **_schedule(c, "train#trainer#epoch_length"),
        "patch_size": [size, size],
        "batch_size": c.task.batch_size,
        "network_def#channels": list(c.task.unet_channels),
        "network_def#strides": [2] * (len(c.task.unet_channels) - 1),
    }


def _hidden_truth(c: RunContext) -> dict[str, Any]:
    """The ``diagnostic_truth`` override: a :class:`common.data.HiddenTruth` of the task's labels, against which a
    method's pseudo-labels on its unlabelled images are scored (the unlabelled images all come from the "training"
    list of every task's dataset.json); training never reads it."""
    return {
        "_target_": "common.data.HiddenTruth",
        "datalist_file": str(Path(c.data["dataset_dir"]) / "dataset.json"),
        "num_classes": c.task.num_classes,
    }


def _adversarial(c: RunContext) -> dict[str, Any]:
    size = c.task.image_size
    return {
        **_data(c),
        **_schedule(c, "epoch_length"),
        "patch_size": [size, size],
        "batch_size": c.task.batch_size,
        "unlabeled_batch_size": c.task.batch_size,
        "network_def#channels": list(c.task.unet_channels),
        "network_def#strides": [2] * (len(c.task.unet_channels) - 1),
        "semi_start_epoch": max(c.task.epochs // 4, 1),  # paper: 5k of 20k iterations
        "discriminator_channels": [64, 128, 256],  # four stride-2 layers: images of 16 px and more
        "diagnostic_truth": _hidden_truth(c),  # scores the pseudo-labels each epoch
    }


def _adversarial_control(c: RunContext) -> dict[str, Any]:
    """The same recipe; no pseudo-labels to score (``supervised_only.json`` has no discriminator)."""
    return {k: v for k, v in _adversarial(c).items() if k != "diagnostic_truth"}


def _acwe(c: RunContext) -> dict[str, Any]:
    return {**_data(c), **_schedule(c, "train#trainer#epoch_length"), "batch_size": c.task.batch_size}


def _acwe_label_only(c: RunContext) -> dict[str, Any]:
    return {**_acwe(c), "acwe_weight": 0.0}


def _af_seg(c: RunContext) -> dict[str, Any]:
    size = c.task.image_size
    half = c.task.epochs // 2
    return {
        **_data(c),
        "patch_size": [size, size],
        "batch_size": c.task.batch_size,
        "train#trainer#epoch_length": c.iterations,
        "constant_epochs": half,
        "decay_epochs": c.task.epochs - half,
        "val_interval": c.task.epochs,
        "learning_rate": 0.001,
        "dip_steps": 50,
        "background#dsp_max_steps": 50,
    }


MIPR_ROUNDS = 1
# mipr_new_layouts: each accepted label moved to this many new layouts t'' with x'' = G(x, t'') (issue 17)
MIPR_NEW_LAYOUTS = 2


def _mipr(
    c: RunContext, rounds: int = MIPR_ROUNDS, epochs_scale: int = 1, acceptance: str = "segmenter"
) -> dict[str, Any]:
    size = c.task.image_size
    batch = c.task.batch_size
    out = {
        **_data(c),
        "image_size": [size, size],
        "batch_size": batch,
        "network_def#channels": list(c.task.unet_channels),
        "network_def#strides": [2] * (len(c.task.unet_channels) - 1),
        "max_epochs": c.task.epochs * epochs_scale,
        "val_interval": c.task.epochs * epochs_scale,
        # a fixed number of steps per epoch whatever the round's training set (labelled + accepted pairs)
        "train#dataloader#shuffle": False,
        "train#dataloader#sampler": {
            "_target_": "torch.utils.data.RandomSampler",
            "data_source": "@train#dataset",
            "replacement": True,
            "num_samples": c.iterations * batch,
        },
        "generator_epochs": 20,
        "generator_channels": [16, 32, 64, 128],
        "spade_hidden_channels": 32,
        "discriminator_channels": 32,
        "discriminator_layers": 2,
        "num_rounds": rounds,
    }
    if not c.task.many_objects and rounds > 0:  # cleaning acts on pseudo-labels only: round 0 alone is unchanged
        out["cleaning_keep_largest_component"] = True  # one object per image (the digit)
    if rounds > 0:
        out["acceptance"] = acceptance
        out["diagnostic_truth"] = _hidden_truth(c)  # scores the pairs; never used to accept
    return out


def _mipr_control(c: RunContext) -> dict[str, Any]:
    """Round 0 alone (labelled images only) for the segmenter steps of all MIPR's rounds together."""
    return _mipr(c, rounds=0, epochs_scale=MIPR_ROUNDS + 1)


def _translation(c: RunContext) -> dict[str, Any]:
    sizes = c.data["translation_sizes"]
    fraction = 1.0 if c.labelled is None else c.labelled / sizes["num_train"]  # its own count: round(f * n)
    return {
        **sizes,
        "labelled_fraction": fraction,
        "labelled_digits": None,
        "data_seed": 0,  # the images of export_msd
        "labelled_seed": c.seed,
        "seed": c.seed,
        "network_width": 0.25,
        "batch_size": 10,
        "absent_batch_size": 10,
        "resume": False,
        **_schedule(c, "epoch_length"),
    }


def _translation_seg_wd0(c: RunContext) -> dict[str, Any]:
    """:func:`_translation` with the segmentation-only parameters undecayed (``segmentation_weight_decay`` 0)."""
    return {**_translation(c), "segmentation_weight_decay": 0.0}


@dataclass(frozen=True)
class Arm:
    """One kind of run.

    Attributes:
        key, label: name in ``--arms`` and in the tables.
        bundle, configs: the bundle and its configs merged in order; ``bundle`` None for a classical method,
            computed in the child on the test images without training.
        role: ``reference`` (the U-Net, the authors' baselines), ``method``, ``control``, ``label-free`` or
            ``classical``.
        control: a method's like-for-like control arm.
        labelled_amounts: which labelled amounts it runs at: ``"low"`` (those below all), ``"all"`` (every one,
            the ceiling included) or ``"none"`` (0: no label reaches training).
        overrides: ``RunContext -> config overrides``.
        steps_key: how its segmenter steps are planned (checked equal between a method and its control).
    """

    key: str
    label: str
    bundle: str | None
    configs: tuple[str, ...]
    role: str
    labelled_amounts: str
    overrides: Callable[[RunContext], dict[str, Any]] | None = None
    control: str | None = None
    eval_configs: tuple[str, ...] = ("evaluate.json",)

    def planned_steps(self, c: RunContext) -> int:
        """Segmenter optimiser steps of this arm, from its overrides: those of its final model, times the rounds
        for MIPR, which trains its segmenter anew in each (0 for classical methods)."""
        return 0 if self.bundle is None else planned_steps(self.overrides(c))


ARMS: dict[str, Arm] = {
    a.key: a
    for a in (
        Arm(
            "unet",
            "U-Net on the labelled share (supervised_seg)",
            "supervised_seg",
            ("train.json",),
            "reference",
            "all",
            _unet,
        ),
        Arm(
            "adversarial",
            "adversarial semi-supervised (adversarial_semi_seg)",
            "adversarial_semi_seg",
            ("train.json",),
            "method",
            "low",
            _adversarial,
            control="adversarial_control",
        ),
        Arm(
            "adversarial_control",
            "its U-Net alone (adversarial_semi_seg supervised_only.json)",
            "adversarial_semi_seg",
            ("train.json", "supervised_only.json"),
            "control",
            "low",
            _adversarial_control,
        ),
        Arm(
            "translation",
            "translation semi-supervised (translation_semi_seg)",
            "translation_semi_seg",
            ("train.json",),
            "method",
            "low",
            _translation,
            control="translation_control",
        ),
        Arm(
            "translation_seg_wd0",
            "translation semi-supervised, segmentation-only parameters not decayed (segmentation_weight_decay 0)",
            "translation_semi_seg",
            ("train.json",),
            "method",
            "low",
            _translation_seg_wd0,
            control="translation_control_seg_wd0",
        ),
        Arm(
            "translation_control_seg_wd0",
            "its segmentation path alone, segmentation_weight_decay 0 (segmentation_path_only.json)",
            "translation_semi_seg",
            ("train.json", "segmentation_path_only.json"),
            "control",
            "low",
            _translation_seg_wd0,
        ),
        Arm(
            "translation_control",
            "its segmentation path alone (translation_semi_seg segmentation_path_only.json)",
            "translation_semi_seg",
            ("train.json", "segmentation_path_only.json"),
            "control",
            "low",
            _translation,
        ),
        Arm(
            "translation_seg_only",
            "the authors' seg-only baseline (translation_semi_seg seg_only.json, 0.3.0)",
            "translation_semi_seg",
            ("train.json", "seg_only.json"),
            "reference",
            "low",
            _translation,
        ),
        Arm(
            "mipr",
            f"MIPR, {MIPR_ROUNDS} annotation round (mipr_auto_annotation)",
            "mipr_auto_annotation",
            ("train.json",),
            "method",
            "low",
            _mipr,
            control="mipr_control",
        ),
        Arm(
            "mipr_reconstruction",
            f"MIPR, {MIPR_ROUNDS} round, pairs judged by G's reconstruction error (mipr_auto_annotation)",
            "mipr_auto_annotation",
            ("train.json",),
            "method",
            "low",
            lambda c: _mipr(c, acceptance="reconstruction"),
            control="mipr_control",
        ),
        Arm(
            "mipr_new_layouts",
            f"MIPR, {MIPR_ROUNDS} round, + {MIPR_NEW_LAYOUTS} new layouts per accepted pair (mipr_auto_annotation)",
            "mipr_auto_annotation",
            ("train.json",),
            "method",
            "low",
            lambda c: {**_mipr(c), "new_layouts": MIPR_NEW_LAYOUTS},
            control="mipr_control",
        ),
        Arm(
            "mipr_control",
            "its round 0 alone, the steps of all rounds (mipr_auto_annotation)",
            "mipr_auto_annotation",
            ("train.json",),
            "control",
            "low",
            _mipr_control,
        ),
        Arm(
            "acwe_joint",
            "RCNN, ACWE + label loss (acwe_unsup_seg mode 4)",
            "acwe_unsup_seg",
            ("train.json", "mode4_joint.json"),
            "method",
            "low",
            _acwe,
            control="acwe_joint_control",
        ),
        Arm(
            "acwe_joint_control",
            "RCNN, label loss alone (mode 4, ACWE weight 0)",
            "acwe_unsup_seg",
            ("train.json", "mode4_joint.json"),
            "control",
            "low",
            _acwe_label_only,
        ),
        Arm(
            "acwe_unsup",
            "RCNN + ACWE loss, no labels (acwe_unsup_seg mode 1)",
            "acwe_unsup_seg",
            ("train.json",),
            "label-free",
            "none",
            _acwe,
        ),
        Arm("af_seg", "AF-Seg, no labels (af_seg)", "af_seg", ("train.json",), "label-free", "none", _af_seg),
        Arm("otsu", "Otsu threshold per image (multi-Otsu for several classes)", None, (), "classical", "none"),
        Arm("chan_vese", "Chan-Vese level set per image, no erosion", None, (), "classical", "none"),
    )
}


def amounts(arm: Arm, task: Task) -> list[int | None]:
    if arm.labelled_amounts == "none":
        return [0]
    if arm.labelled_amounts == "low":
        return [k for k in task.labelled if k is not None]
    return list(task.labelled)


def amount_text(k: int | None) -> str:
    return "all" if k is None else str(k)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """What identifies a run's settings (a rerun with another hash is not skipped): 12 hex digits of the SHA-256 of
    the spec (without its folder) as sorted JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def place_spec(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Give ``spec`` (no ``hash`` or ``run_dir`` yet) its hash and its folder ``run_dir``, and a bundle's run its
    output and checkpoint folders inside it; returns ``spec``."""
    spec["hash"] = spec_hash(spec)
    spec["run_dir"] = str(run_dir)
    if spec["bundle"]:
        spec["overrides"].update(output_dir=str(run_dir / "outputs"), ckpt_dir=str(run_dir / "models"))
    return spec


def plan(task: Task, data: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int], out: Path) -> list[dict]:
    """The run specs (arm x labelled amount x seed) of this invocation; every method and its control are planned with
    the same segmenter steps (a ``ValueError`` otherwise)."""
    specs = []
    for key in arms:
        arm = ARMS[key]
        if key in task.not_applicable:
            continue
        for k in amounts(arm, task):
            for seed in seeds:
                c = RunContext(task, data, k, seed)
                if arm.control:
                    mine, theirs = arm.planned_steps(c), ARMS[arm.control].planned_steps(c)
                    if mine != theirs:
                        raise ValueError(f"{key} plans {mine} segmenter steps, its control {arm.control} {theirs}.")
                run_id = f"{key}@{amount_text(k)}#s{seed}"
                run_dir = out / "runs" / run_id.replace("@", "_").replace("#", "_")
                spec = {
                    "id": run_id,
                    "arm": key,
                    "bundle": arm.bundle,
                    "labelled": k,
                    "seed": seed,
                    "task": task.name,
                    "train_configs": list(arm.configs),
                    "eval_configs": [*arm.configs, *arm.eval_configs],
                    "overrides": arm.overrides(c) if arm.overrides else {},
                    "planned_steps": arm.planned_steps(c),
                    "dataset_dir": data["dataset_dir"],
                    "split_given": data["split_given"],
                    "num_classes": task.num_classes,
                    "class_names": list(task.class_names),
                }
                specs.append(place_spec(spec, run_dir))
    return specs


# ---------------------------------------------------------------------------------------------------------------------
# the child: one run in its own process
# ---------------------------------------------------------------------------------------------------------------------


def _segmenter_steps(workflow: Any) -> int:
    """Optimiser steps of the segmenter's trainer in its last run (MIPR: the last round's)."""
    trainer = workflow.parser.get_parsed_content("train#trainer")
    return int(trainer.state.iteration)


def _validation_dice(workflow: Any) -> float | None:
    """The key metric of the workflow's last validation (the labelled validation images; ``None`` where the bundle
    has no ``validate#evaluator`` or it never ran): what a user may choose hyper-parameters with."""
    if "validate#evaluator" not in workflow.parser:
        return None
    state = workflow.parser.get_parsed_content("validate#evaluator").state
    value = state.metrics.get(state.key_metric_name) if state.key_metric_name else None
    return None if value is None else float(value)


def _record_validation_curve(workflow: Any) -> list[dict[str, float]]:
    """A list that fills, as the (initialised, not yet run) workflow trains, with ``{"epoch", "iteration",
    "dice"}`` after each validation: the trainer's epoch and step, and the validation key metric (empty where the
    bundle has no ``validate#evaluator`` and ``train#trainer``)."""
    from ignite.engine import Events

    curve: list[dict[str, float]] = []
    if "validate#evaluator" not in workflow.parser or "train#trainer" not in workflow.parser:
        return curve
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    trainer = workflow.parser.get_parsed_content("train#trainer")

    def record(engine: Any) -> None:
        value = engine.state.metrics.get(engine.state.key_metric_name)
        if value is not None:
            curve.append({"epoch": trainer.state.epoch, "iteration": trainer.state.iteration, "dice": float(value)})

    evaluator.add_event_handler(Events.COMPLETED, record)
    return curve


def _classical(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Otsu or Chan-Vese on the test images of the run's split (prepared as the bundles prepare them); returns the
    evaluation folder's report."""
    from common.classical.baselines import classical_segmentation, report_on_items
    from common.data import prepare_datalists

    kwargs = {} if spec["split_given"] else SPLIT
    lists = prepare_datalists(
        spec["dataset_dir"],
        str(run_dir / "outputs"),
        seed=spec["seed"],
        labelled_fraction=0.0,
        num_channels=1,
        num_classes=spec["num_classes"],
        **kwargs,
    )
    report = report_on_items(
        lists["test"],
        lambda image: classical_segmentation(image, spec["arm"], spec["num_classes"]),
        spec["num_classes"],
        spec["class_names"],
    )
    eval_dir = run_dir / "eval"
    report.write(eval_dir)
    return {"eval_dir": str(eval_dir)}


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (no tie correction; the scores are continuous)."""
    import numpy as np

    if len(x) < 3:
        return None
    rx, ry = (np.argsort(np.argsort(np.asarray(v))) for v in (x, y))
    return round(float(np.corrcoef(rx, ry)[0, 1]), 3)


def mipr_pair_diagnostics(round_dir: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """How right MIPR's pairs are, from a round's ``datalist.json`` (every item's scores and hidden ``true_dice``):
    per acceptance rule, the pairs it accepts (applied to the same scores) and their mean true Dice; and how well
    each score ranks the pseudo-labels (Spearman's rho with the true Dice)."""
    from common.engines.mipr_annotation import ACCEPTANCE_RULES, accepts

    pairs = json.loads((round_dir / "datalist.json").read_text(encoding="utf-8"))
    scored = [p for p in pairs["training"] + pairs["rejected"] if p.get("dice") is not None and "true_dice" in p]
    scored = [p for p in scored if not p.get("new_layout")]
    max_error = record.get("max_reconstruction_error")
    out: dict[str, Any] = {
        "acceptance": pairs.get("acceptance", "segmenter"),
        "max_reconstruction_error": max_error,
        "true_dice_all": round(sum(p["true_dice"] for p in scored) / len(scored), 4) if scored else None,
        "rho_check": _spearman([p["dice"] for p in scored], [p["true_dice"] for p in scored]),
        "rho_reconstruction": _spearman([-p["reconstruction_error"] for p in scored], [p["true_dice"] for p in scored]),
        "rules": {},
    }
    for name, part in (
        ("wrong", [p for p in scored if p["true_dice"] < 0.5]),
        ("right", [p for p in scored if p["true_dice"] > 0.8]),
    ):
        # do the scores tell a clearly wrong pseudo-label (true Dice < 0.5) from a right one (> 0.8)?
        out[f"{name}_pairs"] = len(part)
        for key in ("dice", "reconstruction_error"):
            out[f"{key}_{name}"] = round(sum(p[key] for p in part) / len(part), 4) if part else None
    for rule in ACCEPTANCE_RULES:
        if rule != "segmenter" and max_error is None:
            continue
        kept = [
            p["true_dice"]
            for p in scored
            if accepts(rule, p["dice"], p["reconstruction_error"], pairs["acceptance_dice"], max_error)
        ]
        out["rules"][rule] = {"accepted": len(kept), "true_dice": round(sum(kept) / len(kept), 4) if kept else None}
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train then evaluate one run in this process; returns its Dice per test image, steps, time and memory."""
    import logging

    import torch

    from common.bundle import load_workflow, run_workflow
    from common.metrics import read_metrics

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    run_dir = Path(spec["run_dir"])
    result: dict[str, Any] = {}
    start = time.perf_counter()
    if spec["bundle"] is None:
        eval_dir = Path(_classical(spec, run_dir)["eval_dir"])
        result["segmenter_steps"] = 0
    else:
        workflow = load_workflow(spec["bundle"], spec["train_configs"], "train", **spec["overrides"])
        workflow.initialize()
        curve = _record_validation_curve(workflow)
        workflow.run()
        workflow.finalize()
        result["segmenter_steps"] = _segmenter_steps(workflow)
        result["validation_dice"] = _validation_dice(workflow)
        result["validation_curve"] = curve
        if spec["bundle"] == "mipr_auto_annotation":
            rounds = workflow.parser.get_parsed_content("num_rounds")
            result["final_model_steps"] = result["segmenter_steps"]
            result["segmenter_steps"] *= rounds + 1  # every round trains S anew on the same schedule
        datalists = workflow.parser.get_parsed_content("datalists")
        if "unlabeled" in datalists:
            result["labelled_images"] = len(datalists["training"])
            result["training_images"] = len(datalists["training"]) + len(datalists["unlabeled"])
        del workflow
        result["train_s"] = round(time.perf_counter() - start, 1)
        quality = Path(spec["overrides"]["output_dir"]) / "pseudo_label_quality.json"
        if spec["bundle"] == "adversarial_semi_seg" and quality.is_file():  # per epoch, against the hidden labels
            result["pseudo_labels"] = json.loads(quality.read_text(encoding="utf-8"))
        eval_dir = run_dir / "eval"
        run_workflow(spec["bundle"], spec["eval_configs"], "eval", **spec["overrides"], eval_dir=str(eval_dir))
        if spec["bundle"] == "mipr_auto_annotation":  # round 0 too: MIPR's own equal-final-steps comparison
            rounds = json.loads((run_dir / "outputs" / "mipr" / "rounds.json").read_text(encoding="utf-8"))
            result["rounds"] = []
            for record in rounds:
                k = record["round"]
                ckpt = run_dir / "models" / f"round{k}" / "model.pt"
                round_eval = run_dir / f"eval_round{k}"
                run_workflow(
                    spec["bundle"],
                    spec["eval_configs"],
                    "eval",
                    **spec["overrides"],
                    eval_dir=str(round_eval),
                    ckpt_path=str(ckpt),
                )
                metrics = read_metrics(round_eval)
                result["rounds"].append(
                    {
                        "round": k,
                        "pairs": record["pairs"],
                        "dice_mean": metrics.mean(),
                        "train_items": record.get("train_items"),
                        **(mipr_pair_diagnostics(run_dir / "outputs" / "mipr" / f"round{k}", record) if k else {}),
                    }
                )
    metrics = read_metrics(eval_dir)
    result.update(
        dice_mean=metrics.mean(),
        dice_std=metrics.std(),
        dice_per_image=metrics.by_image(),
        test_images=len(metrics.per_image),
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_mib"] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    result["torch_threads"] = torch.get_num_threads()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# the parent: the runs, results.json, tables and plot
# ---------------------------------------------------------------------------------------------------------------------


def load_results(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def record_result(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the row of ``row["id"]`` in the results file by ``row`` and return every row. The file is read again
    under an exclusive lock (``<path>.lock``), so invocations running other arms or seeds of the same task at the same
    time all keep their results; the write is atomic."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in load_results(path) if r["id"] != row["id"]] + [row]
        write_text_atomic(path, json.dumps(rows, indent=1) + "\n")
    return rows


def run_parent(spec: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Run one spec in a child process with one thread, in an emptied folder; returns its result row."""
    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # cached stages would leave their time out of the run's
    run_dir.mkdir(parents=True)
    result_file = run_dir / "result.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec), "--result", str(result_file)]
    row = {k: spec[k] for k in ("id", "arm", "labelled", "seed", "task", "hash", "planned_steps", "run_dir")}
    return {**row, **run_logged_child(command, run_dir, result_file, timeout)}


def run_specs(
    specs: Sequence[dict[str, Any]],
    results_path: Path,
    jobs: int,
    command: str,
    timeout: float | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Run the specs not finished before in ``results_path`` (same id and hash; ``force``: all of them), ``jobs`` at a
    time, each row recorded as it finishes (with the spec's ``setting``, if it has one); returns every row of the
    file, also those of other invocations."""
    rows = load_results(results_path)
    todo = []
    for spec in specs:
        done = next((r for r in rows if r["id"] == spec["id"]), None)
        if done and done["status"] == "ok" and done["hash"] == spec["hash"] and not force:
            print(f"== {spec['id']}: done before (Dice {done['dice_mean']:.3f}), skipped", flush=True)
        else:
            todo.append(spec)

    def one(spec: dict[str, Any]) -> None:
        print(f"== {spec['id']}: started", flush=True)
        row = run_parent(spec, timeout)
        row["command"] = command
        if "setting" in spec:
            row["setting"] = spec["setting"]
        record_result(results_path, row)  # its file lock also serialises this invocation's threads
        if row["status"] == "ok":
            print(
                f"   {spec['id']}: Dice {row['dice_mean']:.3f}, validation Dice {row.get('validation_dice')}, "
                f"{row['segmenter_steps']} steps, {row['wall_s']} s",
                flush=True,
            )
        else:
            print(
                f"   {spec['id']}: FAILED ({row['returncode']}); log {spec['run_dir']}/log.txt\n{row['error']}",
                flush=True,
            )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    return load_results(results_path)


def _ok(rows: Sequence[dict], arm: str, labelled: int | None) -> dict[int, dict]:
    """seed -> finished row of ``arm`` at ``labelled`` (a failed row is skipped before its other keys are read)."""
    return {r["seed"]: r for r in rows if r["status"] == "ok" and r["arm"] == arm and r["labelled"] == labelled}


def compare(
    rows: Sequence[dict],
    arm: str,
    other: str,
    labelled: int | None,
    other_labelled: int | None = None,
    equal_steps: bool | None = None,
):
    """Paired comparison over the seeds both finished: ``(PairedDifference, seeds, note)``; ``note`` says why there
    is none (no common seed, or unequal segmenter steps between a method and its control). ``equal_steps`` (default:
    when ``other`` is ``arm``'s control in :data:`ARMS`) refuses pairs whose segmenter steps differ."""
    mine, theirs = _ok(rows, arm, labelled), _ok(rows, other, labelled if other_labelled is None else other_labelled)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None, seeds, "no seed finished for both"
    if equal_steps is None:
        equal_steps = arm in ARMS and ARMS[arm].control == other
    if equal_steps:
        unequal = [s for s in seeds if mine[s]["segmenter_steps"] != theirs[s]["segmenter_steps"]]
        if unequal:
            s = unequal[0]
            steps = f"{mine[s]['segmenter_steps']} vs {theirs[s]['segmenter_steps']}"
            return None, seeds, f"not compared: unequal segmenter steps ({steps}, seed {s})"
    diff = paired_difference([mine[s]["dice_mean"] for s in seeds], [theirs[s]["dice_mean"] for s in seeds])
    return diff, seeds, ""


def _verdict(diff: Any) -> str:
    if diff is None or math.isnan(diff.lo):
        return "-"
    if not diff.excludes_zero:
        return "no difference"
    return "better" if diff.mean > 0 else "worse"


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def _rate(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(task: Task, rows: list[dict[str, Any]], command: str, machine: str, quick: bool) -> str:
    """The task's tables: every run kind over seeds, each method against its control, the U-Net's gap to its ceiling,
    the label-free methods against the classical ones, and the n/a arms."""
    done = [r for r in rows if r["status"] == "ok"]
    order = list(ARMS)
    kinds = sorted({(r["arm"], r["labelled"]) for r in rows}, key=lambda x: (order.index(x[0]), x[1] is None, x[1]))
    lines = [
        f"### {task.name}: {task.title}",
        "",
        "| arm | role | labelled images | Dice (mean ± sd over seeds) | seeds | test images | segmenter steps | "
        "wall s | CPU s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, k in kinds:
        runs = [r for r in done if r["arm"] == arm and r["labelled"] == k]
        failed = [r for r in rows if r["arm"] == arm and r["labelled"] == k and r["status"] != "ok"]
        seeds = f"{len(runs)}" + (f" ({len(failed)} failed)" if failed else "")
        if not runs:
            lines.append(
                f"| {ARMS[arm].label} | {ARMS[arm].role} | {amount_text(k)} | failed | {seeds} | - | - | - | - | - |"
            )
            continue
        avg = {key: sum(r[key] for r in runs) / len(runs) for key in ("wall_s", "cpu_s", "peak_mib")}
        steps = sorted({r["segmenter_steps"] for r in runs})
        lines.append(
            f"| {ARMS[arm].label} | {ARMS[arm].role} | {amount_text(k)} | {_mean_sd([r['dice_mean'] for r in runs])} | "
            f"{seeds} | {runs[0]['test_images']} | {'/'.join(map(str, steps))} | {avg['wall_s']:.0f} | "
            f"{avg['cpu_s']:.0f} | {avg['peak_mib']:.0f} |"
        )
    lines += [
        "",
        "Each method against its like-for-like control (same bundle and recipe, unlabelled terms off, equal segmenter "
        "steps, paired by seed):",
        "",
        "| method | labelled images | method Dice | control Dice | mean paired Δ | 95% CI of paired Δ | reading "
        "| seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in order:
        a = ARMS[arm]
        if a.role != "method":
            continue
        if arm in task.not_applicable:
            continue
        for k in [x for x in task.labelled if x is not None]:
            if not (_ok(rows, arm, k) or _ok(rows, a.control, k)):
                continue
            diff, seeds, note = compare(rows, arm, a.control, k)
            mine = _mean_sd([_ok(rows, arm, k)[s]["dice_mean"] for s in seeds]) if seeds else "-"
            theirs = _mean_sd([_ok(rows, a.control, k)[s]["dice_mean"] for s in seeds]) if seeds else "-"
            if diff is None:
                lines.append(f"| {a.label} | {k} | {mine} | {theirs} | - | - | {note} | {len(seeds)} |")
            else:
                lines.append(
                    f"| {a.label} | {k} | {mine} | {theirs} | {diff.mean:+.3f} | {diff.interval_text()} | "
                    f"{_verdict(diff)} | {len(seeds)} |"
                )
    lines += ["", "The U-Net's gap to its ceiling (all labels), paired by seed:", ""]
    lines += [
        "| labelled images | U-Net Dice | ceiling Dice | mean paired Δ (ceiling - U-Net) | 95% CI of paired Δ "
        "| seeds |",
        "|---|---|---|---|---|---|",
    ]
    for k in [x for x in task.labelled if x is not None]:
        diff, seeds, note = compare(rows, "unet", "unet", None, k)
        if diff is None:
            continue
        low = _mean_sd([_ok(rows, "unet", k)[s]["dice_mean"] for s in seeds])
        top = _mean_sd([_ok(rows, "unet", None)[s]["dice_mean"] for s in seeds])
        lines.append(f"| {k} | {low} | {top} | {diff.mean:+.3f} | {diff.interval_text()} | {len(seeds)} |")
    free = [a for a in order if ARMS[a].role == "label-free" and a not in task.not_applicable]
    classical = [a for a in order if ARMS[a].role == "classical" and a not in task.not_applicable]
    pairs = [(a, b) for a in free for b in classical] + [(a, "unet") for a in free]
    table = []
    for a, b in pairs:
        other_k = 0 if b != "unet" else min(x for x in task.labelled if x is not None)
        diff, seeds, _ = compare(rows, a, b, 0, other_k)
        if diff is not None:
            versus = ARMS[b].label if b != "unet" else f"U-Net with {other_k} labelled images"
            table.append(
                f"| {ARMS[a].label} | {versus} | {diff.mean:+.3f} | {diff.interval_text()} | {_verdict(diff)} | "
                f"{len(seeds)} |"
            )
    if table:
        lines += [
            "",
            "Without labels, against the classical methods and the U-Net at the lowest labelled amount "
            "(paired by seed, same test images):",
            "",
        ]
        lines += [
            "| label-free method | against | mean paired Δ | 95% CI of paired Δ | reading | seeds |",
            "|---|---|---|---|---|---|",
        ]
        lines += table
    na = [(a, task.not_applicable[a]) for a in order if a in task.not_applicable]
    if na:
        lines += ["", "Not applicable here:", ""] + [f"- {ARMS[a].label} (`{a}`): n/a, {why}." for a, why in na]
    mipr = [r for r in done if r["arm"].startswith("mipr") and ARMS[r["arm"]].role == "method" and r.get("rounds")]
    if mipr:
        lines += [
            "",
            "MIPR per round (each round trains its segmenter anew, so the final model has the steps of one "
            "round; Dice, pairs accepted):",
            "",
        ]
        for r in sorted(mipr, key=lambda r: (r["arm"], r["labelled"], r["seed"])):
            parts = ", ".join(f"round {x['round']} {x['dice_mean']:.3f} ({x['pairs']} pairs)" for x in r["rounds"])
            lines.append(f"- `{r['arm']}`, {r['labelled']} labelled, seed {r['seed']}: {parts}")
            for x in r["rounds"]:
                if x.get("rules"):
                    rules = "; ".join(
                        f"{rule} accepts {v['accepted']}"
                        + (f" (true Dice {v['true_dice']:.3f})" if v["true_dice"] else "")
                        for rule, v in x["rules"].items()
                    )
                    lines.append(
                        f"  - round {x['round']} pseudo-labels against their hidden truth: all {x['true_dice_all']}; "
                        f"{rules}; Spearman rho with the true Dice: S's check {x['rho_check']}, "
                        f"G's reconstruction {x['rho_reconstruction']}"
                        + (
                            f"; wrong (true Dice < 0.5, {x['wrong_pairs']}) / right (> 0.8, {x['right_pairs']}) "
                            f"pseudo-labels: S's check {x['dice_wrong']} / {x['dice_right']}, G's error "
                            f"{x['reconstruction_error_wrong']} / {x['reconstruction_error_right']}"
                            if "wrong_pairs" in x
                            else ""
                        )
                    )
        for arm, k in sorted({(r["arm"], r["labelled"]) for r in mipr}):
            runs = [r for r in mipr if r["labelled"] == k and r["arm"] == arm]
            diff = paired_difference(
                [r["rounds"][-1]["dice_mean"] for r in runs], [r["rounds"][0]["dice_mean"] for r in runs]
            )
            lines.append(
                f"- `{arm}`, {k} labelled: last round - round 0 (the same run, equal final-model steps): "
                f"{diff.mean:+.3f}, 95% CI of paired Δ {diff.interval_text()}, {_verdict(diff)} ({len(runs)} seeds)"
            )
    adversarial = [r for r in done if r["arm"] == "adversarial" and r.get("pseudo_labels")]
    if adversarial:
        lines += [
            "",
            "Adversarial pseudo-labels on the unlabelled training images against their hidden labels, after the last "
            "epoch (coverage: share of the pixels with confidence > T_semi, which get a pseudo-label; precision: share "
            "of those whose pseudo-label is right; then per epoch, coverage/precision):",
            "",
        ]
        for r in sorted(adversarial, key=lambda r: (r["labelled"], r["seed"])):
            last, epochs = r["pseudo_labels"][-1], r["pseudo_labels"]
            lines.append(
                f"- {r['labelled']} labelled, seed {r['seed']}: coverage {_rate(last['coverage'])}, precision "
                f"{_rate(last['precision'])} (unconfident pixels right: {_rate(last['accuracy_unconfident'])}, "
                f"Dice of S {_rate(last['dice'])}, {last['items']} images"
                + (
                    f"; foreground: {_rate(last['foreground_coverage'])} of the true object pixels get a confident "
                    f"foreground pseudo-label, {_rate(last['foreground_precision'])} of those right"
                    if "foreground_coverage" in last
                    else ""
                )
                + "); per epoch "
                + " ".join(f"{_rate(x['coverage'], 2)}/{_rate(x['precision'], 2)}" for x in epochs)
            )
    total = sum(r["wall_s"] for r in rows)
    lines += [
        "",
        f"Budget: {task.steps} segmenter steps ({task.epochs} epochs) of batch {task.batch_size} per trained run; "
        "validation once at the end, last model evaluated. Dice: per test image, mean over the foreground classes; "
        "a run's Dice is its mean over the test images; the interval is Student's t over the per-seed paired "
        'differences (with 3 seeds, t = 4.30), and a difference whose interval contains 0 reads "no difference".'
        + (" QUICK RUN: reduced data and steps, a smoke test, not a result." if quick else ""),
        "",
        f"Machine: {machine}. Sum of run wall times: {total:.0f} s.",
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def plot(task: Task, rows: list[dict[str, Any]], path: Path) -> None:
    """Dice against labelled images, one line per arm (mean over seeds, error bars: sd over seeds); runs without
    labels as markers at 0; the ceiling at the right end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "ok"]
    ks = [k for k in task.labelled if k is not None]
    xpos = {0: 0, **{k: i + 1 for i, k in enumerate(ks)}, None: len(ks) + 1}
    fig, ax = plt.subplots(figsize=(11, 5.5))
    arms = [a for a in ARMS if any(r["arm"] == a for r in done)]
    for i, arm in enumerate(arms):
        points = []
        for k in sorted({r["labelled"] for r in done if r["arm"] == arm}, key=lambda v: xpos[v]):
            values = [r["dice_mean"] for r in done if r["arm"] == arm and r["labelled"] == k]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            points.append((xpos[k] + 0.04 * (i - len(arms) / 2), mean, sd))
        style = "--" if ARMS[arm].role == "control" else "-"
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            capsize=3,
            linestyle=style if len(points) > 1 else "none",
            marker="osD^vP*XhH<>p"[i % 13],
            color=f"C{i % 10}",
            label=ARMS[arm].label,
        )
    ax.set_xticks(list(xpos.values()), ["0"] + [str(k) for k in ks] + ["all"])
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test Dice (mean over seeds ± sd)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{task.name}: label efficiency at {task.steps} segmenter steps")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes, hiding no point
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def machine_text() -> str:
    import torch

    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread per run, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=list(TASKS), default="cluttered_mnist")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"arms to run, from {list(ARMS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0 1)")
    parser.add_argument(
        "--labelled", nargs="+", default=None, help="run only these labelled amounts of the task (e.g. 20 all)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--out", default=str(REPO / "outputs" / "label_efficiency"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="reduced data and steps: a smoke run of minutes")
    parser.add_argument("--force", action="store_true", help="rerun the runs already finished")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it counts as failed")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:  # the child
        result = run_child(json.loads(args.one))
        write_text_atomic(args.result, json.dumps(result, indent=1))
        return 0

    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    task = TASKS[args.task].scaled(args.quick)
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
    out = Path(args.out).resolve() / (task.name + ("_quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_task(task, Path(args.out).resolve() / "data" / ("quick" if args.quick else "full"), args.quick)
    specs = plan(task, data, args.arms, seeds, out)
    if args.labelled is not None:  # a share of the plan; the label-free and classical arms (amount 0) always stay
        wanted = {None if a == "all" else int(a) for a in args.labelled} | {0}
        specs = [s for s in specs if s["labelled"] in wanted]
    results_path = out / "results.json"
    command = " ".join(
        ["python benchmarks/experiments/label_efficiency_v1.py", shlex.join(argv if argv is not None else sys.argv[1:])]
    )
    start = time.perf_counter()
    run_specs(specs, results_path, args.jobs, command, args.timeout, force=args.force)
    print(f"this invocation: {time.perf_counter() - start:.0f} s", flush=True)
    shown = load_results(results_path)  # every finished run of this task, also those of other invocations
    text = markdown(task, shown, command, machine_text(), args.quick)
    write_text_atomic(out / "label_efficiency.md", text)
    plot(task, shown, out / "label_efficiency.png")
    print("\n" + text + f"\nwritten: {results_path}, {out / 'label_efficiency.md'}, {out / 'label_efficiency.png'}")
    return 0 if all(r["status"] == "ok" for r in shown) else 1


if __name__ == "__main__":
    sys.exit(main())
