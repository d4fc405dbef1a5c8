"""``--budget paper``: each method's own paper schedule (common.benchmark.budgets), the plan's estimated hours,
``--dry-run``, and the default budget's plan unchanged."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_benchmark_package import png_folder

import common.benchmark.cli as cli
from common.benchmark.arms import ARMS, RunContext
from common.benchmark.budgets import (
    SCHEDULES,
    PoolCounts,
    estimate_run,
    paper_plan,
    pool_counts,
    schedule_for_arms,
    schedules_markdown,
)
from common.benchmark.dataset import read_dataset
from common.benchmark.protocol import Budget
from common.benchmark.results import append_rows, results_path

REPO = Path(__file__).resolve().parents[1]
BASE = Budget("default", steps=600, epochs=6, batch_size=8, image_size=48)
POOL = PoolCounts(labelled=20, unlabelled=2180)  # cluttered MNIST's 2200 pool images at 20 labelled


def test_paper_budgets_for_a_known_pool() -> None:
    unimatch = SCHEDULES["unimatch"].budget(POOL, BASE)  # 300 epochs of floor(2180 / 12) = 181 (drop_last)
    assert (unimatch.steps, unimatch.epochs, unimatch.iterations, unimatch.batch_size) == (54300, 300, 181, 12)
    adversarial = SCHEDULES["adversarial"].budget(POOL, BASE)
    assert (adversarial.steps, adversarial.epochs, adversarial.batch_size) == (20000, 20, 10)
    mipr = SCHEDULES["mipr"].budget(POOL, BASE)  # 4 trainings of 100 epochs of ceil(2200 / 8) = 275
    assert (mipr.steps, mipr.epochs, mipr.iterations, mipr.batch_size) == (110000, 400, 275, 8)
    assert (mipr.mipr_rounds, mipr.generator_epochs) == (3, 500)
    af_seg = SCHEDULES["af_seg"].budget(POOL, BASE)
    assert (af_seg.steps, af_seg.epochs, af_seg.batch_size) == (220000, 100, 1)
    acwe = SCHEDULES["acwe"].budget(POOL, BASE)  # 30 epochs (not stated: the bundle's) of ceil(2200 / 20)
    assert (acwe.steps, acwe.epochs, acwe.batch_size) == (3300, 30, 20)
    translation = SCHEDULES["translation"].budget(POOL, BASE)  # 300 epochs of ceil(2200 / 20) = 110
    assert (translation.steps, translation.epochs, translation.iterations, translation.batch_size) == (
        33000,
        300,
        110,
        20,
    )
    for budget in (unimatch, adversarial, mipr, af_seg, acwe, translation):
        assert budget.steps == budget.epochs * budget.iterations and budget.image_size == BASE.image_size
        assert budget.name == f"paper_{budget.method}"
    assert "mipr_rounds" not in unimatch.as_row() and mipr.as_row()["generator_epochs"] == 500  # recorded in rows
    assert SCHEDULES["unimatch"].budget(PoolCounts(4, 0), BASE).steps == 300  # no unlabelled image: one step an epoch


def test_paper_budgets_give_the_method_its_control_and_the_unet_equal_steps(tmp_path: Path) -> None:
    data = read_dataset(png_folder(tmp_path / "disks", cases=40))
    counts = pool_counts(data, 4)
    assert (counts.labelled, counts.unlabelled) == (4, 28)
    for schedule in SCHEDULES.values():
        budget = schedule.budget(counts, BASE)
        context = RunContext(data, budget, 4, 0, many_objects=True)
        arms = [k for k, a in ARMS.items() if a.bundle in (schedule.bundle, "supervised_seg")]
        steps = {k: ARMS[k].planned_steps(context) for k in arms}
        assert set(steps.values()) == {budget.steps}, (schedule.method, steps)
    adversarial = ARMS["adversarial"].overrides(RunContext(data, SCHEDULES["adversarial"].budget(counts, BASE), 4, 0))
    assert adversarial["semi_start_epoch"] * adversarial["epoch_length"] == 5000  # Hung et al.: semi after 5k of 20k
    mipr = ARMS["mipr"].overrides(RunContext(data, SCHEDULES["mipr"].budget(counts, BASE), 4, 0))
    assert (mipr["num_rounds"], mipr["max_epochs"], mipr["generator_epochs"]) == (3, 100, 500)
    default = ARMS["mipr"].overrides(RunContext(data, BASE, 4, 0))
    assert (default["num_rounds"], default["generator_epochs"]) == (1, 20)  # the default budget as before


def _default_rows(results_dir: Path, name: str) -> None:
    """Finished rows of the default budget: unet at 0.1 s per step of batch 8, otsu 30 s per run."""
    rows = [
        {"id": f"unet@2#s{s}", "arm": "unet", "status": "ok", "budget": {"name": "default", "batch_size": 8},
         "wall_s": 60.0, "segmenter_steps": 600, "machine": "test CPU"}
        for s in (0, 1)
    ] + [{"id": "otsu@0#s0", "arm": "otsu", "status": "ok", "budget": {"name": "default", "batch_size": 8},
          "wall_s": 30.0, "segmenter_steps": 0, "machine": "test CPU"}]  # fmt: skip
    append_rows(results_path(results_dir, name), rows)


def test_paper_dry_run_prints_steps_and_estimate_and_writes_no_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = png_folder(tmp_path / "disks")
    results_dir, out = tmp_path / "results", tmp_path / "out"
    _default_rows(results_dir, "disks")
    argv = ["--dataset-dir", str(root), "--labelled", "2", "--seeds", "0", "1", "--out", str(out)]
    argv += ["--results-dir", str(results_dir), "--budget", "paper", "--dry-run"]
    assert cli.main([*argv, "--arms", "unimatch", "unimatch_control", "unet", "otsu"]) == 0
    text = capsys.readouterr().out
    # 8 pool images, 2 labelled: floor(6 / 12) = 0 iterations an epoch, so 1: 300 steps of batch 12
    assert "unimatch @ 2 labelled: 2 runs x 300 steps (300 epochs x 1), batch 12" in text
    assert "unet @ 2 labelled: 2 runs x 300 steps (300 epochs x 1), batch 12" in text
    assert "0.150 s per step (mean of 2 default rows at batch 8, scaled to batch 12)" in text  # 0.1 x 12 / 8
    assert "unimatch_control @ 2 labelled: 2 runs x 300 steps (300 epochs x 1), batch 12: no estimate" in text
    assert "30 s per run, mean of 1 default rows (no training)" in text
    hours = (2 * 300 * 0.15 + 2 * 30) / 3600
    assert f"estimated: {hours:.2f} h for 4 of 8 runs (4 without an estimate)" in text and "test CPU" in text
    assert "paper schedule of unimatch" in text and "disks_paper_unimatch" in text
    assert not (results_dir / "disks_paper_unimatch").exists() and not (out / "disks_paper_unimatch").exists()
    assert sorted(p.name for p in results_dir.iterdir()) == ["disks"]


def test_paper_budget_refuses_two_methods_and_names_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = png_folder(tmp_path / "disks")
    argv = ["--dataset-dir", str(root), "--labelled", "2", "--out", str(tmp_path / "out"), "--budget", "paper"]
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--dry-run", "--arms", "unimatch", "unimatch_control", "adversarial", "unet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "2 methods with different schedules" in err and "unimatch (unimatch, unimatch_control" in err
    assert "adversarial (adversarial: 20,000 iterations" in err
    with pytest.raises(SystemExit):  # the default --arms (all) mix every method
        cli.main([*argv, "--dry-run"])
    assert "different schedules" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs the arms of one method"):
        schedule_for_arms(["unet", "otsu"])
    assert schedule_for_arms(["acwe_joint", "acwe_joint_control", "acwe_unsup", "unet", "otsu"]).method == "acwe"
    with pytest.raises(SystemExit):
        cli.main([*argv, "--quick", "--arms", "unimatch", "unet"])
    assert "neither --quick nor --steps" in capsys.readouterr().err


class _Planned(Exception):
    pass


def _capture_specs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    got: dict[str, Any] = {}

    def fake_run_specs(specs: list[dict[str, Any]], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        got["specs"] = specs
        raise _Planned

    monkeypatch.setattr(cli, "run_specs", fake_run_specs)
    return got


def test_default_budget_plans_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = png_folder(tmp_path / "disks")
    argv = ["--dataset-dir", str(root), "--labelled", "2", "4", "--out", str(tmp_path / "out")]
    got = _capture_specs(monkeypatch)
    with pytest.raises(_Planned):
        cli.main(argv)
    assert "plan:" not in capsys.readouterr().out  # the default budget prints no plan unless --dry-run
    pairs = sorted(f"{s['id']}={s['hash']}" for s in got["specs"])
    # the ids and settings hashes of every run, as the code before --budget planned them on this folder
    assert (len(pairs), hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]) == (110, "5f0d7e2ce5db0fda")
    assert {s["budget"]["name"] for s in got["specs"]} == {"default"}
    assert cli.main([*argv, "--budget", "default", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "plan: 110 runs, budget default" in text and "unet @ 4 labelled: 5 runs x 600 steps (6 epochs x 100)" in text


def test_paper_budget_run_records_the_budget_under_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = png_folder(tmp_path / "disks", cases=40)
    results_dir = tmp_path / "results"
    got = _capture_specs(monkeypatch)
    argv = ["--dataset-dir", str(root), "--labelled", "2", "8", "--seeds", "0", "--out", str(tmp_path / "out")]
    with pytest.raises(_Planned):
        cli.main([*argv, "--results-dir", str(results_dir), "--budget", "paper", "--arms", "mipr", "mipr_control"])
    assert "plan: 4 runs, budget paper_mipr" in capsys.readouterr().out  # printed before running
    info = json.loads((results_dir / "disks_paper_mipr" / "task.json").read_text())
    steps = 400 * math.ceil(32 / 8)
    assert info["budget"]["name"] == "paper_mipr" and info["budget"]["steps"] == steps
    assert info["schedule"]["method"] == "mipr" and set(info["budget_per_labelled"]) == {"2", "8"}
    specs = got["specs"]
    assert {s["task"] for s in specs} == {"disks_paper_mipr"} and {s["planned_steps"] for s in specs} == {steps}
    assert {s["label"] for s in specs if s["arm"] == "mipr"} == {"MIPR, 3 annotation rounds (mipr_auto_annotation)"}


def test_estimate_without_rows_says_so() -> None:
    spec = {"arm": "unet", "bundle": "supervised_seg", "planned_steps": 10, "budget": {"batch_size": 8}}
    assert estimate_run(spec, []).seconds is None
    rows = [{"arm": "unet", "status": "ok", "budget": {"name": "paper_unimatch", "batch_size": 8}, "wall_s": 1.0}]
    assert estimate_run(spec, rows).seconds is None  # only rows of the default budget count


def test_docs_hold_the_table_of_paper_schedules() -> None:
    page = (REPO / "docs" / "label_efficiency.md").read_text(encoding="utf-8")
    assert schedules_markdown() in page, "docs/label_efficiency.md: paste budgets.schedules_markdown() into Budgets"


def test_paper_plan_passes_the_evaluation_batch_on(tmp_path: Path) -> None:
    data = read_dataset(png_folder(tmp_path / "disks", cases=40))
    specs, _ = paper_plan(
        data, "disks_paper_unimatch", SCHEDULES["unimatch"], BASE, ["unimatch", "unimatch_control", "unet", "otsu"],
        [4], [0], tmp_path / "runs", {}, eval_batch_size=16,
    )  # fmt: skip
    assert {s["arm"] for s in specs} == {"unimatch", "unimatch_control", "unet", "otsu"}
    assert all(s.get("eval_batch_size", 1) == 16 for s in specs if s["bundle"] is not None), specs
