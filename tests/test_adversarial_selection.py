"""benchmarks/experiments/adversarial_selection.py: the grid, the runs' identities, and a choice that reads the
validation Dice only (never the test Dice every run also has)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.experiments import adversarial_selection as sel

REPO = Path(__file__).resolve().parent.parent
le = sel.le

DATA = {"dataset_dir": "/nowhere", "training_images": 100, "split_given": True}


def test_grid_puts_the_papers_setting_first():
    settings = sel.grid([0.1, 0.2], [1.0, 0.1])
    assert settings[0] == {"semi_threshold": 0.2, "semi_weight": 0.1} == sel.PAPER
    assert len(settings) == 4 and len({sel.setting_name(s) for s in settings}) == 4


def test_each_setting_is_its_own_run_with_the_benchmarks_recipe(tmp_path: Path):
    base = {
        (s["arm"], s["seed"]): s for s in le.plan(le.TASKS["cluttered_mnist"], DATA, ["adversarial"], [0], tmp_path)
    }
    plain = base["adversarial", 0]
    a = sel.spec_for(plain, {"semi_threshold": 0.1, "semi_weight": 1.0}, tmp_path)
    b = sel.spec_for(plain, sel.PAPER, tmp_path)
    assert a["overrides"]["semi_threshold"] == 0.1 and a["overrides"]["semi_weight"] == 1.0
    assert len({a["id"], b["id"], plain["id"]}) == 3 and a["hash"] != b["hash"] and a["run_dir"] != b["run_dir"]
    assert a["overrides"]["output_dir"].startswith(a["run_dir"]) and a["overrides"]["ckpt_dir"].startswith(a["run_dir"])
    same = {
        k: v for k, v in a["overrides"].items() if k not in ("semi_threshold", "semi_weight", "output_dir", "ckpt_dir")
    }
    assert same == {k: v for k, v in plain["overrides"].items() if k in same}  # steps, data, network: the arm's
    assert a["planned_steps"] == plain["planned_steps"] == le.TASKS["cluttered_mnist"].steps
    assert sel.spec_for(plain, sel.PAPER, tmp_path)["hash"] == b["hash"]  # a rerun finds it


def _row(setting, seed, validation, test, status="ok"):
    return {"setting": setting, "seed": seed, "validation_dice": validation, "dice_mean": test, "status": status}


def test_choice_reads_the_validation_dice_not_the_test_dice():
    low, high = {"semi_threshold": 0.1, "semi_weight": 0.1}, {"semi_threshold": 0.03, "semi_weight": 0.1}
    settings = [sel.PAPER, low, high]
    rows = [
        _row(sel.PAPER, 0, 0.50, 0.90),  # best on test, not on validation
        _row(sel.PAPER, 1, 0.52, 0.90),
        _row(low, 0, 0.60, 0.10),
        _row(low, 1, 0.58, 0.10),
        _row(high, 0, 0.70, 0.10),  # best validation on seed 0, but its seed 1 failed: not eligible
        _row(high, 1, None, None, status="failed"),
    ]
    chosen, table = sel.choose(rows, settings, [0, 1])
    assert chosen == low
    assert table[sel.setting_name(low)] == [0.60, 0.58] and table[sel.setting_name(high)] == [0.70, None]


def test_choice_ties_go_to_the_paper_and_nothing_finished_is_an_error():
    other = {"semi_threshold": 0.1, "semi_weight": 1.0}
    rows = [_row(other, 0, 0.5, 0.9), _row(sel.PAPER, 0, 0.5, 0.1)]
    assert sel.choose(rows, [sel.PAPER, other], [0])[0] == sel.PAPER
    with pytest.raises(RuntimeError, match="no setting finished"):
        sel.choose([_row(other, 0, None, None, "failed")], [other], [0])


def test_stage_1b_changes_one_key_at_a_time_from_the_first_choice():
    first = {"semi_threshold": 0.1, "semi_weight": 1.0}
    variants = sel.coordinate_variants(first, [0.001, 0.01, 0.1], [0, 1, 3], paper_start=1)
    assert variants == [
        {**first, "adv_weight": 0.001},
        {**first, "adv_weight": 0.1},
        {**first, "semi_start_epoch": 0},
        {**first, "semi_start_epoch": 3},
    ]  # the paper's 0.01 and the benchmark's start are the first choice itself
    rows = [_row(first, 0, 0.60, 0.1), _row(variants[0], 0, 0.60, 0.9), _row(variants[3], 0, 0.65, 0.1)]
    rows += [_row(v, 0, 0.5, 0.9) for v in variants[1:3]]
    chosen, table = sel.choose(rows, [first, *variants], [0])
    assert chosen == variants[3] and len(table) == 5  # a tie with the first choice would keep it
    assert sel.choose(rows[:2], [first, variants[0]], [0])[0] == first


def _test_row(arm, setting, seed, dice, steps=600):
    row = {"arm": arm, "labelled": 20, "seed": seed, "dice_mean": dice, "status": "ok", "segmenter_steps": steps}
    return row if setting is None else {**row, "setting": setting}


def test_stage_2_pairs_each_setting_with_the_control_at_equal_steps():
    other = {"semi_threshold": 0.1, "semi_weight": 1.0}
    control = [_test_row("adversarial_control", None, s, d) for s, d in enumerate([0.50, 0.60, 0.70])]
    chosen = [_test_row("adversarial", other, s, d) for s, d in enumerate([0.55, 0.66, 0.74])]
    paper = [_test_row("adversarial", sel.PAPER, s, d, steps=300 if s == 1 else 600) for s, d in enumerate([0.5] * 3)]
    unrelated = [_test_row("adversarial", {"semi_threshold": 0.03, "semi_weight": 0.1}, s, 0.0) for s in range(3)]
    table = {sel.setting_name(other): [0.6]}
    text = sel.markdown(
        le.TASKS["cluttered_mnist"], 20, table, other, control + chosen + paper + unrelated, [0, 1, 2], ""
    )
    chosen_line = next(line for line in text.splitlines() if line.startswith("| chosen:"))
    assert "0.550, 0.660, 0.740 | +0.050 |" in chosen_line and "better" in chosen_line  # differences 0.05, 0.06, 0.04
    paper_line = next(line for line in text.splitlines() if line.startswith("| paper:"))
    assert "not compared: unequal segmenter steps (300 vs 600, seed 1)" in paper_line


def test_a_given_setting_parses_back_from_its_name_and_unknown_keys_are_refused():
    setting = {"semi_threshold": 0.2, "semi_weight": 1.0, "semi_start_epoch": 3}
    assert sel.parse_setting(sel.setting_name(setting)) == setting
    assert isinstance(sel.parse_setting("semi_start_epoch=3")["semi_start_epoch"], int)
    with pytest.raises(ValueError, match="semi_thresh"):
        sel.parse_setting("semi_thresh=0.2")
    with pytest.raises(ValueError, match="key=value"):
        sel.parse_setting("semi_threshold")


def test_a_given_setting_is_tested_without_a_selection_table_or_the_papers_row():
    given = {"semi_threshold": 0.2, "semi_weight": 1.0}
    control = [_test_row("adversarial_control", None, s, d) for s, d in zip([3, 4, 5], [0.50, 0.60, 0.70])]
    mine = [_test_row("adversarial", given, s, d) for s, d in zip([3, 4, 5], [0.40, 0.62, 0.71])]
    paper = [_test_row("adversarial", sel.PAPER, s, 0.9) for s in [3, 4, 5]]
    text = sel.markdown(le.TASKS["cluttered_mnist"], 20, {}, given, control + mine + paper, [3, 4, 5], "")
    assert "Stage 1: not run; the setting `semi_threshold=0.2,semi_weight=1` was given (`--chosen`)" in text
    assert "| paper:" not in text and "| setting |" not in text
    chosen_line = next(line for line in text.splitlines() if line.startswith("| chosen:"))
    assert "0.400, 0.620, 0.710 | -0.023 |" in chosen_line and "no difference" in chosen_line
