"""Protocol v2 statistics of one task's results rows (:mod:`common.benchmark.results`): which rows are used, the
paired comparisons, their readings and the Holm correction.

* **Rows used** (:func:`select_rows`): failed rows are counted, never used. For each (arm, labelled) the rows used
  share one ``commit``: the clean rows (``dirty`` false) of the newest commit (newest by its latest ``finished``);
  rows of uncommitted code are used only when no clean row exists, and are then flagged.
* **Comparisons** (:func:`task_comparisons`), paired by seed on ``dice_mean`` over the seeds present in both arms:
  at every labelled amount k > 0 each method against its control and against ``unet`` at k (not computed when the
  two arms' ``segmenter_steps`` differ); each label-free arm against each classical arm, and against ``unet`` at its
  lowest labelled amount (no step rule for label-free arms).
* **Reading**: "better" / "worse" when the 95 % paired t interval excludes 0, else "no difference", whatever the
  sign of the mean. p from the two-sided paired t-test; Holm over every comparison of the task that has a p. Fewer
  than 2 paired seeds: no interval, no p.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from common.metrics.results import PairedDifference, paired_difference

__all__ = [
    "PROTOCOL_SEEDS",
    "REFERENCE_ARM",
    "ROLE_ORDER",
    "Comparison",
    "arm_info",
    "arm_order",
    "compare",
    "helps",
    "holm",
    "select_rows",
    "task_comparisons",
]

REFERENCE_ARM = "unet"
PROTOCOL_SEEDS = 5
ALPHA = 0.05
ROLE_ORDER = ("reference", "method", "control", "label-free", "classical")

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no difference"
NOT_COMPARED, TOO_FEW_SEEDS = "not compared", "too few seeds"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m p-values (i from 0) is
    multiplied by ``m - i``, capped at 1, and made non-decreasing along the sorted order. A comparison is
    significant at level alpha after Holm when its adjusted p is below alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of arm ``arm`` at ``labelled`` with arm ``other`` at ``other_labelled``.

    Attributes:
        seeds: the seeds present in both (the pairs).
        mean_a, mean_b: mean ``dice_mean`` of each arm over those seeds (NaN without seeds).
        diff: mean paired difference ``a - b`` with its 95 % t interval (NaN interval below 2 seeds); None when not
            compared.
        p: two-sided paired t-test p-value; None when not compared or below 2 seeds.
        p_holm: p after Holm over every comparison of the task with a p (set by :func:`task_comparisons`).
        reading: "better", "worse", "no difference", "too few seeds" or "not compared".
        note: why it is not compared, or other remarks ("" when none).
        kind: "control", "reference" (the U-Net), "recipe" (a control against the U-Net) or "classical": what
            ``other`` is to ``arm``.
        label, other_label: the arms' lines for the tables.
        role: the role of ``arm`` ("method" or "label-free").
        bundle: the bundle of ``arm`` (None for a classical method).
    """

    arm: str
    other: str
    labelled: int
    other_labelled: int
    seeds: tuple[int, ...]
    mean_a: float
    mean_b: float
    diff: PairedDifference | None
    p: float | None
    p_holm: float | None = None
    reading: str = NOT_COMPARED
    note: str = ""
    kind: str = ""
    label: str = ""
    other_label: str = ""
    role: str = ""
    bundle: str | None = None

    @property
    def significant_after_holm(self) -> bool:
        """True when the Holm-adjusted p is below 0.05."""
        return self.p_holm is not None and self.p_holm < ALPHA

    @property
    def below_protocol_seeds(self) -> bool:
        """True when fewer than the protocol's 5 seeds were paired."""
        return len(self.seeds) < PROTOCOL_SEEDS


def _ok(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def arm_info(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Arm key -> its newest row (by ``finished``), the source of its ``role``, ``label``, ``control`` and
    ``bundle``."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = newest.get(row["arm"])
        if current is None or row.get("finished", "") >= current.get("finished", ""):
            newest[row["arm"]] = row
    return newest


def arm_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The arms of ``rows`` in table order: references, then each method followed by its control, remaining
    controls, label-free arms, classical arms, anything else; alphabetical within each group."""
    info = arm_info(rows)
    by_role = {role: sorted(a for a, r in info.items() if r.get("role") == role) for role in ROLE_ORDER}
    order = list(by_role["reference"])
    for method in by_role["method"]:
        order.append(method)
        control = info[method].get("control")
        if control in info and control not in order:
            order.append(control)
    order += [a for a in by_role["control"] + by_role["label-free"] + by_role["classical"] if a not in order]
    return order + sorted(a for a in info if a not in order)


def _short(commit: str | None) -> str:
    return (commit or "unknown")[:7]


def select_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows the statistics use, and notes on those left out.

    Per (arm, labelled): failed rows (``status`` not "ok") are counted and left out; of the ok rows, the clean ones
    (``dirty`` false) are used when any exists, else the rows of uncommitted code (flagged); of those, only the rows
    of the newest commit (the one whose latest ``finished`` is newest) are used. Returns the used rows (sorted by
    arm, labelled, seed) and one note per (arm, labelled) that lost rows or runs on uncommitted code.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arm"], int(row["labelled"])), []).append(row)
    used: list[dict[str, Any]] = []
    notes: list[str] = []
    for (arm, labelled), group in sorted(groups.items()):
        where = f"{arm} @ {labelled}"
        failed = [r for r in group if r.get("status") != "ok"]
        if failed:
            seeds = ", ".join(str(r.get("seed")) for r in sorted(failed, key=lambda r: str(r.get("seed"))))
            notes.append(f"{where}: {len(failed)} failed run(s) not used (seeds {seeds}).")
        ok = _ok(group)
        if not ok:
            continue
        clean = [r for r in ok if not r.get("dirty")]
        pool = clean or ok
        latest: dict[str, str] = {}
        for r in pool:
            commit = r.get("commit") or ""
            latest[commit] = max(latest.get(commit, ""), r.get("finished", ""))
        commit = max(latest, key=lambda c: (latest[c], c))
        chosen = [r for r in pool if (r.get("commit") or "") == commit]
        used += sorted(chosen, key=lambda r: r["seed"])
        older = [r for r in pool if (r.get("commit") or "") != commit]
        dirty_left = len(ok) - len(pool)
        if older or dirty_left:
            parts = []
            if older:
                commits = ", ".join(sorted({_short(r.get("commit")) for r in older}))
                parts.append(f"{len(older)} of older commits ({commits})")
            if dirty_left:
                parts.append(f"{dirty_left} of uncommitted code")
            notes.append(
                f"{where}: used the {len(chosen)} run(s) of commit {_short(commit)}; left out {' and '.join(parts)}."
            )
        if not clean:
            notes.append(f"{where}: only runs of uncommitted code exist (commit {_short(commit)}, dirty): flagged.")
    return used, notes


def _dice_by_seed(rows: Sequence[dict[str, Any]], arm: str, labelled: int) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in _ok(rows) if r["arm"] == arm and int(r["labelled"]) == labelled}


def _steps_text(steps: set[Any]) -> str:
    return "/".join(str(s) for s in sorted(steps, key=str))


def compare(
    rows: Sequence[dict[str, Any]],
    arm: str,
    other: str,
    labelled: int,
    other_labelled: int | None = None,
    equal_steps: bool = True,
) -> Comparison:
    """Paired comparison of ``arm`` at ``labelled`` with ``other`` at ``other_labelled`` (default ``labelled``) on
    ``dice_mean``, over the seeds present in both (rows already selected by :func:`select_rows`; failed rows are
    ignored). With ``equal_steps`` the comparison is not computed when the arms' ``segmenter_steps`` differ."""
    other_labelled = labelled if other_labelled is None else other_labelled
    a, b = _dice_by_seed(rows, arm, labelled), _dice_by_seed(rows, other, other_labelled)
    seeds = tuple(sorted(set(a) & set(b)))
    values_a = [float(a[s]["dice_mean"]) for s in seeds]
    values_b = [float(b[s]["dice_mean"]) for s in seeds]
    mean_a = float(np.mean(values_a)) if seeds else math.nan
    mean_b = float(np.mean(values_b)) if seeds else math.nan
    base = Comparison(arm, other, labelled, other_labelled, seeds, mean_a, mean_b, None, None)
    if not seeds:
        missing = [f"{x} @ {k}" for x, k, runs in ((arm, labelled, a), (other, other_labelled, b)) if not runs]
        why = f"no runs of {' and '.join(missing)}" if missing else "no seed in both arms"
        return replace(base, note=f"not compared: {why}")
    if equal_steps:
        steps_a = {a[s].get("segmenter_steps") for s in seeds}
        steps_b = {b[s].get("segmenter_steps") for s in seeds}
        if steps_a != steps_b or len(steps_a) != 1:
            text = f"{_steps_text(steps_a)} vs {_steps_text(steps_b)}"
            return replace(base, note=f"not compared: unequal segmenter steps ({text})")
    diff = paired_difference(values_a, values_b)
    if len(seeds) < 2:
        return replace(base, diff=diff, reading=TOO_FEW_SEEDS, note="1 paired seed: no interval, no p")
    d = np.asarray(values_a) - np.asarray(values_b)
    if np.all(d == d[0]):  # no spread: the t statistic is undefined; the interval is the point itself
        p = 1.0 if d[0] == 0 else 0.0
        note = "the same difference at every seed"
    else:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(values_a, values_b).pvalue)
        note = ""
    if diff.excludes_zero:
        reading = BETTER if diff.mean > 0 else WORSE
    else:
        reading = NO_DIFFERENCE
    return replace(base, diff=diff, p=p, reading=reading, note=note)


def _labelled_amounts(rows: Sequence[dict[str, Any]], arm: str) -> list[int]:
    return sorted({int(r["labelled"]) for r in _ok(rows) if r["arm"] == arm})


def task_comparisons(rows: Sequence[dict[str, Any]]) -> list[Comparison]:
    """Every comparison of protocol v2 for one task's rows (selected here by :func:`select_rows`), Holm applied
    over all of those with a p-value. Order: per method (table order), per labelled amount, control then U-Net;
    then each control against the U-Net (kind ``recipe``: the recipe's effect without its unlabelled terms);
    then per label-free arm, each classical arm, then the U-Net at its lowest labelled amount."""
    used, _ = select_rows(rows)
    info = arm_info(used)
    order = arm_order(used)
    unet = info.get(REFERENCE_ARM)
    unet_amounts = [k for k in _labelled_amounts(used, REFERENCE_ARM) if k > 0]

    def labelled_comparison(arm: str, other: str, k: int, other_k: int, kind: str, equal_steps: bool) -> Comparison:
        c = compare(used, arm, other, k, other_k, equal_steps=equal_steps)
        other_label = info[other].get("label", other) if other in info else other
        return replace(
            c,
            kind=kind,
            label=info[arm].get("label", arm),
            other_label=other_label,
            role=info[arm].get("role", ""),
            bundle=info[arm].get("bundle"),
        )

    out: list[Comparison] = []
    recipes: list[tuple[str, int]] = []
    for arm in order:
        if info[arm].get("role") != "method":
            continue
        control = info[arm].get("control")
        for k in _labelled_amounts(used, arm):
            if k <= 0:
                continue
            if control:
                out.append(labelled_comparison(arm, control, k, k, "control", True))
            out.append(labelled_comparison(arm, REFERENCE_ARM, k, k, "reference", True))
    # each control against the U-Net (whether or not its method ran): what the recipe does without unlabelled terms
    for arm in order:
        if info[arm].get("role") == "control":
            recipes += [(arm, k) for k in _labelled_amounts(used, arm) if k > 0]
    out += [labelled_comparison(c, REFERENCE_ARM, k, k, "recipe", True) for c, k in recipes]
    classical = [a for a in order if info[a].get("role") == "classical"]
    for arm in order:
        if info[arm].get("role") != "label-free":
            continue
        for other in classical:
            for k in _labelled_amounts(used, arm):
                out.append(labelled_comparison(arm, other, k, k, "classical", False))
        if unet is not None and unet_amounts:
            for k in _labelled_amounts(used, arm):
                out.append(labelled_comparison(arm, REFERENCE_ARM, k, unet_amounts[0], "reference", False))
    with_p = [i for i, c in enumerate(out) if c.p is not None]
    adjusted = holm([out[i].p for i in with_p])
    for i, p_holm in zip(with_p, adjusted):
        out[i] = replace(out[i], p_holm=p_holm)
    return out


def helps(comparisons: Sequence[Comparison], arm: str, labelled: int) -> bool:
    """True when ``arm`` at ``labelled`` is better than both its control and the U-Net (interval readings)."""
    readings = {c.kind: c.reading for c in comparisons if c.arm == arm and c.labelled == labelled}
    return readings.get("control") == BETTER and readings.get("reference") == BETTER
