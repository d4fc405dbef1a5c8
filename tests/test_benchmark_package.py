"""common.benchmark: the user's MSD folder, protocol v2 (labelled share only), the plan, and the command line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.benchmark.arms import ARMS, RunContext, not_applicable
from common.benchmark.cli import main
from common.benchmark.dataset import read_dataset
from common.benchmark.protocol import Budget, labelled_subset, write_run_datalists
from common.benchmark.results import append_rows, read_rows
from common.benchmark.runner import plan


def _disk(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [int(rng.integers(size // 8, size // 4))]
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    image = 60 + 120 * label + rng.normal(0, 10, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), label


def png_folder(root: Path, cases: int = 10, size: int = 32, classes: int = 2) -> Path:
    """An MSD folder of 2D PNG images (a bright disk on a dark background) and label PNGs; no test list."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    training = []
    for i in range(cases):
        image, label = _disk(size, rng)
        Image.fromarray(image).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(label).save(root / "labels" / f"case{i:02d}.png")
        training.append({"image": f"images/case{i:02d}.png", "label": f"labels/case{i:02d}.png"})
    labels = {str(k): name for k, name in enumerate(["background", "disk", "ring"][:classes])}
    (root / "dataset.json").write_text(json.dumps({"name": "disks", "labels": labels, "training": training}))
    return root


def nifti_folder(root: Path, cases: int = 6, size: int = 32, depth: int = 6) -> Path:
    """An MSD folder of 3D NIfTI volumes (a disk through the middle slices), with a labelled test list."""
    rng = np.random.default_rng(1)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    items = []
    for i in range(cases):
        image = rng.normal(60, 10, (size, size, depth)).astype(np.float32)
        label = np.zeros((size, size, depth), np.uint8)
        for z in range(1, depth - 1):
            img, lab = _disk(size, rng)
            image[..., z], label[..., z] = img, lab
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"vol{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"vol{i}.nii.gz")
        items.append({"image": f"imagesTr/vol{i}.nii.gz", "label": f"labelsTr/vol{i}.nii.gz"})
    content = {"labels": {"0": "background", "1": "disk"}, "modality": {"0": "MR"}, "training": items[:-2]}
    content["test"] = items[-2:]
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def test_read_dataset_derives_classes_split_and_dimensions(tmp_path: Path) -> None:
    data = read_dataset(png_folder(tmp_path / "disks"))
    assert (data.num_classes, data.class_names, data.num_channels, data.spatial_dims) == (2, ("disk",), 1, 2)
    assert len(data.test) == 2 and len(data.pool) == 8 and not data.test_given  # 20 % held out, seed fixed
    again = read_dataset(tmp_path / "disks")
    assert [i["image"] for i in again.test] == [i["image"] for i in data.test]
    assert not {i["image"] for i in data.test} & {i["image"] for i in data.pool}
    volumes = read_dataset(nifti_folder(tmp_path / "vols"))
    assert volumes.spatial_dims == 3 and volumes.test_given and len(volumes.test) == 2 and len(volumes.pool) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ({"training": []}, "'labels' must be an object"),
        ({"labels": {"0": "background"}, "training": []}, "only the background"),
        ({"labels": {"0": "bg", "2": "x"}, "training": []}, "number the classes 0..1"),
        ({"labels": {"0": "bg", "1": "x"}, "training": [{"image": "a.png"}]}, "no 'training' item has a 'label'"),
    ],
)
def test_read_dataset_errors_name_the_file(tmp_path: Path, content: dict, message: str) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as e:
        read_dataset(tmp_path)
    assert str(tmp_path / "dataset.json") in str(e.value)
    with pytest.raises(FileNotFoundError, match="no dataset.json"):
        read_dataset(tmp_path / "missing")


def test_run_datalists_hold_only_the_labelled_share(tmp_path: Path) -> None:
    data = read_dataset(png_folder(tmp_path / "disks"))
    subsets = {seed: labelled_subset(data, 3, seed) for seed in range(5)}
    assert all(len(s) == 3 for s in subsets.values()) and len({tuple(s) for s in subsets.values()}) > 1
    assert labelled_subset(data, 3, 0) == subsets[0]
    paths = write_run_datalists(data, subsets[0], tmp_path / "run")
    train = json.loads(paths["train"].read_text())
    assert sorted(i["image"] for i in train["training"]) == subsets[0]
    assert all("label" in i for i in train["training"]) and len(train["unlabeled"]) == 5
    assert not any("label" in i for i in train["unlabeled"]) and "validation" not in train and "test" not in train
    evaluation = json.loads(paths["eval"].read_text())
    assert sorted(i["image"] for i in evaluation["test"]) == sorted(i["image"] for i in data.test)
    label_free = json.loads(write_run_datalists(data, [], tmp_path / "free")["train"].read_text())
    assert len(label_free["training"]) == 8 and not any("label" in i for i in label_free["training"])


def test_not_applicable_arms_are_derived_from_the_data(tmp_path: Path) -> None:
    two = not_applicable(read_dataset(png_folder(tmp_path / "two")))
    three = not_applicable(read_dataset(png_folder(tmp_path / "three", classes=3)))
    # the volume arms need 3D data; translation (and its control) target-absent images (no 'absent' list here)
    assert set(two) == {"translation", "translation_control", "otsu_3d", "chan_vese_3d"}
    assert {"acwe_unsup", "acwe_joint", "acwe_joint_control", "af_seg", "chan_vese"} <= set(three)
    assert "2 foreground classes" in three["af_seg"] and "otsu" not in three


def test_every_method_and_its_control_and_the_unet_get_equal_steps(tmp_path: Path) -> None:
    data = read_dataset(png_folder(tmp_path / "disks"))
    budget = Budget("default", steps=600, epochs=6, batch_size=8, image_size=32)
    context = RunContext(data, budget, 2, 0)
    steps = {key: arm.planned_steps(context) for key, arm in ARMS.items() if arm.bundle}
    assert set(steps.values()) == {600}, steps
    specs = plan(data, "disks", budget, list(ARMS), [2, 4], [0, 1], tmp_path / "runs", not_applicable(data))
    ids = {s["id"] for s in specs}
    assert "unet@4#s1" in ids and "otsu@0#s0" in ids and "otsu@2#s0" not in ids and not any("transl" in i for i in ids)
    assert all(s["overrides"].get("val_fraction", 0.0) == 0.0 for s in specs if s["bundle"])
    for spec in specs:  # no validation: the last network is evaluated
        o = spec["overrides"]
        if spec["bundle"]:
            assert o["val_interval"] > o.get("max_epochs", o.get("constant_epochs", 0) + o.get("decay_epochs", 0))
    same = [s for s in specs if s["labelled"] == 2 and s["seed"] == 0 and s["bundle"]]
    assert len({tuple(s["labelled_cases"]) for s in same}) == 1  # every arm of a seed gets the same labelled cases


def test_results_file_keeps_the_newest_row_and_is_byte_stable(tmp_path: Path) -> None:
    path = tmp_path / "t" / "runs.jsonl.gz"
    append_rows(path, [{"id": "a", "v": 1}, {"id": "b", "v": 1}])
    append_rows(path, [{"id": "a", "v": 2}])
    assert read_rows(path) == [{"id": "b", "v": 1}, {"id": "a", "v": 2}]
    first = path.read_bytes()
    assert first[3] == 0, "the gzip header names a file: the bytes would depend on the writing process"
    append_rows(path, [{"id": "a", "v": 2}])
    assert path.read_bytes() == first
    path.write_bytes(gzip.compress(b"{not json\n"))
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        read_rows(path)


def _corrupt_pool_labels_outside(folder: Path, data_cases: list[str], keep: set[str]) -> None:
    """Overwrite the label file of every pool case not in ``keep`` with bytes no reader accepts."""
    content = json.loads((folder / "dataset.json").read_text())
    for item in content["training"]:
        if str(folder / item["image"]) in data_cases and str(folder / item["image"]) not in keep:
            (folder / item["label"]).write_bytes(b"not an image")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "nifti"])
def test_quick_run_on_a_user_folder_writes_results_tables_plot_and_recommendation(tmp_path: Path, kind: str) -> None:
    folder = png_folder(tmp_path / "data") if kind == "png" else nifti_folder(tmp_path / "data")
    data = read_dataset(folder)
    # protocol v2: a run reads no pool label outside its labelled share; unreadable ones would fail the runs
    _corrupt_pool_labels_outside(folder, [str(i["image"]) for i in data.pool], set(labelled_subset(data, 2, 0)))
    out = tmp_path / "out"
    arms = ["unet", "adversarial", "adversarial_control", "otsu"]
    argv = ["--dataset-dir", str(folder), "--labelled", "2", "--quick", "--seeds", "0", "--out", str(out)]
    assert main([*argv, "--arms", *arms, "--jobs", "2"]) == 0
    task_dir = out / "data"
    rows = read_rows(out / "results" / "data" / "runs.jsonl.gz")
    assert {r["id"] for r in rows} == {"unet@2#s0", "adversarial@2#s0", "adversarial_control@2#s0", "otsu@0#s0"}
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        share = [] if row["arm"] == "otsu" else sorted(data.case_id(c) for c in labelled_subset(data, 2, 0))
        assert row["labelled_cases"] == share
        assert row["commit"] and row["versions"]["torch"] and row["protocol"] == "v2" and row["dice_per_image"]
    assert (task_dir / "label_efficiency.png").stat().st_size > 1000
    assert "adversarial" in (task_dir / "label_efficiency.md").read_text()
    recommendation = (task_dir / "recommendation.md").read_text()
    assert "supervised_seg" in recommendation and str(folder) in recommendation


def test_record_coverage_gives_each_epochs_mean() -> None:
    from ignite.engine import Engine

    from common.benchmark.runner import record_coverage

    values = iter([0.2, 0.4, 0.6, 1.0])
    trainer = Engine(lambda engine, batch: {"coverage": next(values)})
    coverage = record_coverage(trainer)
    trainer.run([0, 1], max_epochs=2)
    assert coverage == [0.3, 0.8]
    silent = Engine(lambda engine, batch: {"loss": 1.0})
    assert (record_coverage(silent), silent.run([0], max_epochs=1))[0] == [None]


def test_confident_pixel_tally_counts_confident_pixels_and_their_precision():
    from common.benchmark.diagnostics import ConfidentPixelTally

    prob = torch.tensor([[[0.99, 0.5], [0.02, 0.03]], [[0.01, 0.5], [0.98, 0.97]]])  # (C=2, 2, 2)
    label = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])  # classes [[0, 0], [1, 0]]
    tally = ConfidentPixelTally(0.95)
    tally.add(prob, label)
    found = tally.result()
    assert found["images"] == 1 and found["coverage"] == 0.75  # the 0.5 / 0.5 pixel is not confident
    assert found["precision"] == round(2 / 3, 4)  # background right, one foreground right, one foreground wrong
    assert found["foreground_share"] == round(2 / 3, 4) and found["foreground_precision"] == 0.5
    assert found["truth_foreground"] == 0.25


def test_unimatch_run_is_diagnosed_against_the_truth_only_after_it_trained(tmp_path: Path) -> None:
    """``run_specs(..., diagnose=True)``: a UniMatch row gains its pseudo-labels' coverage and precision on the
    unlabelled pool cases, from a truth datalist written after the run trained (the training datalist holds no
    label of those cases)."""
    from common.benchmark.runner import run_specs

    data = read_dataset(png_folder(tmp_path / "data", cases=12))
    budget = Budget("quick", steps=4, epochs=2, batch_size=2, image_size=32)
    specs = plan(data, "disks", budget, ["unimatch", "unet"], [2], [0], tmp_path / "runs", {})
    rows = run_specs(specs, data, tmp_path / "runs.jsonl.gz", "test", keep=True, diagnose=True)
    by_arm = {r["arm"]: r for r in rows}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert "pseudo_labels" not in by_arm["unet"]  # no confidence threshold: not diagnosed
    found = by_arm["unimatch"]["pseudo_labels"]
    unlabelled = len(data.pool_cases) - 2
    assert found["images"] == unlabelled and found["threshold"] == 0.95 and 0 <= found["coverage"] <= 1
    run_dir = Path(specs[0]["run_dir"])
    train = json.loads((run_dir / "datalist_train.json").read_text())
    assert len(train["unlabeled"]) == unlabelled and not any("label" in i for i in train["unlabeled"])
    truth = json.loads((run_dir / "datalist_truth.json").read_text())
    assert len(truth["test"]) == unlabelled and all("label" in i for i in truth["test"])
    assert (run_dir / "datalist_truth.json").stat().st_mtime >= (run_dir / "models" / "model.pt").stat().st_mtime


def test_evaluation_in_batches_gives_each_image_the_same_dice(tmp_path: Path) -> None:
    """The built-in tasks evaluate their test images in batches (``eval_batch_size``): the same per-image Dice as
    one at a time, and the same settings hash (finished rows stay finished)."""
    from common.benchmark.runner import evaluation_workflow, run_overrides, run_scores, run_specs

    data = read_dataset(png_folder(tmp_path / "data", cases=12))
    budget = Budget("quick", steps=4, epochs=2, batch_size=2, image_size=32)
    specs = plan(data, "disks", budget, ["unet"], [2], [0], tmp_path / "runs", {}, eval_batch_size=3)
    one = plan(data, "disks", budget, ["unet"], [2], [0], tmp_path / "runs", {})
    assert specs[0]["hash"] == one[0]["hash"] and specs[0]["eval_batch_size"] == 3
    (row,) = run_specs(specs, data, tmp_path / "runs.jsonl.gz", "test", keep=True)
    assert row["status"] == "ok" and row["test_cases"] == len(data.test) >= 2
    spec = {k: v for k, v in specs[0].items() if not k.startswith("_")}
    workflow = evaluation_workflow({**spec, "eval_batch_size": 1}, run_overrides(spec), eval_name="eval")
    assert workflow.parser.get_parsed_content("validate#dataloader").batch_size == 1
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert run_scores(spec)["dice_per_image"] == row["dice_per_image"]


def test_provenance_is_clean_when_only_results_changed(tmp_path: Path, monkeypatch) -> None:
    """A run that rewrites a committed results file (``task.json``) still records a clean commit; a changed code file
    marks it dirty. (``git status --porcelain`` begins the line of a file changed in the work tree with a space.)"""
    import subprocess

    from common.benchmark import runner

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "task.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    monkeypatch.setattr(runner, "REPO", tmp_path)
    (tmp_path / "results" / "task.json").write_text('{"changed": true}')
    found = runner.provenance()
    assert found["dirty"] is False and len(found["commit"]) == 12
    (tmp_path / "code.py").write_text("x = 2\n")
    assert runner.provenance()["dirty"] is True


def test_the_benchmark_evaluation_runs_the_evaluator_alone(tmp_path: Path) -> None:
    """AF-Seg's ``evaluate.json`` also draws a pipeline panel, which would rerun its stages 1 and 2 on the training
    images of every benchmark run; the benchmark's evaluation runs only the evaluator."""
    from common.benchmark.runner import EVALUATION_RUN, evaluation_workflow, run_overrides

    data = read_dataset(png_folder(tmp_path / "data", cases=6))
    budget = Budget("quick", steps=2, epochs=1, batch_size=2, image_size=32)
    (spec,) = plan(data, "disks", budget, ["af_seg"], [2], [0], tmp_path / "runs", {})
    spec = {k: v for k, v in spec.items() if not k.startswith("_")}
    workflow = evaluation_workflow(spec, run_overrides(spec))
    assert workflow.parser["run"] == EVALUATION_RUN
