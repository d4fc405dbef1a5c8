"""The papers' own training schedules as benchmark budgets (``--budget paper``), and the plan's estimated hours.

Each method's schedule, as its paper or its authors' code states it (iterations or epochs, batch), is a function of
the task's data (its numbers of labelled and unlabelled images) returning the :class:`~.protocol.Budget` of one
invocation. Every trained arm of that invocation gets it: the method, its like-for-like control and the supervised
U-Net (``unet``) train for the same segmenter steps, as protocol v2 requires (:mod:`.protocol`). One invocation holds
the arms of one method only, so budgets never mix in one results table (``<task>_paper_<method>``).

* UniMatch (Yang et al., CVPR 2023; authors' code LiheYoung/UniMatch ``more-scenarios/medical``, ``acdc.yaml`` and
  ``unimatch.py``): 300 epochs over the unlabelled images, batch 12 labelled + 12 unlabelled, SGD with poly decay;
  an epoch is ``len(trainloader_u)``, ``drop_last=True``: ``floor(unlabelled / 12)`` iterations.
* Adversarial (Tan et al., 2022, following Hung et al., BMVC 2018, code hfslyc/AdvSemiSeg): 20,000 iterations of
  batch 10, the semi-supervised phase after 5,000 (here 20 epochs of 1,000: the arm starts it after a quarter).
* MIPR (Dai, Zhu et al., arXiv 2204.10513, section 4): the segmenter 100 epochs per training (initial lr 1e-3,
  cosine), 3 iterations (rounds) after the first training, the generator 500 epochs; the batch is not stated.
* AF-Seg (Yu, Dong et al., ISBI 2020, section 3): 100 epochs, constant learning rate for 50, linear decay to 0 over
  50 more; the batch is not stated (pix2pix's 1, the bundle's default).
* ACWE (Chen & Frey, MIDL 2020; code junyuchen245/Unsuprevised_Seg_via_CNN): batch 20 (the method specification,
  from the authors' code); the epochs are not stated in the paper: the bundle's default 30.
* Translation (Vorontsov et al., MedIA 2022, section 4, "Optimization" and "Data batches"): 300 epochs on the
  synthetic data (brain 500, liver 200), an epoch ending when every target-present image has been seen once, batch
  20 target-present + 20 target-absent images.

The estimate: per arm, the planned steps times the seconds per step of the task's finished runs of the default
budget (``wall_s / segmenter_steps``, mean over that arm's rows, scaled by the batch ratio), on the machine those rows
ran on; a classical arm, its mean seconds per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .arms import ARMS
from .dataset import DatasetInfo
from .protocol import Budget
from .runner import plan

REFERENCE_BUNDLE = "supervised_seg"  # ``unet``: takes the schedule of the method it stands beside


@dataclass(frozen=True)
class PaperBudget(Budget):
    """A :class:`Budget` from a paper's schedule.

    Attributes:
        method: the schedule's key in :data:`SCHEDULES`.
        mipr_rounds, generator_epochs: MIPR's annotation rounds and generator epochs (``None`` for other methods);
            read by :func:`common.benchmark.arms._mipr`.
    """

    method: str = ""
    mipr_rounds: int | None = None
    generator_epochs: int | None = None

    def as_row(self) -> dict[str, Any]:
        return {k: v for k, v in super().as_row().items() if v is not None}


@dataclass(frozen=True)
class PoolCounts:
    """Images a run trains on: ``labelled`` (its labelled share) and ``unlabelled`` (the rest of the pool and the
    folder's unlabelled images). Images are datalist items: 2D images, or volumes on 3D data."""

    labelled: int
    unlabelled: int

    @property
    def total(self) -> int:
        return self.labelled + self.unlabelled


def pool_counts(data: DatasetInfo, labelled_cases: int) -> PoolCounts:
    """The images of a run with ``labelled_cases`` labelled cases (cases of several items count their mean items)."""
    items, cases = len(data.pool), max(len(data.pool_cases), 1)
    labelled = min(round(labelled_cases * items / cases), items)
    return PoolCounts(labelled, items - labelled + len(data.unlabeled))


def _budget(method: str, base: Budget, epochs: int, per_epoch: int, batch: int, **extra: Any) -> PaperBudget:
    """``epochs`` epochs of ``per_epoch`` (at least 1) iterations of ``batch``, at the task's patch side and widths."""
    per_epoch = max(per_epoch, 1)
    return PaperBudget(
        f"paper_{method}", epochs * per_epoch, epochs, batch, base.image_size, base.unet_channels, method, **extra
    )


UNIMATCH_EPOCHS, UNIMATCH_BATCH = 300, 12
ADVERSARIAL_ITERATIONS, ADVERSARIAL_SEMI_START, ADVERSARIAL_BATCH, ADVERSARIAL_EPOCHS = 20000, 5000, 10, 20
MIPR_EPOCHS_PER_ROUND, MIPR_ROUNDS, MIPR_GENERATOR_EPOCHS, MIPR_BATCH = 100, 3, 500, 8
AF_SEG_CONSTANT_EPOCHS, AF_SEG_DECAY_EPOCHS, AF_SEG_BATCH = 50, 50, 1
ACWE_EPOCHS, ACWE_BATCH = 30, 20
TRANSLATION_EPOCHS, TRANSLATION_BATCH = 300, 20


def unimatch_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """UniMatch (Yang et al., CVPR 2023; LiheYoung/UniMatch ``more-scenarios/medical``): 300 epochs of
    ``floor(unlabelled / 12)`` iterations (the authors' unlabelled loader, ``drop_last=True``; the labelled list is
    repeated to its length), batch 12 labelled + 12 unlabelled. Without unlabelled images, epochs of the labelled."""
    images = counts.unlabelled or counts.labelled
    return _budget("unimatch", base, UNIMATCH_EPOCHS, images // UNIMATCH_BATCH, UNIMATCH_BATCH)


def adversarial_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """Hung et al. (BMVC 2018, hfslyc/AdvSemiSeg), whose defaults Tan et al. (2022) follow: 20,000 iterations of batch
    10 (labelled and unlabelled), the semi-supervised phase after 5,000; as 20 epochs of 1,000 iterations, so that
    the arm's ``semi_start_epoch`` (a quarter of the epochs) falls at iteration 5,000. Independent of the data."""
    per_epoch = ADVERSARIAL_ITERATIONS // ADVERSARIAL_EPOCHS
    return _budget("adversarial", base, ADVERSARIAL_EPOCHS, per_epoch, ADVERSARIAL_BATCH)


def mipr_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """MIPR (Dai, Zhu et al., 2022, section 4: "epoch is 100" for S, "500 epochs" for G; 3 iterations in Table 1):
    the segmenter trained 4 times (the first training on the labelled images, then once after each of 3 rounds),
    100 epochs each of ``ceil(images / 8)`` iterations, ``images`` the labelled and unlabelled ones (a round's
    training set once its pairs are in; the paper's 200 labelled + up to 1,800 pairs); the generator 500 epochs. The
    segmenter's batch is not stated: the bundle's 8."""
    per_epoch = math.ceil(counts.total / MIPR_BATCH)
    epochs = MIPR_EPOCHS_PER_ROUND * (MIPR_ROUNDS + 1)
    return _budget(
        "mipr", base, epochs, per_epoch, MIPR_BATCH, mipr_rounds=MIPR_ROUNDS, generator_epochs=MIPR_GENERATOR_EPOCHS
    )


def af_seg_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """AF-Seg (Yu, Dong et al., ISBI 2020, section 3): 100 epochs (50 at a constant learning rate, 50 decaying
    linearly to 0) over the training images, all labelled and unlabelled ones (it reads no label); the batch is not
    stated: 1 (pix2pix's convention, the bundle's default), so an epoch is one iteration per image."""
    epochs = AF_SEG_CONSTANT_EPOCHS + AF_SEG_DECAY_EPOCHS
    return _budget("af_seg", base, epochs, math.ceil(counts.total / AF_SEG_BATCH), AF_SEG_BATCH)


def acwe_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """ACWE (Chen & Frey, MIDL 2020): batch 20 (Adam 5e-4; the method specification, from the authors' code); the
    paper states no epochs and its authors' code is not among the shared papers: the bundle's default, 30 epochs of
    ``ceil(images / 20)`` iterations over the labelled and unlabelled images (modes 1 and 4 train on both)."""
    return _budget("acwe", base, ACWE_EPOCHS, math.ceil(counts.total / ACWE_BATCH), ACWE_BATCH)


def translation_budget(counts: PoolCounts, base: Budget) -> PaperBudget:
    """Translation (Vorontsov et al., MedIA 2022, section 4): 300 epochs (the synthetic data's; brain 500, liver
    200), an epoch being one pass over the target-present images, labelled and unlabelled (the pool), of ``ceil(images
    / 20)`` iterations, each with 20 target-present and 20 target-absent images (the arm keeps the last, smaller
    batch)."""
    per_epoch = math.ceil(counts.total / TRANSLATION_BATCH)
    return _budget("translation", base, TRANSLATION_EPOCHS, per_epoch, TRANSLATION_BATCH)


@dataclass(frozen=True)
class PaperSchedule:
    """One method's paper schedule.

    Attributes:
        method: key (``--budget paper`` results go to ``<task>_paper_<method>``); ``bundle``: its arms' bundle.
        iterations, batch: the schedule in words, for the plan and the docs table; ``source``: where it is stated.
        make: ``(PoolCounts, the task's budget) -> PaperBudget`` (patch side and widths stay the task's).
        note: what the profile leaves as the benchmark has it, or what the estimate misses.
    """

    method: str
    bundle: str
    iterations: str
    batch: str
    source: str
    make: Callable[[PoolCounts, Budget], PaperBudget]
    note: str = ""

    def budget(self, counts: PoolCounts, base: Budget) -> PaperBudget:
        return self.make(counts, base)

    def as_row(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ("method", "bundle", "iterations", "batch", "source", "note")}


SCHEDULES: dict[str, PaperSchedule] = {
    s.method: s
    for s in (
        PaperSchedule(
            "unimatch",
            "unimatch_semi_seg",
            "300 epochs of floor(unlabelled / 12) iterations, poly decay",
            "12 labelled + 12 unlabelled",
            "Yang et al., CVPR 2023; authors' code LiheYoung/UniMatch more-scenarios/medical (acdc.yaml, unimatch.py)",
            unimatch_budget,
        ),
        PaperSchedule(
            "adversarial",
            "adversarial_semi_seg",
            "20,000 iterations (20 epochs of 1,000), semi-supervised phase after 5,000",
            "10 labelled + 10 unlabelled",
            "Hung et al., BMVC 2018 (code hfslyc/AdvSemiSeg), whose defaults Tan et al. 2022 follow",
            adversarial_budget,
            "Tan et al. state 5,000 epochs, the semi phase after 1,500, without the epoch's size",
        ),
        PaperSchedule(
            "mipr",
            "mipr_auto_annotation",
            "segmenter 100 epochs of ceil(images / 8) per training, 3 rounds (4 trainings); generator 500 epochs",
            "8 (not stated; the bundle's)",
            "Dai, Zhu et al., arXiv 2204.10513, section 4 and Table 1",
            mipr_budget,
            "the estimate scales the default rows' 20 generator epochs per round by segmenter steps only",
        ),
        PaperSchedule(
            "af_seg",
            "af_seg",
            "100 epochs of one iteration per image: 50 constant + 50 linear decay",
            "1 (not stated; pix2pix's, the bundle's)",
            "Yu, Dong et al., ISBI 2020, section 3",
            af_seg_budget,
            "stage 2 (DSP, DIP) keeps the benchmark's 50 steps each",
        ),
        PaperSchedule(
            "acwe",
            "acwe_unsup_seg",
            "30 epochs of ceil(images / 20) (epochs not stated: the bundle's default)",
            "20",
            "Chen & Frey, MIDL 2020 (batch: authors' code junyuchen245/Unsuprevised_Seg_via_CNN, per the spec)",
            acwe_budget,
        ),
        PaperSchedule(
            "translation",
            "translation_semi_seg",
            "300 epochs (synthetic data; brain 500, liver 200) of ceil(target-present images / 20)",
            "20 target-present + 20 target-absent",
            "Vorontsov et al., MedIA 2022, section 4 (Optimization; Data batches)",
            translation_budget,
            "the network width stays the task's (the bundle's CPU 0.25; the paper's 1.0 is full_schedule.json)",
        ),
    )
}


def schedules_markdown() -> str:
    """The table of :data:`SCHEDULES` (method, bundle, iterations or epochs, batch, source) for the docs page."""
    lines = ["| method | bundle | iterations / epochs | batch | source |", "|---|---|---|---|---|"]
    lines += [f"| {s.method} | `{s.bundle}` | {s.iterations} | {s.batch} | {s.source} |" for s in SCHEDULES.values()]
    return "\n".join(lines) + "\n"


def schedule_for_arms(arms: Sequence[str]) -> PaperSchedule:
    """The paper schedule of the one method whose arms ``arms`` names (its method, control and label-free arms share
    its bundle; ``unet`` and the classical arms go with any); ``ValueError`` naming the methods when they are several
    or none."""
    by_bundle = {s.bundle: s for s in SCHEDULES.values()}
    found: dict[str, list[str]] = {}
    for key in arms:
        if key not in ARMS:
            raise ValueError(f"unknown arm {key!r}; choose from {list(ARMS)}")
        bundle = ARMS[key].bundle
        if bundle is None or bundle == REFERENCE_BUNDLE:
            continue
        if bundle not in by_bundle:
            raise ValueError(f"--budget paper: arm {key} ({bundle}) has no paper schedule in common.benchmark.budgets")
        found.setdefault(by_bundle[bundle].method, []).append(key)
    example = "e.g. --arms unimatch unimatch_control unet"
    if len(found) > 1:
        named = "; ".join(
            f"{m} ({', '.join(keys)}: {SCHEDULES[m].iterations}, batch {SCHEDULES[m].batch})"
            for m, keys in found.items()
        )
        raise ValueError(
            f"--budget paper gives every trained arm one method's paper schedule, and these arms are of "
            f"{len(found)} methods with different schedules: {named}. Name the arms of one method (its method, its "
            f"control, optionally unet and classical arms), {example}."
        )
    if not found:
        raise ValueError(
            f"--budget paper needs the arms of one method (whose schedule the U-Net gets too); {list(arms)} name "
            f"none. Methods with a paper schedule: {list(SCHEDULES)}; {example}."
        )
    return SCHEDULES[next(iter(found))]


def paper_plan(
    data: DatasetInfo,
    task: str,
    schedule: PaperSchedule,
    base: Budget,
    arms: Sequence[str],
    labelled: Sequence[int],
    seeds: Sequence[int],
    runs_dir: Path,
    not_applicable: dict[str, str],
    many_objects: bool = True,
    eval_batch_size: int = 1,
) -> tuple[list[dict[str, Any]], dict[int, PaperBudget]]:
    """The specs of :func:`common.benchmark.runner.plan` with ``schedule``'s budget, computed per labelled amount
    (UniMatch's epoch depends on the unlabelled images; label-free and classical arms get that of 0 labelled cases),
    and the budget of each amount. ``ValueError`` when a trained arm plans other steps than the budget's: every
    trained arm of the invocation gets the paper's steps. ``eval_batch_size``: test images per evaluation batch (as
    :func:`~common.benchmark.runner.plan`)."""
    budgets = {k: schedule.budget(pool_counts(data, k), base) for k in sorted({0, *labelled})}
    with_labels = [a for a in arms if a in ARMS and ARMS[a].labels]
    without = [a for a in arms if a not in with_labels]
    specs: list[dict[str, Any]] = []
    for k in labelled:
        specs += plan(
            data, task, budgets[k], with_labels, [k], seeds, runs_dir, not_applicable, many_objects, eval_batch_size
        )
    if without:
        specs += plan(
            data, task, budgets[0], without, [0], seeds, runs_dir, not_applicable, many_objects, eval_batch_size
        )
    for spec in specs:
        steps = spec["budget"]["steps"]
        if spec["bundle"] is not None and spec["planned_steps"] != steps:
            raise ValueError(f"{spec['id']} plans {spec['planned_steps']} segmenter steps, the paper budget {steps}.")
        rounds = spec["budget"].get("mipr_rounds")
        if spec["arm"] == "mipr" and rounds:
            spec["label"] = f"MIPR, {rounds} annotation rounds (mipr_auto_annotation)"  # not in the spec hash
    return specs, {k: budgets[k] for k in labelled}


# ---------------------------------------------------------------------------------------------------------------------
# the estimate
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Seconds of one run from the finished rows of the default budget: ``seconds`` (None: no rows), ``basis`` (how)."""

    seconds: float | None
    basis: str


def estimate_run(spec: Mapping[str, Any], reference_rows: Sequence[Mapping[str, Any]]) -> Estimate:
    """A run's seconds: its planned steps times the mean ``wall_s / segmenter_steps`` of the default-budget rows of
    its arm, scaled by its batch over theirs (a step's work grows with the batch); a classical arm's mean ``wall_s``."""
    rows = [
        r for r in reference_rows
        if r.get("status") == "ok" and r.get("arm") == spec["arm"] and (r.get("budget") or {}).get("name") == "default"
        and r.get("wall_s")
    ]  # fmt: skip
    if spec["bundle"] is None:
        if not rows:
            return Estimate(None, "no estimate (no default-budget row of this arm)")
        seconds = sum(r["wall_s"] for r in rows) / len(rows)
        return Estimate(seconds, f"{seconds:.0f} s per run, mean of {len(rows)} default rows (no training)")
    rows = [r for r in rows if r.get("segmenter_steps")]
    if not rows:
        return Estimate(None, "no estimate (no default-budget row of this arm)")
    batch = spec["budget"]["batch_size"]
    per_step = [r["wall_s"] / r["segmenter_steps"] * batch / r["budget"]["batch_size"] for r in rows]
    seconds_per_step = sum(per_step) / len(per_step)
    batches = sorted({r["budget"]["batch_size"] for r in rows})
    return Estimate(
        spec["planned_steps"] * seconds_per_step,
        f"{seconds_per_step:.3f} s per step (mean of {len(rows)} default rows at batch "
        f"{'/'.join(map(str, batches))}, scaled to batch {batch})",
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def plan_lines(
    specs: Sequence[Mapping[str, Any]],
    reference_rows: Sequence[Mapping[str, Any]],
    reference: str,
    results_file: str,
    schedule: PaperSchedule | None = None,
    jobs: int = 1,
) -> list[str]:
    """The plan as lines: per arm and labelled amount its runs, steps (epochs x iterations), batch and estimated
    hours; then the total. ``reference``: where ``reference_rows`` were read (for the lines that say so)."""
    budget_names = sorted({s["budget"]["name"] for s in specs})
    out = [f"plan: {len(specs)} runs, budget {', '.join(budget_names)} -> {results_file}"]
    if schedule is not None:
        out.append(
            f"  paper schedule of {schedule.method}: {schedule.iterations}; batch {schedule.batch}; {schedule.source}"
        )
        if schedule.note:
            out.append(f"  note: {schedule.note}")
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for s in specs:
        groups.setdefault((s["arm"], s["labelled"]), []).append(s)
    total, known, unknown = 0.0, 0, 0
    for (arm, k), group in groups.items():
        spec = group[0]
        b = spec["budget"]
        if spec["bundle"] is None:
            what = "classical, no training"
        else:
            per_epoch = b["steps"] // b["epochs"]
            what = f"{spec['planned_steps']} steps ({b['epochs']} epochs x {per_epoch}), batch {b['batch_size']}"
        estimate = estimate_run(spec, reference_rows)
        if estimate.seconds is None:
            unknown += len(group)
            cost = estimate.basis
        else:
            known += len(group)
            total += estimate.seconds * len(group)
            cost = (
                f"{_hours(estimate.seconds)} per run, {_hours(estimate.seconds * len(group))} in all; {estimate.basis}"
            )
        out.append(f"  {arm} @ {k} labelled: {len(group)} runs x {what}: {cost}")
    machines = sorted({str(r["machine"]) for r in reference_rows if r.get("machine")})
    out.append(
        f"estimated: {_hours(total)} for {known} of {len(specs)} runs"
        + (f" ({unknown} without an estimate)" if unknown else "")
        + (f", about {_hours(total / jobs)} at {jobs} runs at a time" if jobs > 1 else "")
        + f"; seconds per step of the default-budget rows in {reference}"
        + (f", run on {' / '.join(machines)}" if machines else " (none there)")
    )
    return out
