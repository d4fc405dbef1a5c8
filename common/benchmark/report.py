"""The benchmark's report, generated from the results files alone: per-task tables and plots, the verdict matrix,
one line per bundle, written into the generated blocks of the documentation pages.

A generated block of a Markdown page is the text between ``<!-- BEGIN GENERATED: <name> -->`` and
``<!-- END GENERATED: <name> -->``; :func:`regenerate` rewrites only those (``verdicts`` and ``task:<task>`` on the
benchmark page, ``benchmark`` on a bundle page) and leaves the rest of each page as it is. The same results files
give the same bytes (pages and plots), so a rerun of the report leaves ``git diff`` empty.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic_write import atomic_path, write_text_atomic
from common.benchmark.results import RESULTS_NAME, read_rows, results_path
from common.benchmark.statistics import (
    BETTER,
    NO_DIFFERENCE,
    NOT_COMPARED,
    PROTOCOL_SEEDS,
    REFERENCE_ARM,
    TOO_FEW_SEEDS,
    WORSE,
    Comparison,
    arm_info,
    arm_order,
    helps,
    select_rows,
    task_comparisons,
)

__all__ = [
    "TASK_INFO_NAME",
    "arm_table",
    "block_names",
    "bundle_lines",
    "comparison_table",
    "plot_task",
    "read_task_info",
    "regenerate",
    "replace_blocks",
    "task_markdown",
    "verdict_matrix",
]

TASK_INFO_NAME = "task.json"
BELOW_SEEDS = "†"
BELOW_SEEDS_TEXT = f"{BELOW_SEEDS} below the protocol's {PROTOCOL_SEEDS} seeds"
_BLOCK = re.compile(r"<!-- BEGIN GENERATED: (?P<name>\S+) -->\n(?P<body>.*?)<!-- END GENERATED: (?P=name) -->", re.S)
_BEGIN = re.compile(r"<!-- BEGIN GENERATED: (?P<name>\S+) -->")
_SHORT_READING = {NO_DIFFERENCE: "no diff", NOT_COMPARED: "n/c", TOO_FEW_SEEDS: "1 seed"}


# ---------------------------------------------------------------------------------------------------------- formats
def _mean_sd(values: Sequence[float]) -> str:
    """``"0.588 ± 0.008"`` (sd over seeds, ddof 1), ``"0.588"`` for one value, ``"-"`` for none."""
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}"


def _mean_int(rows: Sequence[dict[str, Any]], key: str) -> str:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return f"{np.mean(values):.0f}" if values else "-"


def _distinct(rows: Sequence[dict[str, Any]], key: str) -> str:
    values = sorted({r.get(key) for r in rows}, key=str)
    return " / ".join("-" if v is None else str(v) for v in values)


def _seeds_text(n: int) -> str:
    return f"{n} {BELOW_SEEDS}" if n < PROTOCOL_SEEDS else str(n)


def _p_text(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _holm_text(c: Comparison) -> str:
    if c.p_holm is None:
        return "-"
    return _p_text(c.p_holm) + (" *" if c.significant_after_holm else "")


def _reading_text(c: Comparison) -> str:
    if c.note.startswith("not compared"):
        return c.note
    if c.reading in ("better", "worse"):
        return f"**{c.reading}**"
    return c.reading


def _commits(rows: Sequence[dict[str, Any]]) -> str:
    commits = sorted({(r.get("commit") or "unknown")[:7] for r in rows})
    dirty = " (uncommitted code)" if any(r.get("dirty") for r in rows) else ""
    return ", ".join(f"`{c}`" for c in commits) + dirty


# ----------------------------------------------------------------------------------------------------- task tables
def arm_table(used: Sequence[dict[str, Any]]) -> str:
    """One line per (arm, labelled) of the used rows: Dice mean ± sd over seeds, seeds, test cases, segmenter steps,
    mean wall / CPU s, mean peak MiB, commit(s)."""
    info = arm_info(used)
    lines = [
        "| arm | role | labelled cases | Dice (mean ± sd over seeds) | seeds | test cases | segmenter steps | wall s "
        "| CPU s | peak MiB | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arm_order(used):
        for k in sorted({int(r["labelled"]) for r in used if r["arm"] == arm}):
            group = [r for r in used if r["arm"] == arm and int(r["labelled"]) == k]
            cells = [
                f"{info[arm].get('label', arm)} (`{arm}`)",
                str(info[arm].get("role", "-")),
                str(k),
                _mean_sd([float(r["dice_mean"]) for r in group]),
                _seeds_text(len(group)),
                _distinct(group, "test_cases"),
                _distinct(group, "segmenter_steps"),
                _mean_int(group, "wall_s"),
                _mean_int(group, "cpu_s"),
                _mean_int(group, "peak_mib"),
                _commits(group),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(comparisons: Sequence[Comparison], first_column: str) -> str:
    """The comparisons as a table: arm, labelled, against, both means, Δ mean, 95 % CI, reading, p, Holm p (``*``:
    significant at 0.05 after Holm), seeds."""
    lines = [
        f"| {first_column} | labelled cases | against | Dice | its Dice | Δ mean | 95% CI of paired Δ | reading | p "
        "| Holm p | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        against = f"{c.other_label} (`{c.other}`)"
        if c.other_labelled != c.labelled:
            against += f" at {c.other_labelled}"
        compared = c.diff is not None
        cells = [
            f"{c.label} (`{c.arm}`)",
            str(c.labelled),
            against,
            f"{c.mean_a:.3f}" if c.seeds else "-",
            f"{c.mean_b:.3f}" if c.seeds else "-",
            f"{c.diff.mean:+.3f}" if compared else "-",
            c.diff.interval_text() if compared else "-",
            _reading_text(c),
            _p_text(c.p),
            _holm_text(c),
            _seeds_text(len(c.seeds)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_markdown(
    task: str, title: str, rows: list[dict[str, Any]], task_info: dict[str, Any] | None = None, plot: str | None = None
) -> str:
    """The generated report of one task: the plot (when ``plot``, a link relative to the page, is given), the table
    per arm x labelled amount, the methods' comparisons (with the methods that help), the label-free arms against
    the classical ones, the rows left out, and the arms not applicable here (``task_info["not_applicable"]``, the
    runner's ``results/<task>/task.json``)."""
    used, notes = select_rows(rows)
    comparisons = task_comparisons(rows)
    failed = sum(1 for r in rows if r.get("status") != "ok")
    out: list[str] = []
    if plot:
        out += [f"![{task}: {title}; test Dice against labelled cases, mean over seeds ± sd]({plot})", ""]
    dataset = (task_info or {}).get("dataset") or {}
    scalars = [f"{k}: {v}" for k, v in sorted(dataset.items()) if isinstance(v, (str, int, float))]
    if scalars:
        out += [f"Data: {'; '.join(scalars)}.", ""]
    out += [
        f"{len(used)} runs used ({failed} failed, {len(rows) - len(used) - failed} of other code versions left out). "
        f"Dice is the mean over the test cases of a run; {BELOW_SEEDS_TEXT}.",
        "",
        arm_table(used) if used else "No finished runs yet.",
        "",
    ]
    with_p = sum(1 for c in comparisons if c.p is not None)
    out += [
        f"The tables below hold {with_p} comparisons with a p-value (paired t-test over the seeds present in both "
        f"arms, two-sided); `*` marks those that stay significant at 0.05 after Holm over all {with_p}. The reading "
        "is the 95% interval's: **better** / **worse** when it excludes 0, else no difference, whatever the sign.",
        "",
    ]
    methods = [c for c in comparisons if c.role == "method"]
    free = [c for c in comparisons if c.role == "label-free"]
    if methods:
        out += [
            "Each method against its like-for-like control and against the U-Net (`unet`) at the same labelled "
            "amount (equal segmenter steps required):",
            "",
            comparison_table(methods, "method"),
            "",
        ]
        helping = sorted({(c.labelled, c.arm) for c in methods if helps(comparisons, c.arm, c.labelled)})
        if helping:
            names = ", ".join(f"`{arm}` at {k}" for k, arm in helping)
            out += [f"Helps (better than both its control and the U-Net): {names}.", ""]
        else:
            out += ["No method is better than both its control and the U-Net at any labelled amount.", ""]
    recipes = [c for c in comparisons if c.kind == "recipe"]
    if recipes:
        out += [
            "Each control (its method's recipe with the unlabelled terms off) against the U-Net: what the recipe "
            "itself does, before any unlabelled image:",
            "",
            comparison_table(recipes, "control"),
            "",
        ]
    if free:
        out += [
            "Each label-free arm against each classical method (and the U-Net at its lowest labelled amount, a "
            "secondary line):",
            "",
            comparison_table(free, "label-free arm"),
            "",
        ]
    out += coverage_lines(used)
    if notes:
        out += ["Rows left out or flagged:", ""] + [f"- {n}" for n in notes] + [""]
    not_applicable = (task_info or {}).get("not_applicable") or {}
    if not_applicable:
        out += ["Not applicable to this task:", ""]
        out += [f"- `{arm}`: {reason}" for arm, reason in sorted(not_applicable.items())] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def coverage_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per semi-supervised arm and labelled amount: the share of unlabelled pixels above its confidence threshold
    (those that get a pseudo-label) at the first and last epoch, mean over seeds (rows with ``coverage_per_epoch``);
    where the rows hold the diagnostic of :mod:`common.benchmark.diagnostics`, the last network's confident pixels
    on unlabelled images and their precision against the hidden labels."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("role") != "method":  # a control's unlabelled terms are off: its coverage is 0 by construction
            continue
        if any(v is not None for v in r.get("coverage_per_epoch") or []):
            groups.setdefault((r["arm"], r["labelled"]), []).append(r)
    if not groups:
        return []
    out = ["Share of unlabelled pixels above the confidence threshold (they get a pseudo-label), mean over seeds:", ""]
    for (arm, k), runs in sorted(groups.items()):
        per_run = [[v for v in r["coverage_per_epoch"] if v is not None] for r in runs]
        first = sum(v[0] for v in per_run) / len(per_run)
        last = sum(v[-1] for v in per_run) / len(per_run)
        line = f"- `{arm}` @ {k}: first epoch {first:.3f}, last epoch {last:.3f} ({len(runs)} runs)"
        found = [r["pseudo_labels"] for r in runs if (r.get("pseudo_labels") or {}).get("precision") is not None]
        if found:

            def mean(key: str) -> str:
                values = [f[key] for f in found if f.get(key) is not None]
                return f"{sum(values) / len(values):.3f}" if values else "-"

            confident_foreground = [
                f["coverage"] * f["foreground_share"] for f in found if f.get("foreground_share") is not None
            ]
            foreground = f"{sum(confident_foreground) / len(confident_foreground):.3f}" if confident_foreground else "-"
            line += (
                f"; the last network on {found[0]['images']} unlabelled cases without augmentation"
                f" ({len(found)} runs): {mean('coverage')} of the pixels at or above {found[0]['threshold']},"
                f" {mean('precision')} of them right; {foreground} of all pixels confidently foreground,"
                f" {mean('foreground_precision')} of those right"
            )
            truth = [f["truth_foreground"] for f in found if f.get("truth_foreground") is not None]
            if truth:
                line += f" (truly foreground: {sum(truth) / len(truth):.3f} of the pixels)"
        out.append(line)
    return out + [""]


# ------------------------------------------------------------------------------------------------------------ plot
def plot_task(task: str, rows: list[dict[str, Any]], path: Path, title: str | None = None) -> None:
    """Test Dice against labelled cases, one line per arm (mean over seeds, error bars: sd over seeds); label-free
    and classical arms as markers at 0; controls dashed; the legend beside the axes. Written atomically, without
    the software version in the metadata, so the same rows give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used, _ = select_rows(rows)
    info = arm_info(used)
    amounts = sorted({int(r["labelled"]) for r in used})
    xpos = {k: i for i, k in enumerate(amounts)}
    arms = arm_order(used)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    try:
        for i, arm in enumerate(arms):
            points = []
            for k in sorted({int(r["labelled"]) for r in used if r["arm"] == arm}):
                values = [float(r["dice_mean"]) for r in used if r["arm"] == arm and int(r["labelled"]) == k]
                sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                points.append((xpos[k] + 0.025 * (i - (len(arms) - 1) / 2), float(np.mean(values)), sd))
            role = info[arm].get("role")
            line = "none" if role in ("label-free", "classical") or len(points) < 2 else "-"
            ax.errorbar(
                [p[0] for p in points],
                [p[1] for p in points],
                yerr=[p[2] for p in points],
                capsize=3,
                linestyle="--" if role == "control" and line != "none" else line,
                marker="osD^vP*XhH<>p"[i % 13],
                color=f"C{i % 10}",
                label=f"{info[arm].get('label', arm)} ({role})",
            )
        ax.set_xticks(list(xpos.values()), [str(k) for k in amounts])
        ax.set_xlabel("labelled training cases")
        ax.set_ylabel("test Dice (mean over seeds ± sd)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{task}: {title}" if title else task)
        if arms:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- across the tasks
def _short_reading(c: Comparison | None) -> str:
    if c is None:
        return "-"
    text = _SHORT_READING.get(c.reading, c.reading)
    return text + ("*" if c.significant_after_holm else "") + (BELOW_SEEDS if c.below_protocol_seeds else "")


def _method_cells(comparisons: Sequence[Comparison], arm: str) -> list[str]:
    """``"20: no diff / worse*"`` per labelled amount of a method (against its control / against the U-Net)."""
    cells = []
    for k in sorted({c.labelled for c in comparisons if c.arm == arm}):
        at_k = {c.kind: c for c in comparisons if c.arm == arm and c.labelled == k}
        text = f"{_short_reading(at_k.get('control'))} / {_short_reading(at_k.get('reference'))}"
        cells.append(f"{k}: **helps** ({text})" if helps(comparisons, arm, k) else f"{k}: {text}")
    return cells


def _label_free_cells(comparisons: Sequence[Comparison], arm: str) -> list[str]:
    """``"vs otsu: better*"`` per comparison of a label-free arm (or a control); ``"12: vs unet: better*"`` where the
    arm has rows at several labelled amounts."""
    mine = [c for c in comparisons if c.arm == arm]
    several = len({c.labelled for c in mine}) > 1
    cells = []
    for c in mine:
        other = c.other if c.other_labelled == c.labelled else f"{c.other}@{c.other_labelled}"
        cells.append(f"{f'{c.labelled}: ' if several else ''}vs {other}: {_short_reading(c)}")
    return cells


def verdict_matrix(per_task: dict[str, list[Comparison]]) -> str:
    """Methods (and label-free arms) x tasks: for a method, at each labelled amount its reading against its control
    / against the U-Net, **helps** when both are better; for a label-free arm, its reading against each classical
    method (and the U-Net). ``*``: significant after Holm over the task's comparisons; ``†``: below 5 seeds."""
    tasks = sorted(per_task)
    arms: dict[str, tuple[str, str]] = {}  # arm -> (role, label)
    for task in tasks:
        for c in per_task[task]:
            arms[c.arm] = (c.role, c.label)
    ordered = sorted(arms, key=lambda a: (arms[a][0] != "method", a))
    lines = [
        "| arm | " + " | ".join(f"`{t}`" for t in tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for arm in ordered:
        role, label = arms[arm]
        cells = []
        for task in tasks:
            if role == "method":
                parts = _method_cells(per_task[task], arm)
            else:
                parts = _label_free_cells(per_task[task], arm)
            cells.append("<br>".join(parts) if parts else "-")
        lines.append(f"| {label} (`{arm}`) | " + " | ".join(cells) + " |")
    legend = (
        "A method's cell: at each labelled amount, its reading against its like-for-like control / against the "
        "U-Net (95% paired interval; n/c: not compared); **helps** when both are better. A label-free arm's cell: "
        f"its reading against each classical method. `*`: significant at 0.05 after Holm over the task's "
        f"comparisons; {BELOW_SEEDS_TEXT}."
    )
    return "\n".join(lines) + "\n\n" + legend + "\n"


def _relation(c: Comparison) -> str:
    """``"better than its control"``, ``"no different from the U-Net at 20 labelled"``, ``"not compared with ..."``."""
    other = "its control" if c.kind == "control" else "the U-Net" if c.other == REFERENCE_ARM else c.other_label
    if c.other_labelled != c.labelled:
        other += f" at {c.other_labelled} labelled"
    verbs = {BETTER: "better than", WORSE: "worse than", NO_DIFFERENCE: "no different from"}
    if c.reading in verbs:
        return f"{verbs[c.reading]} {other}"
    return f"not compared with {other} ({c.note.removeprefix('not compared: ') or c.reading})"


def bundle_lines(per_task: dict[str, list[Comparison]]) -> dict[str, str]:
    """Bundle -> one sentence of its arms' readings over the tasks (95 % paired intervals), for the ``benchmark``
    block of its page: per task, arm and labelled amount, **helps** or the reading against each other arm."""
    clauses: dict[str, list[str]] = {}
    for task in sorted(per_task):
        comparisons = per_task[task]
        groups: dict[tuple[str, int], list[Comparison]] = {}
        for c in comparisons:
            if c.bundle is not None:
                groups.setdefault((c.arm, c.labelled), []).append(c)
        for (arm, k), group in groups.items():
            seeds = max(len(c.seeds) for c in group)
            flag = f" {BELOW_SEEDS}" if seeds < PROTOCOL_SEEDS else ""
            verdict = "**helps**: " if helps(comparisons, arm, k) else ""
            text = verdict + ", ".join(_relation(c) for c in group)
            clauses.setdefault(group[0].bundle, []).append(
                f"`{arm}` on `{task}` at {k} labelled: {text} ({seeds} seeds{flag})"
            )
    return {
        bundle: "Label-efficiency benchmark (protocol v2, docs/label_efficiency.md; "
        + BELOW_SEEDS_TEXT
        + "): "
        + "; ".join(items)
        + "."
        for bundle, items in sorted(clauses.items())
    }


# ---------------------------------------------------------------------------------------------- generated blocks
def block_names(text: str) -> list[str]:
    """The names of the generated blocks of a page, in order; an unclosed block is an error."""
    names = [m.group("name") for m in _BLOCK.finditer(text)]
    begun = [m.group("name") for m in _BEGIN.finditer(text)]
    if sorted(begun) != sorted(names):
        unclosed = sorted(set(begun) - set(names)) or sorted(begun)
        raise ValueError(f"generated block(s) {unclosed} have no matching '<!-- END GENERATED: <name> -->' line.")
    return names


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the body of each generated block named in ``blocks`` replaced (others are left as they are)."""

    def body(match: re.Match) -> str:
        name = match.group("name")
        if name not in blocks:
            return match.group(0)
        content = blocks[name].strip("\n")
        return f"<!-- BEGIN GENERATED: {name} -->\n{content}\n<!-- END GENERATED: {name} -->"

    return _BLOCK.sub(body, text)


PAPER_MARK = "_paper_"  # results names of --budget paper: <task>_paper_<method>
PAPER_BLOCK = "paper_budgets"  # the page's block that holds them, one section each, unless one has its own block
PAPER_NONE_TEXT = "No rows of `--budget paper` yet (no `results/<task>_paper_<method>/`)."


def read_task_info(results_dir: Path, task: str) -> dict[str, Any] | None:
    """``<results_dir>/<task>/task.json`` (the runner's description of the task), None when absent."""
    path = Path(results_dir) / task / TASK_INFO_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _bundle_of_page(page: Path) -> str:
    parts = page.resolve().parts
    if "bundles" not in parts[:-1] or parts.index("bundles") + 1 >= len(parts) - 1:
        raise ValueError(f"{page}: not a bundle page (expected bundles/<bundle>/...).")
    return parts[parts.index("bundles") + 1]


def regenerate(
    results_dir: Path, docs_page: Path, plots_dir: Path, bundle_pages: Sequence[Path] | None = None
) -> list[Path]:
    """Rewrite the generated blocks of ``docs_page`` (``verdicts`` and one ``task:<task>`` per results file) and of
    each bundle page's ``benchmark`` block from ``<results_dir>/<task>/runs.jsonl.gz`` (+ ``task.json``), and write
    ``<plots_dir>/label_efficiency_<task>.png``. The rows of ``--budget paper`` (``<task>_paper_<method>``) without a
    block of their own go, one section each, into the page's ``paper_budgets`` block when it has one. Errors, before
    anything is written, when a task block has no results file or a results file has no block. Returns the paths
    written."""
    results_dir, docs_page, plots_dir = Path(results_dir), Path(docs_page), Path(plots_dir)
    tasks = sorted(p.parent.name for p in results_dir.glob(f"*/{RESULTS_NAME}"))
    page = docs_page.read_text(encoding="utf-8")
    names = block_names(page)
    for name in names:
        if name.startswith("task:") and name[len("task:") :] not in tasks:
            task = name[len("task:") :]
            raise FileNotFoundError(
                f"{docs_page}: block '{name}' has no results file {results_path(results_dir, task)}; run the task or "
                "remove the block."
            )
    in_paper_block = [t for t in tasks if PAPER_MARK in t and f"task:{t}" not in names and PAPER_BLOCK in names]
    for name in ["verdicts"] + [f"task:{t}" for t in tasks if t not in in_paper_block]:
        if name not in names:
            raise ValueError(
                f"{docs_page}: no generated block '{name}'; add the lines '<!-- BEGIN GENERATED: {name} -->' and "
                f"'<!-- END GENERATED: {name} -->' where it belongs."
            )
    bundle_texts = {Path(p): Path(p).read_text(encoding="utf-8") for p in bundle_pages or []}
    for p, text in bundle_texts.items():
        if "benchmark" in block_names(text):
            _bundle_of_page(p)

    written: list[Path] = []
    blocks: dict[str, str] = {}
    per_task: dict[str, list[Comparison]] = {}
    titles: dict[str, str] = {}
    for task in tasks:
        rows = read_rows(results_path(results_dir, task))
        info = read_task_info(results_dir, task)
        title = titles[task] = (info or {}).get("title") or task
        plot_path = plots_dir / f"label_efficiency_{task}.png"
        plot_task(task, rows, plot_path, title)
        written.append(plot_path)
        link = Path(os.path.relpath(plot_path.resolve(), docs_page.resolve().parent)).as_posix()
        blocks[f"task:{task}"] = task_markdown(task, title, rows, info, plot=link)
        per_task[task] = task_comparisons(rows)
    if PAPER_BLOCK in names:
        sections = [f"#### {titles[t]}\n\n{blocks.pop(f'task:{t}')}" for t in in_paper_block]
        blocks[PAPER_BLOCK] = "\n".join(sections) if sections else PAPER_NONE_TEXT
    blocks["verdicts"] = verdict_matrix(per_task)
    write_text_atomic(docs_page, replace_blocks(page, blocks))
    written.append(docs_page)

    lines = bundle_lines(per_task)
    for p, text in bundle_texts.items():
        if "benchmark" not in block_names(text):
            continue
        line = lines.get(_bundle_of_page(p), "Not in the label-efficiency benchmark's results yet.")
        write_text_atomic(p, replace_blocks(text, {"benchmark": line}))
        written.append(p)
    return written
