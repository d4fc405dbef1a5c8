"""``benchmarks/run_phases.py``: a quick run prints the phase table with the ratios to the bare arithmetic, for the
supervised U-Net and for UniMatch (two loaders, its own bare loop)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import run_phases


def test_quick_run_prints_phases_and_ratios(tmp_path: Path, capsys):
    rows_file = tmp_path / "rows.json"
    args = ["--quick", "--bare-steps", "2", "--arms", "unet", "unimatch", "--out", str(tmp_path)]
    assert run_phases.main([*args, "--json", str(rows_file)]) == 0
    out = capsys.readouterr().out
    assert "| unet | 8 |" in out and "| unimatch | 8 |" in out and "training / bare" in out
    rows = json.loads(rows_file.read_text(encoding="utf-8"))
    assert [r["arm"] for r in rows] == ["unet", "unimatch"]
    for row in rows:
        assert set(run_phases.PHASES) == set(row["phases"])
        assert all(wall >= 0 and cpu >= 0 for wall, cpu in row["phases"].values())
        assert row["steps"] == 8 and row["bare_step_s"] > 0
        assert row["phases"]["training"][1] > 0.5 * row["training_parts"]["iterations"][1] > 0
    assert rows[1]["bare_step_s"] > 2 * rows[0]["bare_step_s"]  # UniMatch's step: four forward passes, not one
    table = run_phases.table(rows)
    assert table.count("\n") == 3 and " / " in table.splitlines()[2]


def test_span_counts_nested_and_paused_calls_once():
    outer, inner = run_phases.Span(), run_phases.Span()
    work = inner.wrap(lambda: sum(range(200_000)))
    nested = inner.wrap(lambda: work() + work())
    stage = outer.wrap(lambda: work(), pause=inner)
    nested()
    counted = inner.cpu
    stage()
    assert inner.cpu == counted > 0 and outer.cpu > 0  # work inside a stage is the stage's, not counted twice


def test_eval_batch_prints_both_sizes_with_the_same_dice(tmp_path: Path, capsys):
    from benchmarks import eval_batch

    args = ["--quick", "--arms", "unet", "--batch", "8", "--repeats", "1", "--out", str(tmp_path)]
    assert eval_batch.main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| unet |"))
    assert line.endswith("| yes |")
