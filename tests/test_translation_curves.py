"""benchmarks/experiments/translation_curves.py: each config is the benchmark's translation recipe plus a validation
every epoch and the last network kept; the table lays the curves out by epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.experiments import translation_curves as tc

REPO = Path(__file__).resolve().parent.parent
le = tc.le

TASK = le.TASKS["cluttered_mnist"]
DATA = {
    "dataset_dir": "/nowhere",
    "training_images": 2000,
    "split_given": True,
    "translation_sizes": {"num_train": 2000, "num_val": 200, "num_test": 500},
}


def test_every_config_exists_and_runs_the_benchmarks_recipe_with_a_curve(tmp_path: Path):
    (base,) = [s for s in le.plan(TASK, DATA, ["translation"], [0], tmp_path) if s["labelled"] == 20]
    specs = [tc.curve_spec(base, c, tmp_path) for c in tc.CONFIGS]
    for config, s in zip(tc.CONFIGS, specs):
        assert (REPO / "bundles" / "translation_semi_seg" / "configs" / config).is_file()
        assert s["train_configs"][0] == "train.json" and s["train_configs"][-1] == config
        assert s["eval_configs"] == s["train_configs"] + ["evaluate.json"]
        assert s["overrides"]["val_interval"] == 1 and s["overrides"]["select_by_key_metric"] is False
        recipe = {k: v for k, v in s["overrides"].items() if k not in ("val_interval", "output_dir", "ckpt_dir")}
        recipe.pop("select_by_key_metric")
        assert recipe == {k: v for k, v in base["overrides"].items() if k in recipe}
        assert s["overrides"]["ckpt_dir"].startswith(s["run_dir"])
    assert len({s["id"] for s in specs}) == len({s["hash"] for s in specs}) == len({s["run_dir"] for s in specs}) == 8
    assert specs[0]["train_configs"] == ["train.json"]


def test_the_weight_decay_variant_is_the_method_with_one_key_changed(tmp_path: Path):
    (base,) = [s for s in le.plan(TASK, DATA, ["translation"], [0], tmp_path) if s["labelled"] == 20]
    method = tc.curve_spec(base, "train.json", tmp_path)
    name = "train.json+segmentation_weight_decay=0"
    variant = tc.curve_spec(base, name, tmp_path)
    assert variant["train_configs"] == ["train.json"] and variant["arm"] == f"translation:{name}"
    assert variant["overrides"] == {**method["overrides"], "segmentation_weight_decay": 0.0} | {
        k: variant["overrides"][k] for k in ("output_dir", "ckpt_dir") if k in variant["overrides"]
    }
    assert variant["id"] == "train+segmentation_weight_decay0@20#s0" and variant["hash"] != method["hash"]


def test_table_lays_each_run_out_by_epoch():
    rows = [
        {
            "arm": "translation:train.json",
            "seed": 0,
            "labelled": 20,
            "status": "ok",
            "validation_curve": [
                {"epoch": 1, "iteration": 100, "dice": 0.1},
                {"epoch": 2, "iteration": 200, "dice": 0.3},
            ],
            "dice_mean": 0.31,
            "segmenter_steps": 200,
            "wall_s": 12.0,
        },
        {"arm": "translation:seg_only.json", "seed": 0, "status": "failed"},
    ]
    text = tc.markdown(rows, ["train.json", "seg_only.json"], "cmd", quick=False)
    assert "| config | seed | epoch 1 | epoch 2 | test Dice | steps | wall s |" in text
    assert "| train.json | 0 | 0.100 | 0.300 | 0.310 | 200 | 12 |" in text
    assert "| seg_only.json | 0 | failed |" in text


def test_table_pairs_each_method_with_its_control_by_seed():
    def row(config: str, seed: int, dice: float) -> dict:
        curve = [{"epoch": 1, "iteration": 100, "dice": dice}]
        return {"arm": f"translation:{config}", "seed": seed, "labelled": 20, "status": "ok", "validation_curve": curve,
                "dice_mean": dice, "segmenter_steps": 100, "wall_s": 1.0}  # fmt: skip

    method, control = tc.PAIRS[1]
    rows = [row(method, k, 0.5 + 0.01 * k) for k in range(3)] + [row(control, k, 0.4) for k in range(3)]
    rows += [row("train.json", 0, 0.3)]  # its control has no seed: no row for that pair
    text = tc.markdown(rows, [method, control, "train.json"], "cmd", quick=False)
    assert f"| {method} | {control} | 3 | +0.110 | [+0.085, +0.135] | better |" in text
    assert "| train.json | segmentation_path_only.json |" not in text


def test_pairs_with_unequal_steps_are_not_compared():
    def row(config: str, seed: int, steps: int) -> dict:
        return {"arm": f"translation:{config}", "seed": seed, "labelled": 20, "status": "ok", "validation_curve": [],
                "dice_mean": 0.5, "segmenter_steps": steps, "wall_s": 1.0}  # fmt: skip

    method, control = tc.PAIRS[0]
    rows = [row(method, k, 600) for k in range(2)] + [row(control, k, 1800) for k in range(2)]
    text = tc.markdown(rows, [method, control], "cmd", quick=False)
    assert f"| {method} | {control} | 2 | - | - | not compared: unequal segmenter steps (600 vs 1800, seed 0) |" in text


def test_select_on_validation_tests_the_best_validation_network(tmp_path: Path):
    (base,) = [s for s in le.plan(TASK, DATA, ["translation"], [0], tmp_path) if s["labelled"] == 20]
    last, best = (tc.curve_spec(base, "train.json", tmp_path / k, select_on_validation=k == "b") for k in "ab")
    assert last["overrides"]["select_by_key_metric"] is False and best["overrides"]["select_by_key_metric"] is True
    assert last["hash"] != best["hash"]
    rows = [{"arm": "translation:train.json", "seed": 0, "labelled": 20, "status": "failed"}]
    assert "the test Dice is the last network's" in tc.markdown(rows, ["train.json"], "cmd", quick=False)
    text = tc.markdown(rows, ["train.json"], "cmd", quick=False, select_on_validation=True)
    assert "the test Dice is the network of the highest validation Dice's" in text


def test_separation_of_a_quick_run_scores_its_residual_against_the_digits(tmp_path: Path):
    """A quick curve run (8 steps) of the proposed model, then the separation diagnostic on its model.pt: after even
    these few steps its residual lies on the digits well above their share of the pixels (2.8 x here)."""
    from benchmarks.experiments import translation_separation as sep

    options = ["--quick", "--configs", tc.PAIRS[1][0], "--seeds", "0", "--out", str(tmp_path)]
    assert tc.main([*options, "--jobs", "1"]) == 0
    assert sep.main(options) == 0
    (row,) = json.loads((tmp_path / "cluttered_mnist_quick" / "curves" / "translation_separation.json").read_text())
    assert row["config"] == tc.PAIRS[1][0] and row["images"] == 20 and 0.01 < row["target_share"] < 0.2
    assert row["enrichment"] > 1.5 and row["mass_share"] > 1.5 * row["target_share"]  # means over images
    assert row["dice_mean"] is not None
    text = (tmp_path / "cluttered_mnist_quick" / "curves" / "translation_separation.md").read_text()
    assert f"| {tc.PAIRS[1][0]} | 0 | 20 |" in text
    with pytest.raises(SystemExit, match="no finished run"):
        sep.main(["--quick", "--configs", "train.json", "--seeds", "0", "--out", str(tmp_path)])
