"""common.handlers.PseudoLabelQualityHandler: the adversarial method's pseudo-labels against a hidden truth, on a toy
with known values (fixed segmenter logits, a fixed confidence map), and its place in the bundle's configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bundle_utils import make_workflow
from conftest import write_volume_dataset
from ignite.engine import Engine, Events
from monai.handlers import StatsHandler
from monai.transforms import Randomizable
from torch import nn

from benchmarks.experiments import label_efficiency_v1 as le
from common.data import HiddenTruth
from common.handlers import PseudoLabelQualityHandler
from common.handlers.pseudo_label_quality import pseudo_label_counts, pseudo_label_quality

# Two 2 x 4 unlabelled images, 3 classes. D's logits are one map for every image: +3 (confidence 0.953), 0 (exactly
# 0.5) or -3 (0.047); with T_semi 0.5 the confident pixels are the four +3 ones (0 is not above 0.5).
D_LOGITS = torch.tensor([[3.0, 3.0, 3.0, 0.0], [-3.0, -3.0, 3.0, -3.0]])
PRED = torch.tensor([[[1, 1, 0, 2], [0, 0, 2, 1]], [[2, 2, 1, 0], [1, 0, 0, 0]]])  # argmax S per image
TRUTH = torch.tensor([[[1, 0, 0, 2], [0, 1, 2, 1]], [[2, 2, 2, 0], [0, 0, 0, 1]]])
# confident pixels (0,0) (0,1) (0,2) (1,2): image 0 right on 3, image 1 on 3 -> coverage 8/16, precision 6/8;
# the others (0,3) (1,0) (1,1) (1,3): right on 3 and 2 -> 5/8. Pooled Dice: class 1 2*2/(5+4), class 2 2*4/(4+5).
# A ">=" comparison would give coverage 10/16 and precision 7/10, a "<" one 6/16 and 3/6; precision over every pixel
# (no mask) 11/16; accuracy of the unconfident pixels over every pixel 11/16 too.
# Confident pixels pseudo-labelled foreground: 3 per image, right on 2 each -> 6 of the 9 true foreground pixels,
# foreground precision 4/6 (the background pixel (0,2) of image 0 does not count).
EXPECTED = {
    "coverage": 0.5,
    "precision": 0.75,
    "accuracy_unconfident": 0.625,
    "dice": (4 / 9 + 8 / 9) / 2,
    "foreground_coverage": 6 / 9,
    "foreground_precision": 4 / 6,
}


class _FixedSegmenter(nn.Module):
    """Logits whose argmax is ``PRED[i]`` for an image filled with the value ``i``; records its mode per call."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("logits", 4.0 * F.one_hot(PRED, 3).permute(0, 3, 1, 2).float())
        self.norm = nn.BatchNorm2d(1)  # a submodule whose own mode must come back too
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.logits[x[:, 0, 0, 0].long()]


class _FixedDiscriminator(nn.Module):
    """``D_LOGITS`` for every image of the batch, whatever the input; records its mode and grad mode per call."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return D_LOGITS.expand(probs.shape[0], 1, *D_LOGITS.shape) + 0 * self.weight


def _truth(item: dict, spatial_shape=None) -> torch.Tensor | None:
    """The hidden truth of the toy: items ``{"id": i}`` with ``i`` < 0 have none."""
    if item["id"] < 0:
        return None
    label = TRUTH[item["id"] % 2][None]
    assert spatial_shape is None or tuple(spatial_shape) == tuple(label.shape[1:])
    return label


def _load(item: dict) -> dict:
    return {"image": torch.full((1, 2, 4), float(item["id"] % 2))}


def _engine(threshold: float = 0.5) -> Engine:
    engine = Engine(lambda e, batch: None)
    engine.network, engine.d_network, engine.semi_threshold = _FixedSegmenter(), _FixedDiscriminator(), threshold
    return engine


def test_counts_give_the_known_rates():
    probs = torch.softmax(4.0 * F.one_hot(PRED, 3).permute(0, 3, 1, 2).float(), dim=1)
    confidence = torch.sigmoid(D_LOGITS.expand(2, 1, 2, 4))
    quality = pseudo_label_quality(pseudo_label_counts(probs, confidence, TRUTH, 0.5))
    assert quality == pytest.approx(EXPECTED)
    none = pseudo_label_quality(pseudo_label_counts(probs, confidence, TRUTH, 0.99))
    assert none["coverage"] == 0.0 and math.isnan(none["precision"]) and none["accuracy_unconfident"] == 11 / 16
    with pytest.raises(ValueError, match="truth values"):
        pseudo_label_counts(probs, confidence, TRUTH + 1, 0.5)


@pytest.mark.parametrize("batch_size", [16, 1])
def test_handler_scores_the_unlabelled_items_per_epoch(tmp_path: Path, batch_size: int):
    """Exact rates over the first two items with a truth (an item without one is skipped, a fourth is beyond
    ``max_items``), eval mode and no_grad during the scoring and every module's mode restored afterwards; one JSON
    record per epoch (epoch 2 at T_semi 0.99: nothing confident, precision null), metrics prefixed ``pseudo_``."""
    data = [{"id": 0}, {"id": -1}, {"id": 1}, {"id": 2}]
    out = tmp_path / "out" / "pseudo_label_quality.json"
    handler = PseudoLabelQualityHandler(_truth, data, _load, out, max_items=2, batch_size=batch_size)
    engine = _engine()
    engine.network.norm.eval()
    metrics: list[dict] = []
    engine.add_event_handler(
        Events.EPOCH_STARTED, lambda e: setattr(e, "semi_threshold", [0.5, 0.99][e.state.epoch - 1])
    )
    handler.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: metrics.append(dict(e.state.metrics)))
    engine.run([0], max_epochs=2)

    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["epoch"] for r in records] == [1, 2]
    first, second = records
    assert (first["items"], first["pixels"], first["threshold"]) == (2, 16, 0.5)
    assert {k: first[k] for k in EXPECTED} == pytest.approx(EXPECTED)
    assert second["coverage"] == 0.0 and second["precision"] is None and second["accuracy_unconfident"] == 11 / 16
    assert {k: metrics[0]["pseudo_" + k] for k in EXPECTED} == pytest.approx(EXPECTED)
    assert math.isnan(metrics[1]["pseudo_precision"])
    s, d = engine.network, engine.d_network
    assert len(s.modes) == 2 * math.ceil(2 / batch_size) and not any(s.modes)
    assert d.calls and all(c == (False, False) for c in d.calls)
    assert s.training and d.training and not s.norm.training  # every module as it was


def test_resumed_run_keeps_the_earlier_epochs(tmp_path: Path):
    out = tmp_path / "pseudo_label_quality.json"
    engine = _engine()
    for epoch in (1, 2):
        engine.state.epoch = epoch
        PseudoLabelQualityHandler(_truth, [{"id": 0}, {"id": 1}], _load, out)(engine)
    assert [r["epoch"] for r in json.loads(out.read_text(encoding="utf-8"))] == [1, 2]


def test_without_truth_nothing_happens(tmp_path: Path):
    """truth None (the bundle default): not attached, no item loaded, no file, no metric."""

    def refuse(item: dict) -> dict:
        raise AssertionError("no item may be loaded without a truth")

    out = tmp_path / "pseudo_label_quality.json"
    handler = PseudoLabelQualityHandler(None, [{"id": 0}], refuse, out)
    engine = _engine()
    handler.attach(engine)
    assert not engine.has_event_handler(handler, Events.EPOCH_COMPLETED)
    engine.run([0], max_epochs=1)
    handler(engine)
    assert not out.exists() and not engine.state.metrics and not engine.network.modes


def test_no_discriminator_or_no_truth_is_said_once(tmp_path: Path):
    engine = _engine()
    engine.d_network = None
    handler = PseudoLabelQualityHandler(_truth, [{"id": 0}], _load, tmp_path / "a.json")
    handler(engine)
    assert not (tmp_path / "a.json").exists() and not engine.network.modes
    engine = _engine()
    handler = PseudoLabelQualityHandler(_truth, [{"id": -1}], _load, tmp_path / "b.json")
    handler(engine)
    assert not (tmp_path / "b.json").exists() and handler._off


def _bundle_overrides(tmp: Path, dataset: Path) -> dict:
    return {
        "dataset_dir": str(dataset),
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "num_classes": 2,
        "class_names": ["tumour"],
        "labelled_fraction": 0.3,
        "max_epochs": 1,
        "epoch_length": 2,
        "val_interval": 5,
        "resume": False,
        "patch_size": [16, 16],
        "batch_size": 2,
        "unlabeled_batch_size": 2,
        "network_def#channels": [4, 8, 16],
        "network_def#strides": [2, 2],
        "discriminator_channels": [4, 8],
    }


def test_bundle_handler_off_by_default_and_scoring_with_a_truth(tmp_path: Path):
    """train.json lists the handler before the StatsHandler (which then logs its metrics; multi_gpu_train.json
    keeps it on every rank), loading the unlabelled images without crop or padding; ``diagnostic_truth`` null
    attaches nothing. With a HiddenTruth of the data set, one epoch writes one record over the unlabelled slices."""
    dataset = write_volume_dataset(tmp_path / "data", num_cases=6, shape=(16, 16, 4))
    workflow = make_workflow("adversarial_semi_seg", ["train.json"], **_bundle_overrides(tmp_path / "off", dataset))
    handlers = workflow.parser.get_parsed_content("train#handlers")
    kinds = [type(h) for h in handlers]
    index = kinds.index(PseudoLabelQualityHandler)
    assert index < kinds.index(StatsHandler) and len(handlers) - index > 2
    handler = handlers[index]
    assert handler.truth is None and handler.data
    assert not any(isinstance(t, Randomizable) for t in handler.transform.transforms)
    assert handler.transform(dict(handler.data[0]))["image"].shape == (1, 16, 16)

    truth = {"_target_": "common.data.HiddenTruth", "datalist_file": str(dataset / "dataset.json"), "num_classes": 2}
    workflow = make_workflow(
        "adversarial_semi_seg", ["train.json"], **_bundle_overrides(tmp_path / "on", dataset), diagnostic_truth=truth
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert isinstance(workflow.parser.get_parsed_content("diagnostic_truth"), HiddenTruth)
    records = json.loads((tmp_path / "on" / "outputs" / "pseudo_label_quality.json").read_text(encoding="utf-8"))
    unlabelled = workflow.parser.get_parsed_content("datalists")["unlabeled"]
    assert [r["epoch"] for r in records] == [1] and records[0]["items"] == len(unlabelled) > 0
    assert records[0]["pixels"] == 16 * 16 * len(unlabelled) and 0.0 <= records[0]["coverage"] <= 1.0
    assert (
        workflow.parser.get_parsed_content("train#trainer").state.metrics["pseudo_coverage"] == records[0]["coverage"]
    )


def test_benchmark_hands_the_truth_to_the_method_only_and_prints_its_epochs(tmp_path: Path):
    """The adversarial arm gets a HiddenTruth of the task's dataset.json (its control none: no pseudo-labels, and
    its runs keep their hash); the table prints the last epoch's coverage and precision per seed, and every epoch."""
    data = {"dataset_dir": "/data/task", "training_images": 100, "split_given": True}
    task = le.TASKS["mni_tissue"]
    by_id = {s["id"]: s for s in le.plan(task, data, ["adversarial", "adversarial_control"], [0], tmp_path)}
    truth = by_id["adversarial@4#s0"]["overrides"]["diagnostic_truth"]
    assert truth == {
        "_target_": "common.data.HiddenTruth",
        "datalist_file": "/data/task/dataset.json",
        "num_classes": 3,
    }
    assert "diagnostic_truth" not in by_id["adversarial_control@4#s0"]["overrides"]

    def row(seed: int, epochs: list[tuple[float, float | None]]) -> dict:
        records = [
            {"epoch": i + 1, "items": 10, "coverage": c, "precision": p, "accuracy_unconfident": 0.5, "dice": 0.4}
            for i, (c, p) in enumerate(epochs)
        ]
        run = {"arm": "adversarial", "labelled": 4, "seed": seed, "status": "ok", "dice_mean": 0.5, "test_images": 3}
        return {**run, "segmenter_steps": 8, "wall_s": 1.0, "cpu_s": 1.0, "peak_mib": 1.0, "pseudo_labels": records}

    text = le.markdown(task, [row(1, [(0.0, None), (0.8, 0.9)]), row(0, [(0.5, 0.75)])], "cmd", "machine", True)
    lines = [line for line in text.splitlines() if line.startswith("- 4 labelled, seed")]
    assert lines == [
        "- 4 labelled, seed 0: coverage 0.500, precision 0.750 (unconfident pixels right: 0.500, Dice of S 0.400, "
        "10 images); per epoch 0.50/0.75",
        "- 4 labelled, seed 1: coverage 0.800, precision 0.900 (unconfident pixels right: 0.500, Dice of S 0.400, "
        "10 images); per epoch 0.00/- 0.80/0.90",
    ]
