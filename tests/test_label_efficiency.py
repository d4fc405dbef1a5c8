"""End-to-end run of benchmarks/label_efficiency.py on a tiny schedule: two cheap methods, one fraction each, tiny
images; checks results.json, the Markdown table and the plot, and that a rerun skips the finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "label_efficiency.py"
TINY = [
    "--methods",
    "supervised_seg",
    "acwe_mode1",
    "--fractions",
    "0",
    "0.25",
    "--epochs-scale",
    "0.1",
    "--num-cases",
    "12",
    "--image-size",
    "32",
]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_label_efficiency_end_to_end(tmp_path: Path):
    out = tmp_path / "le"
    proc = _run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sorted(r["id"] for r in rows) == ["acwe_mode1@0", "supervised_seg@0.25"]
    for r in rows:
        assert r["status"] == "ok"
        assert 0.0 <= r["dice_mean"] <= 1.0 and r["dice_std"] >= 0.0
        assert r["test_images"] == 2  # 12 images: 2 validation, 2 test, 8 training
        assert r["wall_s"] > 0 and r["cpu_s"] > 0
        assert 50 < r["peak_mib"] < 16384  # a child's own resident peak, in MiB
        assert r["torch_threads"] == 1
    by_id = {r["id"]: r for r in rows}
    assert by_id["supervised_seg@0.25"]["labelled_images"] == 2  # ceil(0.25 * 8)
    assert by_id["acwe_mode1@0"]["labelled_images"] == 0
    assert by_id["supervised_seg@0.25"]["schedule"] == {"epochs": 1, "iterations": 1}
    assert all(len(r["dice_per_image"]) == 2 for r in rows)  # the same two test images for both methods
    assert set(by_id["acwe_mode1@0"]["dice_per_image"]) == set(by_id["supervised_seg@0.25"]["dice_per_image"])

    table = (out / "label_efficiency.md").read_text(encoding="utf-8")
    assert "| method | task | labelled fraction |" in table
    assert "| cells | 1/4 | 2 / 8 |" in table and "| cells | 0 | 0 / 8 |" in table
    assert "(vs 1/4) |" in table  # the run without labels is paired with the smallest U-Net fraction run
    assert "Schedule: " in table and "Command: `python benchmarks/label_efficiency.py" in table
    png = (out / "label_efficiency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    again = _run(out)  # resumable: finished runs with the same settings are skipped
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped") == 2
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == rows
