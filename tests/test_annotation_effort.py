"""The pure parts of benchmarks/experiments/annotation_effort.py, without a server: the pixels an annotator changes,
the Dice of a pre-annotation, the arms plan and its run order, the seeded random pick, and the summary table and plot
built from recorded rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.experiments import annotation_effort as effort

REPO = Path(__file__).resolve().parent.parent


def test_pixels_changed_counts_every_differing_label():
    truth = np.zeros((4, 5), np.uint8)
    truth[1:3, 1:3] = 1  # 4 foreground pixels
    assert effort.pixels_changed(np.zeros_like(truth), truth) == 4  # empty start: draw every foreground pixel
    assert effort.pixels_changed(truth.copy(), truth) == 0
    pre = truth.copy()
    pre[0, 0] = 1  # one false positive
    pre[1, 1] = 0  # one missed pixel
    pre[2, 2] = 2  # a label the task does not have: changed too
    assert effort.pixels_changed(pre, truth) == 3
    with pytest.raises(ValueError, match="shape"):
        effort.pixels_changed(pre[:3], truth)


def test_dice_of_the_foreground_class():
    truth = np.array([[1, 1, 0, 0]])
    assert effort.dice(truth, truth) == 1.0
    assert effort.dice(np.zeros_like(truth), truth) == 0.0
    assert effort.dice(np.array([[1, 0, 1, 0]]), truth) == pytest.approx(0.5)
    assert effort.dice(np.array([[2, 2, 0, 0]]), truth) == 0.0  # only class 1 counts
    assert effort.dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # nothing to find, nothing found


def test_arms_plan_runs_the_label_free_start_first_per_seed():
    plan = effort.arms_plan(["epistemic", "random"], ["none", "label_free"], [1, 0])
    assert [(a.seed, a.start, a.strategy) for a in plan] == [
        (1, "label_free", "epistemic"),
        (1, "label_free", "random"),
        (1, "none", "epistemic"),
        (1, "none", "random"),
        (0, "label_free", "epistemic"),
        (0, "label_free", "random"),
        (0, "none", "epistemic"),
        (0, "none", "random"),
    ]
    assert len({a.slug for a in plan}) == len(plan)
    assert plan[0].name == "epistemic, start label-free" and plan[0].name == plan[4].name
    assert len(effort.arms_plan(["random", "random"], ["none"], [0, 0])) == 1
    with pytest.raises(ValueError):
        effort.arms_plan(["uncertain"], ["none"], [0])
    with pytest.raises(ValueError):
        effort.arms_plan(["random"], [], [0])


def test_random_pick_is_seeded_and_depends_on_the_set_only():
    images = [f"cell_{i:03d}" for i in range(10)]
    first = [effort.pick_random(images, np.random.default_rng(3)) for _ in range(2)]
    assert first[0] == first[1]
    assert effort.pick_random(list(reversed(images)), np.random.default_rng(3)) == first[0]
    rng = np.random.default_rng(0)
    picks = {effort.pick_random(images, rng) for _ in range(200)}
    assert picks == set(images)
    with pytest.raises(ValueError):
        effort.pick_random([], rng)


def _result(strategy: str, start: str, seed: int, changed: list[int], truth: list[int], pool: list[float]) -> dict:
    arm = effort.Arm(strategy, start, seed)
    rounds = [
        {"round": k + 1, "pixels_changed": c, "truth_pixels": t, "dice": 1 - c / 100, "pool_dice": p}
        for k, (c, t, p) in enumerate(zip(changed, truth, pool))
    ]
    return {"arm": arm.name, "slug": arm.slug, "strategy": strategy, "start": start, "seed": seed,
            "rounds": rounds, "status": "ok", "final_pool_dice": pool[-1] + 0.1}  # fmt: skip


def _record(results: list[dict]) -> dict:
    settings = effort.Settings(images=6, rounds=3)
    return {
        "settings": {**effort.asdict(settings)},
        "seeds": [0, 1],
        "machine": {"text": "test machine"},
        "command": "python benchmarks/experiments/annotation_effort.py --quick",
        "wall_s": 60.0,
        "results": results,
    }


def test_summary_is_cumulative_and_averaged_over_seeds():
    results = [
        _result("random", "none", 0, [100, 40, 20], [100, 90, 80], [0.0, 0.5, 0.6]),
        _result("random", "none", 1, [80, 60, 40], [80, 90, 100], [0.0, 0.7, 0.8]),
        _result("epistemic", "label_free", 0, [30, 20, 10], [100, 90, 80], [0.6, 0.7, 0.8]),
        {"arm": "epistemic, start none", "slug": "x", "strategy": "epistemic", "start": "none", "seed": 0,
         "rounds": [], "status": "failed", "error": "boom"},  # fmt: skip
    ]
    rows = effort.summarise(results)
    assert [r["arm"] for r in rows] == ["epistemic, start label-free", "random, start none"]  # failed arm left out
    random_none = rows[1]
    assert random_none["seeds"] == [0, 1] and random_none["rounds"] == 3
    assert [m for m, _ in random_none["cumulative_pixels"]] == [90.0, 140.0, 170.0]  # (160+180)/2 = 170 ...
    assert random_none["cumulative_pixels"][0][1] == pytest.approx(np.std([100, 80], ddof=1))
    assert [m for m, _ in random_none["scratch_pixels"]] == [90.0, 180.0, 270.0]
    assert random_none["share_of_scratch"][0] == pytest.approx((160 / 270 + 180 / 270) / 2)
    assert [m for m, _ in random_none["pool_dice"]] == pytest.approx([0.0, 0.6, 0.7])
    assert random_none["final_pool_dice"][0] == pytest.approx(0.8)
    assert rows[0]["cumulative_pixels"][-1] == (60.0, 0.0)  # one seed: sd 0

    table = effort.markdown(_record(results))
    assert "| random, start none | 2 | 170 ± 14 |" in table
    assert "| epistemic, start label-free | 1 | 60 ± 0 | 0.22 ± 0.00 |" in table
    assert "Failed arms: x: boom" in table
    assert "`python benchmarks/experiments/annotation_effort.py --quick`" in table
    json.dumps(_record(results))  # the record is plain JSON


def test_contrasts_are_paired_by_seed_over_the_seeds_both_arms_finished():
    results = [
        _result("random", "none", 0, [100, 40, 20], [100, 90, 80], [0.0, 0.5, 0.6]),  # 160 px, final 0.7
        _result("random", "none", 1, [80, 60, 40], [80, 90, 100], [0.0, 0.7, 0.8]),  # 180 px, final 0.9
        _result("random", "none", 2, [80, 60, 40], [80, 90, 100], [0.0, 0.7, 0.8]),  # no partner: left out
        _result("random", "label_free", 0, [30, 20, 10], [100, 90, 80], [0.6, 0.7, 0.8]),  # 60 px, final 0.9
        _result("random", "label_free", 1, [40, 20, 20], [100, 90, 80], [0.6, 0.7, 0.7]),  # 80 px, final 0.8
    ]
    (row,) = effort.contrasts(results)
    assert (row["arm"], row["against"], row["seeds"]) == ("random, start label-free", "random, start none", [0, 1])
    assert row["pixels"].mean == pytest.approx(-100.0) and row["pixels"].n == 2
    assert row["pixels"].lo == pytest.approx(-100.0) == row["pixels"].hi  # same difference in both seeds
    assert row["final_pool_dice"].mean == pytest.approx(0.05)
    assert row["final_pool_dice"].lo < 0 < row["final_pool_dice"].hi  # +0.2 and -0.1: no difference
    table = effort.markdown(_record(results))
    assert "| random, start label-free | random, start none | 2 | -100 [-100, -100] |" in table


def test_plot_is_written(tmp_path: Path):
    pytest.importorskip("matplotlib")
    results = [
        _result("random", "none", 0, [100, 40, 20], [100, 90, 80], [0.0, 0.5, 0.6]),
        _result("epistemic", "label_free", 0, [30, 20, 10], [100, 90, 80], [0.6, 0.7, 0.8]),
    ]
    path = tmp_path / "plot.png"
    effort.plot(_record(results), path)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
