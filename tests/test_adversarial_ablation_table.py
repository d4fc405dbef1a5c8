"""benchmarks/experiments/adversarial_ablation_table.py: each run's Dice, precision and recall paired with the control
by seed."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.experiments import adversarial_ablation_table as abl


def _write(runs: Path, pattern: str, seed: int, dice: float, precision: float, recall: float) -> None:
    folder = runs / pattern.format(seed) / "eval"
    folder.mkdir(parents=True)
    summary = {m: {"mean": {"mean": v}} for m, v in (("dice", dice), ("precision", precision), ("recall", recall))}
    (folder / "metrics.json").write_text(json.dumps({"summary": summary, "per_image": [], "class_names": ["digit"]}))


def test_rows_pair_with_the_control_by_seed_and_say_which_seeds_they_have(tmp_path: Path):
    both = abl.RUNS["both (semi_weight 1)"]
    for s, (c, b) in enumerate([(0.50, 0.55), (0.60, 0.66), (0.70, 0.74)]):
        _write(tmp_path, abl.RUNS[abl.CONTROL], s, c, 0.6, 0.5)
        _write(tmp_path, both, s, b, 0.5, 0.7)
    _write(tmp_path, abl.RUNS["adversarial terms only (semi_weight 0)"], 0, 0.40, 0.6, 0.5)
    text = abl.markdown(abl.read(tmp_path, [0, 1, 2]), [0, 1, 2])
    assert "| both (semi_weight 1) | 3 | 0.650 | +0.050 [+0.025, +0.075] | 0.500 | -0.100 [-0.100, -0.100] |" in text
    assert "| adversarial terms only (semi_weight 0) | 1 | 0.400 | -0.100 (one seed) |" in text
    assert "| pseudo-labels only (adv_weight 0, semi_adv_weight 0) | none |" in text
