"""Every bundle has the files and keys that MONAI Label and the Model Zoo read, and valid metadata."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
SCHEMA = json.loads((Path(__file__).parent / "data" / "meta_schema_20240725.json").read_text(encoding="utf-8"))

TRAIN_KEYS = ["bundle_root", "device", "dataset_dir", "network_def", "network", "val_interval", "initialize", "run"]
TRAIN_NESTED = [
    ("train", "trainer"),
    ("train", "trainer", "max_epochs"),
    ("train", "dataset"),
    ("train", "dataset", "data"),
    ("train", "handlers"),
    ("train", "inferer"),
    ("validate", "evaluator"),
    ("validate", "handlers"),
    ("validate", "dataset", "data"),
]
INFER_KEYS = [
    "bundle_root",
    "device",
    "network_def",
    "network",
    "preprocessing",
    "postprocessing",
    "inferer",
    "dataset",
    "evaluator",
    "dataset_dir",
    "output_dir",
]
BUNDLE_FILES = [
    "LICENSE",
    "docs/README.md",
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
]


def _configs(bundle: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((bundle / "configs").glob("*.json"))}


def test_there_are_bundles():
    """The seven bundles are all found (the parametrized tests below would pass on an empty list)."""
    expected = {
        "supervised_seg",
        "acwe_unsup_seg",
        "adversarial_semi_seg",
        "translation_semi_seg",
        "af_seg",
        "mipr_auto_annotation",
        "unimatch_semi_seg",
    }
    assert expected <= {b.name for b in BUNDLES}


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_files(bundle: Path):
    missing = [f for f in BUNDLE_FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"
    _configs(bundle)  # every config is valid JSON


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_metadata_validates_against_monai_schema(bundle: Path):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    jsonschema.validate(meta, SCHEMA)
    for key in ("name", "changelog", "data_source", "intended_use", "references", "label_classes", "pred_classes"):
        assert key in meta, f"{bundle.name}/configs/metadata.json lacks {key}"
    inputs = meta["network_data_format"]["inputs"]
    outputs = meta["network_data_format"]["outputs"]
    assert next(iter(inputs)) == "image" and next(iter(outputs)) == "pred"
    assert outputs["pred"]["channel_def"], "MONAI Label reads the label names from outputs.pred.channel_def"


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_zoo_keys(bundle: Path):
    configs = _configs(bundle)
    train, infer = configs["train.json"], configs["inference.json"]
    assert not [k for k in TRAIN_KEYS if k not in train], bundle.name
    for path in TRAIN_NESTED:
        node = train
        for key in path:
            assert isinstance(node, dict) and key in node, f"{bundle.name} train.json lacks {'#'.join(path)}"
            node = node[key]
    assert isinstance(train["train"]["handlers"], list), "MONAI Label inserts a CheckpointLoader into train#handlers"
    # ``python -m monai.bundle run training`` runs what MONAI Label's ``run`` runs ("run" is a TRAIN_KEY)
    assert train.get("training") == "$@run", f"{bundle.name} train.json: 'training' must be '$@run'"
    assert not [k for k in INFER_KEYS if k not in infer], bundle.name
    assert "$import common" in train["imports"] and "$import common" in infer["imports"]
