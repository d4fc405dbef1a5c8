"""``benchmarks/run_phases.py``: a quick run prints the phase table with the ratios to the bare arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import run_phases


def test_quick_run_prints_phases_and_ratios(tmp_path: Path, capsys):
    rows_file = tmp_path / "rows.json"
    assert run_phases.main(["--quick", "--bare-steps", "2", "--out", str(tmp_path), "--json", str(rows_file)]) == 0
    out = capsys.readouterr().out
    assert "| unet | 8 |" in out and "training / bare" in out
    (row,) = json.loads(rows_file.read_text(encoding="utf-8"))
    assert set(run_phases.PHASES) == set(row["phases"])
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in row["phases"].values())
    assert row["steps"] == 8 and 0 <= row["dice"] <= 1 and row["bare_step_s"] > 0
    assert sum(row["training_parts"]["iterations"]) > 0
    table = run_phases.table([row])
    assert table.count("\n") == 2 and " / " in table.splitlines()[2]
