"""benchmarks/experiments/label_efficiency_v1.py: the equal-step rule, the paired comparison it reports, and an
end-to-end ``--quick`` run (a few arms, two seeds) whose outputs are checked for their structure and for being
resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.experiments import label_efficiency_v1 as le

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "experiments" / "label_efficiency_v1.py"

DATA = {"dataset_dir": "/nowhere", "training_images": 100, "split_given": True, "translation_sizes": {"num_train": 100}}


def test_results_of_concurrent_invocations_are_all_kept(tmp_path: Path):
    """Two invocations of one task (other arms) that loaded the file before either wrote: both rows survive, and a
    rerun of a run replaces its row."""
    path = tmp_path / "results.json"
    le.record_result(path, {"id": "unet@4#s0", "dice_mean": 0.5})
    le.record_result(path, {"id": "mipr@4#s0", "dice_mean": 0.6})
    rows = le.record_result(path, {"id": "unet@4#s0", "dice_mean": 0.7})
    assert sorted((r["id"], r["dice_mean"]) for r in rows) == [("mipr@4#s0", 0.6), ("unet@4#s0", 0.7)]
    assert le.load_results(path) == rows


def test_one_object_tasks_clean_mipr_pseudo_labels_to_the_largest_component(tmp_path: Path):
    by_id = {s["id"]: s for s in le.plan(le.TASKS["cluttered_mnist"], DATA, ["mipr", "mipr_control"], [0], tmp_path)}
    assert by_id["mipr@20#s0"]["overrides"]["cleaning_keep_largest_component"] is True  # one digit per image
    assert "cleaning_keep_largest_component" not in by_id["mipr_control@20#s0"]["overrides"]  # no pseudo-labels
    assert "new_layouts" not in by_id["mipr@20#s0"]["overrides"]  # the bundle's 0
    (moved,) = le.plan(le.TASKS["cluttered_mnist"], DATA, ["mipr_new_layouts"], [0], tmp_path)[:1]
    assert moved["overrides"] == {**by_id["mipr@20#s0"]["overrides"], "new_layouts": le.MIPR_NEW_LAYOUTS} | {
        k: moved["overrides"][k] for k in ("output_dir", "ckpt_dir") if k in moved["overrides"]
    }
    for task in ("cells_hard", "mni_tissue"):  # many nuclei, several tissue regions: the default, every object
        assert all(
            "cleaning_keep_largest_component" not in s["overrides"]
            for s in le.plan(le.TASKS[task], DATA, ["mipr"], [0], tmp_path)
        )


@pytest.mark.parametrize("task", list(le.TASKS))
def test_every_method_and_its_control_plan_equal_steps(task: str, tmp_path: Path):
    t = le.TASKS[task]
    specs = le.plan(t, DATA, list(le.ARMS), [0, 1, 2], tmp_path)
    by_id = {s["id"]: s for s in specs}
    pairs = 0
    for s in specs:
        control = le.ARMS[s["arm"]].control
        if control and control not in t.not_applicable:
            other = by_id[s["id"].replace(s["arm"] + "@", control + "@")]
            assert s["planned_steps"] == other["planned_steps"] > 0
            pairs += 1
        if s["bundle"] is not None:
            assert s["planned_steps"] == t.steps * (2 if s["arm"].startswith("mipr") else 1)
    assert pairs >= 3 * 2  # at least two methods with a control, three seeds each
    assert not [s for s in specs if s["arm"] in t.not_applicable]


def test_plan_refuses_a_control_with_other_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def more_steps(c):
        return {**le._adversarial(c), "max_epochs": c.task.epochs + 1}

    monkeypatch.setitem(le.ARMS, "adversarial_control", replace(le.ARMS["adversarial_control"], overrides=more_steps))
    with pytest.raises(ValueError, match="segmenter steps"):
        le.plan(le.TASKS["cells_hard"], DATA, ["adversarial"], [0], tmp_path)


def _row(arm: str, seed: int, dice: float, steps: int = 100, labelled: int | None = 4) -> dict:
    return {"arm": arm, "labelled": labelled, "seed": seed, "status": "ok", "dice_mean": dice, "segmenter_steps": steps}


def test_compare_pairs_by_seed_and_rejects_unequal_steps():
    rows = [_row("adversarial", s, d) for s, d in enumerate((0.60, 0.70, 0.80))]
    rows += [_row("adversarial_control", s, d) for s, d in enumerate((0.50, 0.55, 0.60))]
    diff, seeds, note = le.compare(rows, "adversarial", "adversarial_control", 4)
    assert seeds == [0, 1, 2] and note == ""
    # differences 0.10, 0.15, 0.20: mean 0.15, sd 0.05, t(0.975, 2) = 4.303 -> 0.15 +- 0.1242
    assert diff.mean == pytest.approx(0.15) and diff.lo == pytest.approx(0.0258, abs=1e-4)
    assert diff.hi == pytest.approx(0.2742, abs=1e-4) and le._verdict(diff) == "better"
    rows[-1]["segmenter_steps"] = 99
    diff, _, note = le.compare(rows, "adversarial", "adversarial_control", 4)
    assert diff is None and "unequal segmenter steps" in note
    rows = [_row("adversarial", s, d) for s, d in enumerate((0.60, 0.50, 0.70))]
    rows += [_row("adversarial_control", s, 0.6) for s in range(3)]
    assert le._verdict(le.compare(rows, "adversarial", "adversarial_control", 4)[0]) == "no difference"
    rows.append({"arm": "adversarial", "seed": 3, "status": "failed", "error": "killed"})  # a failed row, few keys
    assert le.compare(rows, "adversarial", "adversarial_control", 4)[1] == [0, 1, 2]


def test_labelled_fraction_gives_the_labelled_count():
    from common.data.datalist import select_labelled

    items = [{"image": f"/x/{i}.npy", "label": f"/y/{i}.npy"} for i in range(81)]
    for k in (1, 4, 12, 20, 80):
        c = le.RunContext(le.TASKS["mni_tissue"], {**DATA, "training_images": 81}, k, 0)
        assert len(select_labelled(items, c.labelled_fraction(), 0)[0]) == k


ARMS = ["unet", "adversarial", "adversarial_control", "otsu"]


def _run(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--task", "cluttered_mnist", "--quick", "--arms", *ARMS, "--out", str(out)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quick_run_writes_tables_plot_and_resumes(tmp_path: Path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "cluttered_mnist_quick"
    rows = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    expected = {f"unet@{k}#s{s}" for k in ("20", "all") for s in (0, 1)}
    expected |= {f"{a}@20#s{s}" for a in ("adversarial", "adversarial_control") for s in (0, 1)}
    expected |= {f"otsu@0#s{s}" for s in (0, 1)}
    assert {r["id"] for r in rows} == expected
    for r in rows:
        assert r["status"] == "ok" and r["torch_threads"] == 1
        assert r["test_images"] == 20 and len(r["dice_per_image"]) == 20
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and 50 < r["peak_mib"] < 16384
        assert r["segmenter_steps"] == (0 if r["arm"] == "otsu" else 8)  # measured in the run: the quick budget
        if r["arm"] != "otsu":  # the last validation's Dice on the labelled validation images (what a user tunes on)
            assert isinstance(r["validation_dice"], float), r
            assert [p["epoch"] for p in r["validation_curve"]] == [2], r  # validated once, after the last epoch
            assert r["validation_curve"][-1]["dice"] == r["validation_dice"]
    trained = [r for r in rows if r["arm"] != "otsu" and r["labelled"] == 20]
    assert {r["labelled_images"] for r in trained} == {20}
    table = (folder / "label_efficiency.md").read_text(encoding="utf-8")
    assert "| method | labelled images | method Dice | control Dice | mean paired Δ | 95% CI of paired Δ |" in table
    assert "| adversarial semi-supervised (adversarial_semi_seg) | 20 |" in table
    assert "n/a" in table and "`af_seg`" in table  # not applicable, with the reason
    assert "QUICK RUN" in table and "Command: `python benchmarks/experiments/label_efficiency_v1.py" in table
    png = (folder / "label_efficiency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    again = _run(tmp_path)  # resumable: finished runs with the same settings are skipped
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped") == len(expected)


def test_mipr_pair_diagnostics_apply_each_rule_to_the_same_scores(tmp_path: Path):
    """Four scored pairs: S's check passes them all, G's reconstruction error only the two right ones; the report
    gives each rule's accepted count and true Dice, and the rank correlations of the scores with the true Dice."""
    pairs = [
        {"source": "a", "dice": 0.95, "reconstruction_error": 0.01, "true_dice": 0.9},
        {"source": "b", "dice": 0.97, "reconstruction_error": 0.02, "true_dice": 0.8},
        {"source": "c", "dice": 0.99, "reconstruction_error": 0.20, "true_dice": 0.3},
        {"source": "d", "dice": 0.92, "reconstruction_error": 0.30, "true_dice": 0.1},
    ]
    rejected = [{"source": "e", "dice": None, "true_dice": 0.0, "reason": "empty pseudo-label"}]
    datalist = {"training": pairs, "rejected": rejected, "acceptance": "segmenter", "acceptance_dice": 0.9}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    out = le.mipr_pair_diagnostics(tmp_path, {"max_reconstruction_error": 0.05})
    assert out["rules"]["segmenter"] == {"accepted": 4, "true_dice": 0.525}
    assert out["rules"]["reconstruction"] == {"accepted": 2, "true_dice": 0.85}
    assert out["rules"]["both"] == {"accepted": 2, "true_dice": 0.85}
    assert out["rho_reconstruction"] == 1.0 and out["rho_check"] == 0.2
    assert (out["wrong_pairs"], out["right_pairs"]) == (2, 1)  # c, d below 0.5; a above 0.8 (b is 0.8)
    assert out["reconstruction_error_wrong"] == 0.25 and out["reconstruction_error_right"] == 0.01
    assert out["true_dice_all"] == 0.525  # the scored pairs; the empty pseudo-label has no check to rank
    assert "reconstruction" not in le.mipr_pair_diagnostics(tmp_path, {"max_reconstruction_error": None})["rules"]


def test_the_weight_decay_pair_is_the_translation_pair_with_one_key_changed(tmp_path: Path):
    arms = ["translation", "translation_control", "translation_seg_wd0", "translation_control_seg_wd0"]
    data = {**DATA, "translation_sizes": le.TRANSLATION_SIZES}
    by_id = {s["id"]: s for s in le.plan(le.TASKS["cluttered_mnist"], data, arms, [0], tmp_path)}
    places = ("output_dir", "ckpt_dir")
    for plain, wd0 in (("translation", "translation_seg_wd0"), ("translation_control", "translation_control_seg_wd0")):
        a, b = by_id[f"{plain}@20#s0"], by_id[f"{wd0}@20#s0"]
        assert a["train_configs"] == b["train_configs"] and a["planned_steps"] == b["planned_steps"]
        changed = {k: v for k, v in b["overrides"].items() if k not in places and a["overrides"].get(k) != v}
        assert changed == {"segmentation_weight_decay": 0.0}
    assert le.ARMS["translation_seg_wd0"].control == "translation_control_seg_wd0"
