"""The ``translation`` arm of the benchmark (translation_semi_seg, Vorontsov et al., MedIA 2022): the ``absent`` list of
a dataset.json (image-level tags of target-absent images), the reasons it does not apply, its plan and datalists, the
bundle's datalist reader, a quick run, and cluttered MNIST's export of its A images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_benchmark_package import _corrupt_pool_labels_outside, nifti_folder, png_folder
from test_cluttered_mnist import write_small_mnist

from common.benchmark.arms import ARMS, RunContext, not_applicable
from common.benchmark.cli import main
from common.benchmark.dataset import read_dataset
from common.benchmark.protocol import Budget, labelled_subset
from common.benchmark.results import read_rows
from common.benchmark.runner import plan, prepare_run_dir

BUDGET = Budget("default", steps=600, epochs=6, batch_size=8, image_size=32)


def add_absent(root: Path, count: int = 6, size: int = 48) -> Path:
    """Add ``count`` target-absent PNG images (the background without a disk) as the ``absent`` list."""
    rng = np.random.default_rng(2)
    (root / "imagesAbs").mkdir()
    content = json.loads((root / "dataset.json").read_text())
    content["absent"] = []
    for i in range(count):
        image = np.clip(60 + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "imagesAbs" / f"bg{i}.png")
        content["absent"].append({"image": f"./imagesAbs/bg{i}.png"} if i % 2 else f"imagesAbs/bg{i}.png")
    (root / "dataset.json").write_text(json.dumps(content))
    return root


def disks(root: Path, cases: int = 10, size: int = 48, absent: int = 6) -> Path:
    """A 2D PNG folder at a preset size of the translation network, with ``absent`` target-absent images."""
    return add_absent(png_folder(root, cases=cases, size=size), absent, size)


def test_absent_list_is_read_with_its_paths_resolved_and_errors_name_the_entry(tmp_path: Path) -> None:
    root = disks(tmp_path / "d")
    data = read_dataset(root)
    assert [i["image"] for i in data.absent] == [str(root / "imagesAbs" / f"bg{i}.png") for i in range(6)]
    assert all(set(i) == {"image"} for i in data.absent) and data.image_shape == (48, 48)
    assert read_dataset(png_folder(tmp_path / "none")).absent is None  # no list: None, not empty
    content = json.loads((root / "dataset.json").read_text())
    content["absent"][3] = {"image": "./imagesAbs/missing.png"}
    (root / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match=r"'absent' item 3 \(.*missing.png\): image not found") as e:
        read_dataset(root)
    assert str(root / "dataset.json") in str(e.value)
    content["absent"][3] = content["training"][0]["image"]  # a pool image cannot be target-absent too
    (root / "dataset.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="also in the 'training' list"):
        read_dataset(root)


def test_translation_is_not_applicable_for_reasons_derived_from_the_data(tmp_path: Path) -> None:
    assert "translation" not in not_applicable(read_dataset(disks(tmp_path / "ok")))
    reasons = {
        "none": not_applicable(read_dataset(png_folder(tmp_path / "none", size=48))),
        "empty": not_applicable(read_dataset(disks(tmp_path / "empty", absent=0))),
        "3d": not_applicable(read_dataset(add_absent(nifti_folder(tmp_path / "vol"), 2, 32))),
        "classes": not_applicable(read_dataset(add_absent(png_folder(tmp_path / "c3", size=48, classes=3)))),
        "size": not_applicable(read_dataset(disks(tmp_path / "small", size=32))),
    }
    for na in reasons.values():
        assert na["translation"] == na["translation_control"]  # the control goes with its method
    assert reasons["none"]["translation"] == "no target-absent images: dataset.json has no 'absent' list"
    assert reasons["empty"]["translation"] == "no target-absent images: dataset.json's 'absent' list is empty"
    assert "3D volumes" in reasons["3d"]["translation"] and "per slice" in reasons["3d"]["translation"]
    assert "2 foreground classes" in reasons["classes"]["translation"]
    assert "48x48" in reasons["size"]["translation"] and "images are 32x32" in reasons["size"]["translation"]


def test_translation_arms_plan_equal_steps_and_leave_the_other_arms_as_they_were(tmp_path: Path) -> None:
    data = read_dataset(disks(tmp_path / "d"))
    na = not_applicable(data)
    context = RunContext(data, BUDGET, 2, 0)
    steps = {key: arm.planned_steps(context) for key, arm in ARMS.items() if arm.bundle}
    assert set(steps.values()) == {600}, steps
    specs = {s["id"]: s for s in plan(data, "d", BUDGET, list(ARMS), [2], [0, 1], tmp_path / "runs", na)}
    method, control = specs["translation@2#s0"], specs["translation_control@2#s0"]
    assert method["planned_steps"] == control["planned_steps"] == specs["unet@2#s0"]["planned_steps"] == 600
    assert method["train_configs"] == ["train.json"] and method["control"] == "translation_control"
    assert control["train_configs"] == ["train.json", "segmentation_path_only.json"]
    o = method["overrides"]
    schedule = [o[k] for k in ("max_epochs", "epoch_length", "val_interval", "batch_size", "absent_batch_size")]
    assert schedule == [6, 100, 7, 8, 8]
    assert (o["image_size"], o["patch_size"], o["datalist_file"]) == ("48x48", [48, 48], "<run>/datalist_train.json")
    assert o["labelled_fraction"] == 1.0 and o["val_fraction"] == o["test_fraction"] == 0.0
    assert [k for k, s in specs.items() if "use_absent" in s] == ["translation@2#s0", "translation@2#s1"]
    # the same images without an absent list: every other arm keeps its settings hash (finished rows stay finished)
    plain = read_dataset(png_folder(tmp_path / "plain", size=48))
    others = plan(plain, "d", BUDGET, list(ARMS), [2], [0, 1], tmp_path / "runs", not_applicable(plain))
    assert {s["id"]: s["hash"] for s in others} == {i: s["hash"] for i, s in specs.items() if "translation" not in i}


def test_run_datalists_hold_the_absent_images_only_for_translation_and_no_unlabelled_label(tmp_path: Path) -> None:
    from common.data.translation_datalist import translation_datalists

    data = read_dataset(disks(tmp_path / "d"))
    specs = {s["arm"]: s for s in plan(data, "d", BUDGET, ["translation", "translation_control", "unet"], [2], [0],
                                       tmp_path / "runs", not_applicable(data))}  # fmt: skip
    lists = {}
    for arm, spec in specs.items():
        run_dir = prepare_run_dir(spec, data)
        lists[arm] = json.loads((run_dir / "datalist_train.json").read_text())
    share = set(labelled_subset(data, 2, 0))
    train = lists["translation"]
    assert sorted(i["image"] for i in train["training"]) == sorted(share)
    assert all("label" in i for i in train["training"])
    assert len(train["unlabeled"]) == len(data.pool) - 2 and not any("label" in i for i in train["unlabeled"])
    assert train["absent"] == [dict(i) for i in data.absent] and not any("label" in i for i in train["absent"])
    assert "absent" not in lists["unet"] and "absent" not in lists["translation_control"]
    assert lists["translation_control"]["unlabeled"] == [] and "validation" not in train and "test" not in train
    # the bundle's reader: labelled P with masks, unlabelled P with a placeholder mask and labelled 0, the A images
    out = translation_datalists(Path(specs["translation"]["run_dir"]) / "datalist_train.json", tmp_path / "work",
                                image_size="48x48", num_channels=1, labelled_fraction=1.0, val_fraction=0.0,
                                test_fraction=0.0)  # fmt: skip
    assert [len(out[k]) for k in ("present", "training", "unlabeled", "absent", "validation", "test")] == [
        8,
        2,
        6,
        6,
        0,
        0,
    ]
    assert sorted(i["labelled"] for i in out["present"]) == [0] * 6 + [1] * 2
    placeholder = {i["label"] for i in out["unlabeled"]}
    assert len(placeholder) == 1 and not np.load(placeholder.pop()).any()
    assert all(np.load(i["image"]).shape == (1, 48, 48) for i in out["present"] + out["absent"])
    with pytest.raises(ValueError, match="image_size 128x128"):
        translation_datalists(Path(specs["translation"]["run_dir"]) / "datalist_train.json", tmp_path / "work",
                              image_size="128x128", num_channels=1, val_fraction=0.0, test_fraction=0.0)  # fmt: skip


@pytest.mark.slow
def test_quick_run_of_translation_and_its_control_beside_the_unet(tmp_path: Path) -> None:
    folder = disks(tmp_path / "data", cases=8, absent=4)
    data = read_dataset(folder)
    # protocol v2: a run reads no pool label outside its labelled share; unreadable ones would fail the runs
    _corrupt_pool_labels_outside(folder, [str(i["image"]) for i in data.pool], set(labelled_subset(data, 2, 0)))
    out = tmp_path / "out"
    argv = ["--dataset-dir", str(folder), "--labelled", "2", "--quick", "--seeds", "0", "--out", str(out)]
    assert main([*argv, "--arms", "translation", "translation_control", "unet", "--jobs", "2"]) == 0
    rows = {r["id"]: r for r in read_rows(out / "results" / "data" / "runs.jsonl.gz")}
    assert set(rows) == {"translation@2#s0", "translation_control@2#s0", "unet@2#s0"}
    for row in rows.values():
        assert row["status"] == "ok", row.get("error")
        assert row["segmenter_steps"] == row["planned_steps"] == 8 and row["test_cases"] == len(data.test)
    assert rows["translation@2#s0"]["unlabelled_images"] == len(data.pool) - 2
    assert rows["translation_control@2#s0"]["unlabelled_images"] == 0
    assert all(name.endswith("_image.npy") for name in rows["translation@2#s0"]["dice_per_image"])
    assert "translation" in (out / "data" / "label_efficiency.md").read_text()


def test_export_msd_writes_the_absent_list_and_brings_an_old_export_up_to_date(tmp_path: Path) -> None:
    from common.data.cluttered_mnist import MSD_FORMAT_VERSION, export_msd, prepare_cluttered_mnist

    mnist = write_small_mnist(tmp_path / "mnist", num_train=60, num_test=20)
    folder = prepare_cluttered_mnist(
        tmp_path, num_train=12, num_val=4, num_test=4, labelled_digits=None, mnist_source=mnist
    )
    msd = export_msd(folder)
    content = json.loads((msd / "dataset.json").read_text())
    assert content["format_version"] == MSD_FORMAT_VERSION
    assert [len(content[k]) for k in ("training", "validation", "test", "absent")] == [12, 4, 4, 12]
    absent = np.load(folder / "train_absent_images.npy")
    np.testing.assert_array_equal(np.load(msd / content["absent"][5]["image"]), absent[5])
    assert len(read_dataset(msd).absent) == 12 and "translation" not in not_applicable(read_dataset(msd))
    # an export of format 1 (P images only, as written before): rewritten with its absent list, P files untouched
    for key in ("absent", "format_version"):
        del content[key]
    for path in (msd / "absent").iterdir():
        path.unlink()
    (msd / "absent").rmdir()
    (msd / "dataset.json").write_text(json.dumps(content, indent=1))
    stamps = {p: p.stat().st_mtime_ns for p in [*(msd / "images").iterdir(), *(msd / "labels").iterdir()]}
    assert read_dataset(msd).absent is None
    assert export_msd(folder) == msd
    again = json.loads((msd / "dataset.json").read_text())
    assert again["format_version"] == MSD_FORMAT_VERSION and len(again["absent"]) == 12
    assert {k: again[k] for k in ("training", "validation", "test", "labels")} == {
        k: content[k] for k in ("training", "validation", "test", "labels")
    }
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert not [p.name for p in msd.iterdir() if p.name.startswith(".")]  # no temporary folder left
    stamp = (msd / "dataset.json").stat().st_mtime_ns
    export_msd(folder)
    assert (msd / "dataset.json").stat().st_mtime_ns == stamp  # up to date: nothing rewritten


def test_recommended_commands_for_translation_carry_its_size_and_msd_inference() -> None:
    from common.benchmark.recommend import bundle_commands

    text = bundle_commands("translation_semi_seg", ["train.json"], "/data/T", True, {"image_size": "128x128",
                           "patch_size": [128, 128], "batch_size": 8})  # fmt: skip
    train, infer = [line for line in text.splitlines() if line.startswith("    --")]
    assert train.endswith("--labelled_fraction 1.0 --image_size 128x128 --patch_size '[128, 128]'")
    assert infer.endswith("--image_size 128x128 --patch_size '[128, 128]'") and "inference_msd.json" in text
    assert "'absent' list" in text and "--batch_size" not in text
    plain = bundle_commands("supervised_seg", ["train.json"], "/data/T", False, {"patch_size": [32, 32]})
    assert "--patch_size" not in plain and "configs/inference.json \\" in plain


@pytest.mark.slow
def test_bundle_trains_and_evaluates_on_an_msd_folder_with_an_absent_list(tmp_path: Path) -> None:
    """``--dataset_dir DIR`` (the README's and the recommendation's command): DIR/dataset.json's lists, split as in
    every bundle, its absent list as the A images; the cluttered MNIST path is not read."""
    from common.bundle import load_workflow

    folder = disks(tmp_path / "data", cases=10, absent=4)
    keys = dict(dataset_dir=str(folder), output_dir=str(tmp_path / "out"), ckpt_dir=str(tmp_path / "models"))
    keys.update(labelled_fraction=0.5, max_epochs=1, epoch_length=2, batch_size=2, absent_batch_size=2)
    workflow = load_workflow("translation_semi_seg", ["train.json"], "train", **keys)
    workflow.initialize()
    lists = workflow.parser.get_parsed_content("datalists")
    assert {k: len(v) for k, v in lists.items()} == {
        "present": 6, "training": 3, "unlabeled": 3, "absent": 4, "validation": 2, "test": 2
    }  # fmt: skip
    assert workflow.parser.get_parsed_content("data_folder") == ""
    workflow.run()
    workflow.finalize()
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 2
    assert (tmp_path / "models" / "model.pt").is_file()
    evaluation = load_workflow("translation_semi_seg", ["train.json", "evaluate.json"], "eval", **keys)
    evaluation.initialize()
    evaluation.run()
    evaluation.finalize()
    assert (tmp_path / "out" / "eval" / "metrics.json").is_file()
