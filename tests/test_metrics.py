"""Tests of common.metrics.segmentation against hand-computed values."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.networks.utils import one_hot

from common.handlers import SegmentationReportHandler
from common.metrics import METRIC_NAMES, SegmentationReport, segmentation_metrics, soft_dice_accumulated

# 4x4 binary example: TP = 3, FP = 1, FN = 1, TN = 11
LABEL_2 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
PRED_2 = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
EXPECTED_2 = {
    "dice": 6 / 8,  # 2TP / (2TP + FP + FN)
    "iou": 3 / 5,  # TP / (TP + FP + FN)
    "precision": 3 / 4,
    "recall": 3 / 4,
    "specificity": 11 / 12,
    "accuracy": 14 / 16,
}

# 3-class example: class 1 TP 3 FP 1 FN 1 TN 11; class 2 TP 2 FP 2 FN 2 TN 10
LABEL_3 = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
PRED_3 = torch.tensor([[1, 1, 1, 2], [1, 0, 0, 2], [0, 0, 0, 2], [0, 0, 0, 2]])
EXPECTED_3 = {
    "dice": [6 / 8, 4 / 8],
    "iou": [3 / 5, 2 / 6],
    "precision": [3 / 4, 2 / 4],
    "recall": [3 / 4, 2 / 4],
    "specificity": [11 / 12, 10 / 12],
    "accuracy": [14 / 16, 12 / 16],
}


def batch(*maps: torch.Tensor) -> torch.Tensor:
    """(H, W) class maps -> (B, 1, H, W)."""
    return torch.stack(maps)[:, None]


def assert_values(result: dict[str, torch.Tensor], expected: dict[str, list[float] | float]) -> None:
    for name, value in expected.items():
        want = torch.tensor(value, dtype=torch.float32).reshape(result[name].shape)
        torch.testing.assert_close(result[name], want, equal_nan=True, msg=name)


def test_binary_every_metric_exact():
    result = segmentation_metrics(batch(PRED_2), batch(LABEL_2), num_classes=2)
    assert list(result) == [m for m in METRIC_NAMES if m != "soft_dice"]
    assert all(v.shape == (1, 1) for v in result.values())
    assert_values(result, EXPECTED_2)


def test_binary_onehot_and_bool_inputs_match_class_maps():
    pred, label = batch(PRED_2), batch(LABEL_2)
    reference = {k: v.item() for k, v in segmentation_metrics(pred, label, 2).items()}
    assert_values(segmentation_metrics(one_hot(pred, 2), one_hot(label, 2), 2), reference)
    assert_values(segmentation_metrics(pred.bool(), label.float(), 2), reference)


def test_multiclass_per_class_values():
    result = segmentation_metrics(batch(PRED_3), batch(LABEL_3), num_classes=3)
    assert all(v.shape == (1, 2) for v in result.values())
    assert_values(result, EXPECTED_3)


def test_multiclass_probability_pred_is_argmaxed():
    probs = one_hot(batch(PRED_3), 3) * 0.6 + 0.1  # argmax = PRED_3, not one-hot
    assert_values(segmentation_metrics(probs, batch(LABEL_3), 3), EXPECTED_3)


def test_hd95_single_pixels():
    label, pred = torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)
    label[0, 0, 1, 1] = 1
    pred[0, 0, 1, 4] = 1
    result = segmentation_metrics(pred, label, 2, include_hd95=True)
    assert list(result)[-1] == "hd95"
    assert result["hd95"].item() == pytest.approx(3.0)
    assert segmentation_metrics(label, label, 2, include_hd95=True)["hd95"].item() == 0.0


def test_soft_dice_known_probabilities():
    label = batch(LABEL_2)
    sigmoid = torch.full((1, 1, 4, 4), 0.25)  # sum(p*y) = 1, sum(p) = 4, sum(y) = 4 -> 2 / 8
    result = segmentation_metrics(batch(PRED_2), label, 2, prob=sigmoid)
    assert list(result)[:2] == ["dice", "soft_dice"]
    assert result["soft_dice"].item() == pytest.approx(0.25)
    softmax = torch.cat([1 - sigmoid, sigmoid], dim=1)
    assert segmentation_metrics(batch(PRED_2), label, 2, prob=softmax)["soft_dice"].item() == pytest.approx(0.25)

    # 3 classes, constant probabilities (0.5, 0.3, 0.2); 4 pixels of each foreground class
    prob = torch.tensor([0.5, 0.3, 0.2]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
    soft = segmentation_metrics(batch(PRED_3), batch(LABEL_3), 3, prob=prob)["soft_dice"]
    torch.testing.assert_close(soft, torch.tensor([[2 * 1.2 / (4.8 + 4), 2 * 0.8 / (3.2 + 4)]]))


def test_soft_dice_accumulated_sums_over_images():
    label = batch(LABEL_2, torch.tensor([[1] * 4, [1] * 4, [0] * 4, [0] * 4]))
    prob = torch.stack([torch.full((4, 4), 0.25), label[1, 0].float()])[:, None]
    # image 0: inter 1, sum p 4, sum y 4; image 1: inter 8, sum p 8, sum y 8
    assert soft_dice_accumulated(prob, label) == pytest.approx(2 * 9 / (12 + 12))
    per_image = segmentation_metrics(label, label, 2, prob=prob)["soft_dice"]
    torch.testing.assert_close(per_image, torch.tensor([[0.25], [1.0]]))


def test_empty_ground_truth_and_prediction():
    empty = torch.zeros(4, 4, dtype=torch.long)
    one = torch.zeros(4, 4, dtype=torch.long)
    one[0, 0] = 1
    # image 0: both empty; image 1: false positive on empty ground truth; image 2: empty prediction
    pred, label = batch(empty, one, empty), batch(empty, empty, one)
    prob = pred.float()
    result = segmentation_metrics(pred, label, 2, prob=prob, include_hd95=True)
    nan = math.nan
    assert_values(
        result,
        {
            "dice": [nan, 0.0, 0.0],
            "soft_dice": [nan, nan, 0.0],
            "iou": [nan, 0.0, 0.0],
            "precision": [nan, 0.0, nan],
            "recall": [nan, nan, 0.0],
            "specificity": [1.0, 15 / 16, 1.0],
            "accuracy": [1.0, 15 / 16, 15 / 16],
            "hd95": [nan, nan, nan],
        },
    )
    monai_rule = segmentation_metrics(pred, label, 2, prob=prob, ignore_empty=True)
    assert_values(monai_rule, {"dice": [nan, nan, 0.0], "soft_dice": [nan, nan, 0.0], "iou": [nan, nan, 0.0]})


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\).*\(1, 1, 4, 5\)|\(1, 4, 4\).*\(1, 4, 5\)"):
        segmentation_metrics(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), 2)
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 4\)"):
        segmentation_metrics(torch.zeros(2, 4, 4, 4), torch.zeros(2, 1, 4, 4), 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmentation_metrics(batch(PRED_3), batch(LABEL_2), 2)
    with pytest.raises(ValueError, match="softmax/sigmoid"):
        segmentation_metrics(batch(PRED_2), batch(LABEL_2), 2, prob=torch.full((1, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        segmentation_metrics(batch(PRED_2), batch(LABEL_2), 2, prob=torch.zeros(1, 3, 4, 4))


def binary_report() -> SegmentationReport:
    """Three images with Dice 0.75, 0.5 and NaN (both empty)."""
    half_pred = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])  # TP 2 FP 2 FN 2
    empty = torch.zeros(4, 4, dtype=torch.long)
    report = SegmentationReport(num_classes=2, class_names=["background", "lesion"])
    report.add(batch(PRED_2, half_pred), batch(LABEL_2, LABEL_2), names=["a.nii.gz", "b.nii.gz"])
    report.add(batch(empty), batch(empty))
    return report


def test_report_summary_mean_std():
    report = binary_report()
    assert len(report) == 3
    summary = report.summary()
    assert list(summary) == [m for m in METRIC_NAMES if m != "soft_dice"]
    dice = summary["dice"]
    assert set(dice) == {"lesion", "mean"}
    assert dice["lesion"]["mean"] == pytest.approx(0.625)
    assert dice["lesion"]["std"] == pytest.approx(0.125)
    assert dice["lesion"]["n"] == 2
    assert dice["mean"] == dice["lesion"]
    assert summary["accuracy"]["lesion"]["n"] == 3
    assert summary["accuracy"]["lesion"]["mean"] == pytest.approx((14 / 16 + 12 / 16 + 1.0) / 3)
    records = report.per_image()
    assert [r["name"] for r in records] == ["a.nii.gz", "b.nii.gz", "image_2"]
    assert records[0]["dice"] == {"lesion": pytest.approx(0.75)}
    assert math.isnan(records[2]["dice"]["lesion"])


def test_report_multiclass_mean_over_classes():
    report = SegmentationReport(num_classes=3)
    report.add(batch(PRED_3, LABEL_3), batch(LABEL_3, LABEL_3))
    dice = report.summary()["dice"]
    assert dice["class_1"]["mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert dice["class_2"]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    # per-image means over classes: 0.625 and 1.0
    assert dice["mean"]["mean"] == pytest.approx(0.8125)
    assert dice["mean"]["std"] == pytest.approx(0.1875)
    markdown = report.to_markdown()
    assert "| mean | 0.812 ± 0.188 |" in markdown
    assert "| class_2 | 0.750 ± 0.250 |" in markdown


def test_report_markdown_and_notes():
    markdown = binary_report().to_markdown(title="val")
    assert markdown.startswith("## val\n")
    assert "| class | dice | iou | precision | recall | specificity | accuracy |" in markdown
    assert "| lesion | 0.625 ± 0.125 | 0.467 ± 0.133 |" in markdown  # IoU 0.6 and 1/3
    assert "| mean |" not in markdown
    assert "3 images" in markdown
    assert "dice: 1 of 3 image-class values undefined (ground truth and prediction both empty)" in markdown


def test_report_accumulated_soft_dice_and_prob_consistency():
    report = SegmentationReport(num_classes=2)
    label = batch(LABEL_2)
    report.add(label, label, prob=torch.full((1, 1, 4, 4), 0.25))
    report.add(label, label, prob=label.float() * 0.5)
    # image 0: inter 1, sum p 4, sum y 4 (0.25); image 1: inter 2, sum p 2, sum y 4 (2/3)
    accumulated = 2 * 3 / (6 + 8)
    assert report.accumulated_soft_dice() == {"class_1": pytest.approx(accumulated), "mean": pytest.approx(accumulated)}
    assert report.summary()["soft_dice"]["class_1"]["mean"] == pytest.approx((0.25 + 2 / 3) / 2)
    assert "Soft Dice accumulated over all images: class_1 0.429." in report.to_markdown()
    with pytest.raises(ValueError, match="every batch"):
        report.add(label, label)
    with pytest.raises(ValueError, match="2 names"):
        report.add(label, label, prob=label.float(), names=["x", "y"])


def test_report_class_names():
    assert SegmentationReport(3, class_names=["bg", "liver", "tumour"]).class_names == ["liver", "tumour"]
    assert SegmentationReport(3, class_names=["liver", "tumour"]).class_names == ["liver", "tumour"]
    with pytest.raises(ValueError, match="2 foreground names"):
        SegmentationReport(3, class_names=["liver"])
    with pytest.raises(ValueError, match="distinct"):
        SegmentationReport(3, class_names=["mean", "tumour"])


def test_report_json_round_trip(tmp_path):
    report = binary_report()
    json_path, md_path = report.write(tmp_path / "out", prefix="val")
    assert json_path == tmp_path / "out" / "val.json" and md_path == tmp_path / "out" / "val.md"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["val.json", "val.md"]  # no temporary files left
    loaded = json.loads(json_path.read_text(encoding="utf-8"))
    assert md_path.read_text(encoding="utf-8") == report.to_markdown(title="val")
    assert loaded["num_images"] == 3
    assert loaded["per_image"][2]["dice"] == {"lesion": None}  # NaN is written as null
    summary = report.summary()
    for metric, entry in loaded["summary"].items():
        for key, stats in entry.items():
            for stat, value in stats.items():
                assert value == pytest.approx(summary[metric][key][stat])
    report.to_json(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8")) == loaded


def make_item(pred_map: torch.Tensor, label_map: torch.Tensor, name: str, num_classes: int) -> dict:
    """One decollated evaluator item: softmax-like pred (C, H, W), label (1, H, W), image with meta."""
    probs = one_hot(pred_map[None, None], num_classes)[0] * 0.8 + 0.2 / num_classes
    image = MetaTensor(torch.rand(1, *pred_map.shape), meta={"filename_or_obj": name})
    return {"image": image, "label": MetaTensor(label_map[None].float()), "pred": probs, "prob": probs}


def test_handler_with_engine(tmp_path, caplog):
    items = [
        make_item(PRED_3, LABEL_3, "/data/case_0.nii.gz", 3),
        make_item(LABEL_3, LABEL_3, "/data/case_1.nii.gz", 3),
    ]
    engine = Engine(lambda engine, batch: batch)  # each "batch" is already the decollated list of items
    handler = SegmentationReportHandler(
        num_classes=3, output_dir=str(tmp_path), class_names=["liver", "tumour"], prob_key="prob", prefix="val"
    )
    handler.attach(engine)
    with caplog.at_level(logging.INFO, logger="common.handlers.segmentation_report"):
        engine.run([items[:1], items[1:]], max_epochs=2)

    record = json.loads((tmp_path / "val.json").read_text(encoding="utf-8"))
    assert record["num_images"] == 2  # reset at each epoch
    assert [r["name"] for r in record["per_image"]] == ["/data/case_0.nii.gz", "/data/case_1.nii.gz"]
    assert record["per_image"][0]["dice"] == {"liver": pytest.approx(0.75), "tumour": pytest.approx(0.5)}
    assert (tmp_path / "val.md").read_text(encoding="utf-8").startswith("## val\n\n| class | dice | soft_dice | iou |")
    metrics = engine.state.metrics
    assert metrics["report_dice"] == pytest.approx(((0.75 + 0.5) / 2 + 1.0) / 2)
    assert metrics["report_iou"] == pytest.approx(((0.6 + 1 / 3) / 2 + 1.0) / 2)
    assert {f"report_{m}" for m in METRIC_NAMES} | {"report_soft_dice_accumulated"} == set(metrics)
    assert "| liver | 0.875 ± 0.125 |" in caplog.text


def test_handler_sigmoid_pred_and_bad_output(tmp_path):
    label = LABEL_2[None].float()
    item = {"image": MetaTensor(torch.rand(1, 4, 4)), "label": label, "pred": PRED_2[None] * 0.9}
    engine = Engine(lambda engine, batch: batch)
    handler = SegmentationReportHandler(num_classes=2, output_dir=tmp_path)
    handler.attach(engine)
    engine.run([[item]], max_epochs=1)
    assert engine.state.metrics["report_dice"] == pytest.approx(0.75)
    assert handler.report.per_image()[0]["name"] == "image_0"

    bad = Engine(lambda engine, batch: {"pred": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 4)})
    SegmentationReportHandler(num_classes=2, output_dir=tmp_path).attach(bad)
    with pytest.raises(TypeError, match="decollate"):
        bad.run([0], max_epochs=1)
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), ["metrics.json", "metrics.md"])


def test_paired_difference_t_interval_on_known_values():
    from common.metrics import paired_difference

    # d = (0.1, 0.15, 0.2): mean 0.15, sd 0.05, t(0.975, 2) = 4.3027 -> half width 0.12421
    diff = paired_difference([0.5, 0.6, 0.7], [0.4, 0.45, 0.5])
    assert diff.n == 3 and diff.mean == pytest.approx(0.15)
    assert (diff.lo, diff.hi) == pytest.approx((0.15 - 0.12421, 0.15 + 0.12421), abs=1e-5)
    assert diff.excludes_zero and diff.interval_text() == "[+0.026, +0.274]"
    wide = paired_difference([0.5, 0.4, 0.6], [0.45, 0.45, 0.45])  # d = (0.05, -0.05, 0.15): contains 0
    assert not wide.excludes_zero and wide.lo < 0 < wide.hi
    ninety = paired_difference([0.5, 0.6, 0.7], [0.4, 0.45, 0.5], confidence=0.9)  # t(0.95, 2) = 2.92
    assert ninety.hi - ninety.mean == pytest.approx(2.91999 * 0.05 / 3**0.5, abs=1e-5)
    one = paired_difference([0.5], [0.4])
    assert one.mean == pytest.approx(0.1) and one.interval_text() == "-" and not one.excludes_zero
    with pytest.raises(ValueError, match="as many values"):
        paired_difference([0.5, 0.6], [0.4])


def test_read_metrics_round_trips_a_report(tmp_path):
    from common.metrics import SegmentationReport, read_metrics

    report = SegmentationReport(3, ["grey", "white"])
    label = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    label[0, 0, :2] = 1
    label[0, 0, 2:] = 2
    label[1, 0, :, :2] = 1
    pred = label.clone()
    pred[0, 0, 3] = 1  # image a: one row of white matter called grey
    report.add(pred, label, names=["/x/a.npy", "/x/b.npy"])
    report.write(tmp_path)
    metrics = read_metrics(tmp_path)
    per_image = metrics.by_image()
    assert set(per_image) == {"a.npy", "b.npy"} and per_image["b.npy"] == pytest.approx(1.0)  # white empty: left out
    grey_a, white_a = 2 * 8 / (8 + 12), 2 * 4 / (4 + 8)
    assert per_image["a.npy"] == pytest.approx((grey_a + white_a) / 2)
    assert metrics.mean() == pytest.approx(((grey_a + white_a) / 2 + 1.0) / 2)
    assert list(metrics.class_names) == ["grey", "white"]
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        read_metrics(tmp_path / "missing")


def test_residual_separation_on_known_maps():
    from common.metrics.translation_separation import residual_separation

    label = torch.zeros(3, 1, 8, 8)
    label[:, :, 2:4, 2:6] = 1  # 8 of 64 pixels: target share 0.125
    residual = torch.zeros(3, 2, 8, 8)
    residual[0] = label[0] * 0.5  # on the target only: all its mass there, Otsu finds the target
    residual[1] = 0.3  # everywhere alike: mass share = target share, constant so Otsu finds nothing
    residual[2, :, 6:, :] = -0.4  # elsewhere only (sign does not matter): no mass on the target
    out = residual_separation(residual, label)
    assert out["target_share"] == pytest.approx([0.125] * 3)
    assert out["mass_share"] == pytest.approx([1.0, 0.125, 0.0])
    assert out["enrichment"] == pytest.approx([8.0, 1.0, 0.0])
    assert out["otsu_dice"] == pytest.approx([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected residual"):
        residual_separation(residual[:, 0], label)
