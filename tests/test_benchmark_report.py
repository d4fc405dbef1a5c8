"""The benchmark's statistics, report and recommendation (common.benchmark.statistics / report / recommend) on
synthetic results rows: Holm, the readings, the step and version rules, the generated blocks, the recommendation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from common.benchmark.recommend import recommendation_markdown
from common.benchmark.report import bundle_lines, regenerate, task_markdown, verdict_matrix
from common.benchmark.results import append_rows, results_path
from common.benchmark.statistics import compare, holm, select_rows, task_comparisons
from common.metrics.results import paired_difference

ARMS = {  # arm -> (role, control, bundle, train_configs)
    "unet": ("reference", None, "supervised_seg", ["train.json"]),
    "adversarial": ("method", "adversarial_control", "adversarial_semi_seg", ["train.json"]),
    "adversarial_control": ("control", None, "adversarial_semi_seg", ["train.json", "supervised_only.json"]),
    "mipr": ("method", "mipr_control", "mipr_auto_annotation", ["train.json"]),
    "mipr_control": ("control", None, "mipr_auto_annotation", ["train.json"]),
    "acwe_unsup": ("label-free", None, "acwe_unsup_seg", ["train.json"]),
    "otsu": ("classical", None, None, []),
}
NOISE = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003, -0.002]  # per seed, shared by the arms of a pair


def row(arm: str, labelled: int, seed: int, dice: float | None, **fields: Any) -> dict[str, Any]:
    """A results row of ``arm`` (schema of common.benchmark.results); ``fields`` override the defaults."""
    role, control, bundle, configs = ARMS[arm]
    out = {
        "id": f"{arm}@{labelled}#s{seed}",
        "task": "toy",
        "arm": arm,
        "label": f"the {arm} arm",
        "role": role,
        "control": control,
        "bundle": bundle,
        "train_configs": configs,
        "labelled": labelled,
        "seed": seed,
        "test_cases": 10,
        "segmenter_steps": 0 if role == "classical" else 600,
        "dice_mean": dice,
        "wall_s": 10.0,
        "cpu_s": 9.0,
        "peak_mib": 500.0,
        "commit": "bbbbbbbbbbbb",
        "dirty": False,
        "finished": f"2026-12-01T10:00:{seed:02d}Z",
        "status": "ok",
    }
    out.update(fields)
    return out


def series(arm: str, labelled: int, base: float, seeds: int = 5, gain: float = 0.0, **fields: Any) -> list[dict]:
    """``seeds`` rows of ``arm``: ``base + gain`` plus a per-seed wiggle (none for a classical arm; half for a
    control or the U-Net, so that paired differences vary)."""
    wiggle = {"control": 0.5, "reference": 0.5, "classical": 0.0}.get(ARMS[arm][0], 1.0)
    return [row(arm, labelled, s, base + gain + wiggle * NOISE[s], **fields) for s in range(seeds)]


def task_rows(adversarial_gain: float, mipr_gain: float = 0.0, seeds: int = 5) -> list[dict]:
    """U-Net at 20 (0.60); each method at 20 with its control (0.58) plus ``*_gain``; ACWE and Otsu at 0."""
    rows = series("unet", 20, 0.60, seeds)
    rows += series("adversarial_control", 20, 0.58, seeds) + series("adversarial", 20, 0.58, seeds, adversarial_gain)
    rows += series("mipr_control", 20, 0.58, seeds) + series("mipr", 20, 0.58, seeds, mipr_gain)
    rows += series("acwe_unsup", 0, 0.50, seeds) + series("otsu", 0, 0.45, seeds)
    return rows


def test_holm_against_hand_computed_values():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    assert holm([0.6, 0.2, 0.9]) == pytest.approx([1.0, 0.6, 1.0])  # capped at 1
    assert holm([]) == []


def test_readings_follow_the_interval_not_the_sign():
    rows = series("unet", 20, 0.60)
    inconsistent = [0.05, -0.01, 0.04, -0.02, 0.03]  # mean +0.018 > 0, interval contains 0
    rows += [row("adversarial", 20, s, 0.60 + d) for s, d in enumerate(inconsistent)]
    c = compare(rows, "adversarial", "unet", 20)
    assert c.diff.mean > 0 and c.diff.lo < 0 < c.diff.hi
    assert c.reading == "no difference"
    a = [r["dice_mean"] for r in rows if r["arm"] == "adversarial"]
    b = [r["dice_mean"] for r in rows if r["arm"] == "unet"]
    assert c.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c.diff == paired_difference(a, b)
    assert c.seeds == (0, 1, 2, 3, 4)

    assert (
        compare(
            series("unet", 20, 0.60) + series("adversarial", 20, 0.60, gain=0.03), "adversarial", "unet", 20
        ).reading
        == "better"
    )
    assert (
        compare(
            series("unet", 20, 0.60) + series("adversarial", 20, 0.60, gain=-0.03), "adversarial", "unet", 20
        ).reading
        == "worse"
    )


def test_pairs_only_seeds_in_both_and_one_seed_has_no_interval():
    rows = series("unet", 20, 0.60, seeds=3) + series("adversarial", 20, 0.60, seeds=5, gain=0.03)
    c = compare(rows, "adversarial", "unet", 20)
    assert c.seeds == (0, 1, 2)
    one = compare(series("unet", 20, 0.6, seeds=1) + series("adversarial", 20, 0.6, seeds=1), "adversarial", "unet", 20)
    assert one.p is None and one.reading == "too few seeds" and one.diff.interval_text() == "-"


def test_unequal_segmenter_steps_are_not_compared():
    rows = task_rows(adversarial_gain=0.05)
    rows = [dict(r, segmenter_steps=1200) if r["arm"] == "mipr" else r for r in rows]
    comparisons = task_comparisons(rows)
    mipr = [c for c in comparisons if c.arm == "mipr"]
    assert {c.other for c in mipr} == {"mipr_control", "unet"}
    for c in mipr:
        assert c.diff is None and c.p is None and c.p_holm is None
        assert c.note == "not compared: unequal segmenter steps (1200 vs 600)"
    # label-free against classical has no step rule (600 vs 0 steps)
    otsu = next(c for c in comparisons if c.arm == "acwe_unsup" and c.other == "otsu")
    assert otsu.reading == "better" and otsu.p is not None
    text = task_markdown("toy", "a toy task", rows)
    assert "not compared: unequal segmenter steps (1200 vs 600)" in text
    # each control against the U-Net: the recipe's own effect
    assert {(c.arm, c.other) for c in comparisons if c.kind == "recipe"} == {
        ("adversarial_control", "unet"),
        ("mipr_control", "unet"),
    }
    # Holm counts only the comparisons with a p: adversarial x 2, the two controls, acwe_unsup vs otsu and vs unet
    assert "hold 6 comparisons" in text
    with_p = [c for c in comparisons if c.p is not None]
    assert [c.p_holm for c in with_p] == pytest.approx(holm([c.p for c in with_p]))


def test_mixed_commits_use_the_newest_commit_only():
    old = series("adversarial", 20, 0.40, commit="aaaaaaaaaaaa", finished="2026-11-01T00:00:00Z")
    new = series("adversarial", 20, 0.70, seeds=3, commit="cccccccccccc", finished="2026-12-02T00:00:00Z")
    # a re-run of seed 3 and 4 at the old commit cannot exist under the same id; give the old ones other seeds
    old = [dict(r, seed=r["seed"] + 10, id=r["id"] + "old") for r in old]
    used, notes = select_rows(old + new)
    assert {r["commit"] for r in used} == {"cccccccccccc"} and len(used) == 3
    assert any("left out 5 of older commits (aaaaaaa)" in n for n in notes)

    clean = series("unet", 20, 0.60, seeds=3)
    dirty = [row("unet", 20, 7, 0.9, dirty=True, commit="dddddddddddd", finished="2026-12-09T00:00:00Z", id="u7")]
    used, notes = select_rows(clean + dirty)
    assert len(used) == 3 and not any(r["dirty"] for r in used)
    assert any("1 of uncommitted code" in n for n in notes)

    only_dirty = series("unet", 20, 0.60, seeds=3, dirty=True)
    used, notes = select_rows(only_dirty)
    assert len(used) == 3
    assert any("only runs of uncommitted code" in n for n in notes)
    assert "(uncommitted code)" in task_markdown("toy", "toy", only_dirty)


def test_failed_rows_are_counted_never_used():
    rows = series("unet", 20, 0.60) + series("adversarial", 20, 0.60, gain=0.03)
    rows.append(row("adversarial", 20, 5, 0.99, status="failed", error="killed"))
    rows.append(row("unet", 20, 5, 0.01, status="failed", error="killed"))
    used, notes = select_rows(rows)
    assert all(r["status"] == "ok" for r in used) and len(used) == 10
    assert any("1 failed run(s) not used (seeds 5)" in n for n in notes)
    assert compare(rows, "adversarial", "unet", 20).seeds == (0, 1, 2, 3, 4)
    text = task_markdown("toy", "toy", rows)
    assert "(2 failed" in text
    assert "0.630 ± " in text  # adversarial's mean without the failed 0.99


def test_helps_only_when_better_than_both_and_the_matrix_says_so():
    per_task = {"toy": task_comparisons(task_rows(adversarial_gain=0.06, mipr_gain=0.01))}
    matrix = verdict_matrix(per_task)
    adversarial = next(line for line in matrix.splitlines() if "`adversarial`" in line)
    mipr = next(line for line in matrix.splitlines() if "`mipr`" in line)
    assert "20: **helps** (better" in adversarial
    assert "helps" not in mipr and "20: better" in mipr  # better than its control, not than the U-Net
    lines = bundle_lines(per_task)
    assert "20 labelled: **helps**: better than its control, better than the U-Net" in lines["adversarial_semi_seg"]
    assert "helps" not in lines["mipr_auto_annotation"]
    assert "better than the otsu arm, worse than the U-Net at 20 labelled" in lines["acwe_unsup_seg"]


PAGE = """# Label efficiency

Text written by hand.

<!-- BEGIN GENERATED: verdicts -->
old verdicts
<!-- END GENERATED: verdicts -->

## toy

<!-- BEGIN GENERATED: task:toy -->
old table
<!-- END GENERATED: task:toy -->

Closing words.
"""


def _results(tmp_path: Path, tasks: dict[str, list[dict]]) -> Path:
    results = tmp_path / "results"
    for task, rows in tasks.items():
        append_rows(results_path(results, task), rows)
        info = {"name": task, "title": f"the {task} task", "not_applicable": {"translation": "needs absent images"}}
        (results / task / "task.json").write_text(json.dumps(info), encoding="utf-8")
    return results


def test_regenerate_replaces_only_the_blocks_and_is_idempotent(tmp_path: Path):
    results = _results(tmp_path, {"toy": task_rows(adversarial_gain=0.06)})
    page = tmp_path / "docs" / "label_efficiency.md"
    page.parent.mkdir()
    page.write_text(PAGE, encoding="utf-8")
    bundle_page = tmp_path / "bundles" / "adversarial_semi_seg" / "docs" / "README.md"
    bundle_page.parent.mkdir(parents=True)
    bundle_page.write_text("# adversarial\n<!-- BEGIN GENERATED: benchmark -->\n<!-- END GENERATED: benchmark -->\n")
    plots = tmp_path / "docs"

    written = regenerate(results, page, plots, [bundle_page])
    plot = plots / "label_efficiency_toy.png"
    assert set(written) == {page, plot, bundle_page}
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Label efficiency\n\nText written by hand.\n") and text.endswith("\nClosing words.\n")
    assert "old table" not in text and "old verdicts" not in text
    assert "![toy: the toy task" in text and "(label_efficiency_toy.png)" in text
    assert "| the adversarial arm (`adversarial`) | method | 20 |" in text
    assert "`translation`: needs absent images" in text
    assert "20: **helps**" in text
    assert "helps" in bundle_page.read_text(encoding="utf-8")
    first = (page.read_bytes(), plot.read_bytes(), bundle_page.read_bytes())
    regenerate(results, page, plots, [bundle_page])
    assert (page.read_bytes(), plot.read_bytes(), bundle_page.read_bytes()) == first


def test_regenerate_errors_on_a_missing_block_or_results_file(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    rows = task_rows(adversarial_gain=0.0, seeds=2)
    results = _results(tmp_path, {"toy": rows, "other": [dict(r, task="other") for r in rows]})
    with pytest.raises(ValueError, match="no generated block 'task:other'"):
        regenerate(results, page, tmp_path / "plots")
    assert page.read_text(encoding="utf-8") == PAGE  # nothing written

    page.write_text(PAGE.replace("task:toy", "task:missing"), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="task:missing"):
        regenerate(tmp_path / "results_none", page, tmp_path / "plots")


def test_paper_budget_results_go_into_the_paper_block(tmp_path: Path):
    page = tmp_path / "page.md"
    paper_page = PAGE + "\n<!-- BEGIN GENERATED: paper_budgets -->\n<!-- END GENERATED: paper_budgets -->\n"
    page.write_text(paper_page, encoding="utf-8")
    results = _results(tmp_path, {"toy": task_rows(adversarial_gain=0.06)})
    regenerate(results, page, tmp_path / "plots")
    assert "No rows of `--budget paper` yet" in page.read_text(encoding="utf-8")

    rows = task_rows(adversarial_gain=0.0, seeds=5)
    _results(tmp_path, {"toy_paper_adversarial": [dict(r, task="toy_paper_adversarial") for r in rows]})
    regenerate(results, page, tmp_path / "plots")
    text = page.read_text(encoding="utf-8")
    assert "No rows of `--budget paper` yet" not in text
    paper = text[text.index("BEGIN GENERATED: paper_budgets") :]
    assert (
        "#### the toy_paper_adversarial task" in paper and "| the adversarial arm (`adversarial`) | method |" in paper
    )
    assert "`toy_paper_adversarial`" in text[: text.index("END GENERATED: verdicts")]  # a column of the matrix
    assert (tmp_path / "plots" / "label_efficiency_toy_paper_adversarial.png").is_file()

    page.write_text(PAGE, encoding="utf-8")  # no paper block: the paper task needs a block of its own
    with pytest.raises(ValueError, match="no generated block 'task:toy_paper_adversarial'"):
        regenerate(results, page, tmp_path / "plots")


def test_recommendation_names_the_method_that_beats_both(tmp_path: Path):
    rows = task_rows(adversarial_gain=0.06, mipr_gain=0.04)  # both help; adversarial by more
    text = recommendation_markdown("toy", rows, 20, "/data/my_task")
    assert "**Use adversarial_semi_seg (the adversarial arm)**" in text
    assert "Also better than both: `mipr`" in text
    assert "stay significant after Holm" in text
    assert "--config_file \"['bundles/adversarial_semi_seg/configs/train.json']\"" in text
    assert "--dataset_dir /data/my_task --labelled_fraction 1.0" in text
    assert "bundles/adversarial_semi_seg/configs/inference.json" in text
    assert "--dataset_dir /data/my_task/imagesTs" in text
    assert "Seeds per arm: 5." in text and "not a verdict" not in text


def test_recommendation_falls_back_to_supervised_seg():
    rows = task_rows(adversarial_gain=0.01, seeds=3)  # better than its control (0.58), not than the U-Net (0.60)
    text = recommendation_markdown("toy", rows, 20, "/data/my_task")
    assert "No method beats the supervised U-Net here at this budget: use supervised_seg" in text
    assert "Use adversarial_semi_seg" not in text
    assert "--config_file \"['bundles/supervised_seg/configs/train.json']\"" in text
    assert "--dataset_dir /data/my_task --labelled_fraction 1.0" in text
    assert "bundles/supervised_seg/configs/inference.json" in text
    assert "Fewer than the protocol's 5 seeds is not a verdict" in text
    with pytest.raises(ValueError, match="no method or U-Net runs at 50"):
        recommendation_markdown("toy", rows, 50, "/data/my_task")


def test_coverage_lines_average_the_first_and_last_epoch_over_seeds() -> None:
    from common.benchmark.report import coverage_lines

    rows = [
        {"arm": "unimatch", "role": "method", "labelled": 20, "coverage_per_epoch": [0.1, 0.5]},
        {"arm": "unimatch", "role": "method", "labelled": 20, "coverage_per_epoch": [0.3, None, 0.7]},
        {"arm": "unimatch_control", "role": "control", "labelled": 20, "coverage_per_epoch": [0.0, 0.0]},
        {"arm": "unet", "role": "reference", "labelled": 20},
    ]
    assert coverage_lines(rows)[2] == "- `unimatch` @ 20: first epoch 0.200, last epoch 0.600 (2 runs)"
    assert len(coverage_lines(rows)) == 4 and coverage_lines(rows[2:]) == []


def test_coverage_lines_add_the_pseudo_label_diagnostic_where_rows_hold_it() -> None:
    from common.benchmark.report import coverage_lines

    found = {"threshold": 0.95, "images": 180, "coverage": 0.8, "precision": 0.9, "foreground_precision": 0.6}
    found.update(foreground_share=0.05, truth_foreground=0.1)
    rows = [
        {"arm": "unimatch", "role": "method", "labelled": 20, "coverage_per_epoch": [0.1, 0.5], "pseudo_labels": found},
        {"arm": "unimatch", "role": "method", "labelled": 20, "coverage_per_epoch": [0.3, 0.7],
         "pseudo_labels": {**found, "coverage": 0.6, "precision": 0.7, "foreground_precision": 0.4}},
    ]  # fmt: skip
    assert coverage_lines(rows)[2] == (
        "- `unimatch` @ 20: first epoch 0.200, last epoch 0.600 (2 runs); the last network on 180 unlabelled cases"
        " without augmentation (2 runs): 0.700 of the pixels at or above 0.95, 0.800 of them right; 0.035 of all"
        " pixels confidently foreground, 0.500 of those right (truly foreground: 0.100 of the pixels)"
    )
