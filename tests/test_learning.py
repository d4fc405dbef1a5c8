"""Learning tests: each bundle, trained for seconds on a small task, reaches a Dice threshold, and what its key part
does is asserted, so that a config that switches the key part off (a loss weight or learning rate of 0, a stage
removed) fails here. The smoke tests of each bundle run one epoch and check what it wrote (the trained weights,
the checkpoint's step), not what it learned.

Thresholds come from measured runs (values in the comments: seeds 0 / 1 / 2, the bundle's ``seed`` key, 2 CPU cores);
each lies well above chance (the ablation's value, also given) and well below what the method reaches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bundle_utils import make_workflow, run_workflow
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from PIL import Image
from test_cluttered_mnist import write_small_mnist

from common.data.demo import ensure_demo_dataset
from common.metrics import read_metrics

pytestmark = pytest.mark.slow


def _paths(tmp: Path) -> dict[str, Any]:
    return {"output_dir": str(tmp / "outputs"), "ckpt_dir": str(tmp / "models"), "resume": False}


def _train(
    bundle: str, tmp: Path, trainer_key: str | None = None, configs: tuple[str, ...] = ("train.json",), **overrides: Any
) -> tuple[ConfigWorkflow, list[dict[str, float]]]:
    """Train ``bundle`` with its outputs under ``tmp``; with ``trainer_key``, also return the scalar terms of every
    iteration of that engine (its ``state.output``; the first item of a decollated list)."""
    torch.set_num_threads(1)
    workflow = make_workflow(bundle, list(configs), **_paths(tmp), **overrides)
    workflow.initialize()
    log: list[dict[str, float]] = []
    if trainer_key is not None:

        def record(engine) -> None:
            output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
            terms = {k: float(v) for k, v in output.items() if isinstance(v, float) or getattr(v, "ndim", 1) == 0}
            log.append({**terms, "epoch": engine.state.epoch})

        workflow.parser.get_parsed_content(trainer_key).add_event_handler(Events.ITERATION_COMPLETED, record)
    workflow.run()
    workflow.finalize()
    return workflow, log


def _eval_dice(bundle: str, tmp: Path, configs: tuple[str, ...] = ("train.json",), **overrides: Any) -> float:
    """Mean test Dice of the model ``_train`` saved, from the bundle's ``evaluate.json`` report."""
    eval_dir = tmp / "eval"
    run_workflow(bundle, [*configs, "evaluate.json"], "eval", eval_dir=str(eval_dir), **_paths(tmp), **overrides)
    return read_metrics(eval_dir / "metrics.json").mean("dice")


def _inference_dice(
    bundle: str,
    tmp: Path,
    datalist: Path | None = None,
    configs: tuple[str, ...] = ("inference.json",),
    **overrides: Any,
) -> float:
    """Mean Dice of the masks the bundle's inference workflow writes (PNG) for the images of ``datalist`` (default: the
    demo dataset that ``_train`` generated under ``tmp``), against their labels: the known answer that an inference
    path writing empty, shifted or transposed masks fails."""
    if datalist is None:
        (datalist,) = (tmp / "outputs" / "demo_data").rglob("dataset.json")
    items = json.loads(datalist.read_text())["training"]
    images = (datalist.parent / items[0]["image"]).parent
    out = tmp / "inference"
    run_workflow(
        bundle,
        list(configs),
        "infer",
        dataset_dir=str(images),
        output_dir=str(out),
        output_ext=".png",
        ckpt_dir=str(tmp / "models"),
        **overrides,
    )
    scores = []
    for item in items:
        name = Path(item["image"]).name.rsplit(".", 1)[0]
        mask = np.asarray(Image.open(out / f"{name}_seg.png")) > 0
        label = np.asarray(Image.open(datalist.parent / item["label"])) > 0
        scores.append(2 * (mask & label).sum() / max(mask.sum() + label.sum(), 1))
    assert len(scores) == len(list(images.iterdir())), "an image without its mask"
    return float(np.mean(scores))


def _png_datalist(items: list[dict[str, Any]], folder: Path) -> Path:
    """Write ``items`` (``{"image": (1, H, W) in [0, 1], "label": (1, H, W)}`` arrays) as 8-bit PNGs, as a viewer
    shows them, under ``folder/images`` and ``folder/labels``; return ``folder/dataset.json`` listing them under
    ``"training"`` (what ``_inference_dice`` reads)."""
    entries = []
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for i, item in enumerate(items):
        image = np.clip(np.round(np.asarray(item["image"][0], np.float32) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"case_{i}.png")
        Image.fromarray((np.asarray(item["label"][0]) > 0).astype(np.uint8) * 255).save(
            folder / "labels" / f"case_{i}.png"
        )
        entries.append({"image": f"images/case_{i}.png", "label": f"labels/case_{i}.png"})
    datalist = folder / "dataset.json"
    datalist.write_text(json.dumps({"training": entries}), encoding="utf-8")
    return datalist


def _mean(log: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in log]
    assert values, f"no iteration logged {key!r}"
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------------------------------
# supervised_seg: the U-Net on 10 cells images (6 train), 64 px, 10 epochs (~8 s)
# ---------------------------------------------------------------------------------------------------------------------

SUPERVISED = {
    "demo_kwargs": {"num_cases": 10, "image_size": 64},
    "patch_size": [64, 64],
    "batch_size": 4,
    "max_epochs": 10,
    "val_interval": 10,
}
SUPERVISED_MIN_DICE = 0.55  # trained: 0.728 / 0.758 / 0.809; learning_rate 0 (chance): 0.268 / 0.244 / 0.268


def test_supervised_seg_learns_the_cells(tmp_path: Path):
    """The config's learning rate and loss train the U-Net to Dice >= 0.55 on the test split; the same run with
    learning rate 0 stays below it (the threshold separates a working from a broken training)."""
    _train("supervised_seg", tmp_path / "method", **SUPERVISED)
    dice = _eval_dice("supervised_seg", tmp_path / "method", **SUPERVISED)
    _train("supervised_seg", tmp_path / "frozen", **SUPERVISED, learning_rate=0.0)
    frozen = _eval_dice("supervised_seg", tmp_path / "frozen", **SUPERVISED, learning_rate=0.0)
    inferred = _inference_dice("supervised_seg", tmp_path / "method", patch_size=SUPERVISED["patch_size"])
    print(f"supervised_seg: Dice {dice:.3f}, learning rate 0: {frozen:.3f}; inference.json's masks: {inferred:.3f}")
    assert dice >= SUPERVISED_MIN_DICE
    assert frozen < SUPERVISED_MIN_DICE
    assert inferred >= SUPERVISED_MIN_DICE  # the masks inference.json writes, against the labels


# ---------------------------------------------------------------------------------------------------------------------
# acwe_unsup_seg: mode 1 (ACWE loss only, no label read) on 12 cells images, 64 px, 25 epochs (~10 s)
# ---------------------------------------------------------------------------------------------------------------------

ACWE = {"demo_task": "cells", "demo_kwargs": {"num_cases": 12, "image_size": 64}, "max_epochs": 25}
# trained: 0.835 / 0.806 / 0.784 (15 epochs: 0.727 / 0.742 / 0.588); learning_rate 0 (the untrained network, phase rule
# applied): 0.226 / 0.374 / 0.381
ACWE_MIN_DICE = 0.6


def test_acwe_unsup_seg_learns_the_cells_from_the_acwe_loss(tmp_path: Path):
    """Mode 1 reaches Dice >= 0.6 with no label; with learning rate 0 it does not, and an ACWE weight of 0 (the
    only loss term of mode 1) is refused by the loss. A smaller, faster sibling of test_acwe_unsup_seg's
    ``test_mode1_finds_the_cells_with_no_label`` (its full cells schedule reaches 0.81 in 80 s)."""
    _train("acwe_unsup_seg", tmp_path / "method", **ACWE)
    dice = _eval_dice("acwe_unsup_seg", tmp_path / "method", **ACWE)
    _train("acwe_unsup_seg", tmp_path / "frozen", **ACWE, learning_rate=0.0)
    frozen = _eval_dice("acwe_unsup_seg", tmp_path / "frozen", **ACWE, learning_rate=0.0)
    inferred = _inference_dice("acwe_unsup_seg", tmp_path / "method")
    print(f"acwe_unsup_seg: Dice {dice:.3f}, learning rate 0: {frozen:.3f}; inference.json's masks: {inferred:.3f}")
    assert dice >= ACWE_MIN_DICE
    assert inferred >= ACWE_MIN_DICE  # the masks inference.json writes (its phase rule applied), against the labels
    assert frozen < ACWE_MIN_DICE
    with pytest.raises(RuntimeError, match="ActiveContourCombinedLoss") as excinfo:
        _train("acwe_unsup_seg", tmp_path / "no_acwe", **ACWE, acwe_weight=0.0)
    assert "at least one of acwe_weight and label_weight must be non-zero" in repr(excinfo.value.__cause__)


# ---------------------------------------------------------------------------------------------------------------------
# adversarial_semi_seg: 16 cells images (3 labelled, 8 unlabelled), 64 px, 12 epochs, semi from epoch 5 (~20 s)
# ---------------------------------------------------------------------------------------------------------------------

ADVERSARIAL_MIN_DICE = 0.45  # 0.566 / 0.575 / 0.602 (12 steps on 3 labelled images; chance, an untrained U-Net: ~0.27)
PSEUDO_LABEL_MIN_PRECISION = 0.7  # last epoch, against the unlabelled images' hidden labels: 0.801 / 0.783 / 0.867
PSEUDO_LABEL_MIN_COVERAGE = 0.5  # 1.0 / 1.0 (T_semi 0.2)
SEMI_MIN_CONTRIBUTION = (
    0.02  # semi_weight * mean loss_semi over the semi steps: 0.044 / 0.041 / 0.038; semi_weight 0: 0
)
ADV_MIN_CONTRIBUTION = 0.003  # adv_weight * mean loss_adv: 0.0072 / 0.0074 / 0.0071; adv_weight 0: 0
DISCRIMINATOR_MAX_CONFIDENCE = 0.49  # mean sigmoid(D(S(x_u))), last step: 0.463 / 0.440 / 0.460 (start 0.501)


def test_adversarial_semi_seg_pseudo_labels(tmp_path: Path):
    """On a task too small for the semi-supervised gain to show, what the method's parts do: the discriminator's
    confident pseudo-labels on the unlabelled images are mostly right (precision >= 0.7 against labels the method
    never sees, coverage >= 0.5), the pseudo-label term (``semi_weight``) and the adversarial term (``adv_weight``)
    are in the segmenter's loss once active, the discriminator learns (its confidence falls below 0.5 on S's
    predictions), and the segmenter reaches Dice >= 0.45."""
    dataset = ensure_demo_dataset("cells", tmp_path / "data", num_cases=16, image_size=64)
    overrides = {
        "dataset_dir": str(dataset.parent),
        "num_classes": 2,
        "class_names": ["cell"],
        "labelled_fraction": 0.25,
        "max_epochs": 12,
        "val_interval": 12,
        "semi_start_epoch": 4,
        "batch_size": 4,
        "unlabeled_batch_size": 4,
    }
    truth = {"_target_": "common.data.HiddenTruth", "datalist_file": str(dataset), "num_classes": 2}
    workflow, log = _train("adversarial_semi_seg", tmp_path, "train#trainer", **overrides, diagnostic_truth=truth)
    weights = {
        k: float(workflow.parser.get_parsed_content(k)) for k in ("adv_weight", "semi_weight", "semi_adv_weight")
    }
    dice = _eval_dice("adversarial_semi_seg", tmp_path, **overrides)
    quality = json.loads((tmp_path / "outputs" / "pseudo_label_quality.json").read_text(encoding="utf-8"))[-1]
    semi = [r for r in log if r["epoch"] > overrides["semi_start_epoch"]]
    for r in log:  # the logged total is the weighted sum of the logged terms
        expected = r["loss_ce"] + sum(weights[f"{k}_weight"] * r[f"loss_{k}"] for k in ("adv", "semi", "semi_adv"))
        assert r["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    semi_contribution = weights["semi_weight"] * _mean(semi, "loss_semi")
    adv_contribution = weights["adv_weight"] * _mean(log, "loss_adv")
    print(
        f"adversarial_semi_seg: Dice {dice:.3f}, pseudo-label precision {quality['precision']:.3f}, coverage "
        f"{quality['coverage']:.3f}, semi term {semi_contribution:.4f}, adversarial term {adv_contribution:.4f}, "
        f"confidence {_mean(semi[-1:], 'confidence_mean'):.3f}"
    )
    inferred = _inference_dice("adversarial_semi_seg", tmp_path, dataset, num_classes=2)
    print(f"adversarial_semi_seg: inference.json's masks: {inferred:.3f}")
    assert dice >= ADVERSARIAL_MIN_DICE
    assert inferred >= ADVERSARIAL_MIN_DICE  # the masks inference.json writes, against the labels
    assert quality["precision"] >= PSEUDO_LABEL_MIN_PRECISION and quality["coverage"] >= PSEUDO_LABEL_MIN_COVERAGE
    assert _mean(semi, "coverage") >= PSEUDO_LABEL_MIN_COVERAGE
    assert semi_contribution >= SEMI_MIN_CONTRIBUTION
    assert adv_contribution >= ADV_MIN_CONTRIBUTION
    assert _mean(semi[-1:], "confidence_mean") < DISCRIMINATOR_MAX_CONFIDENCE


# ---------------------------------------------------------------------------------------------------------------------
# translation_semi_seg: cluttered MNIST 48 px, 160 P + 160 A images, 25% of P labelled, width 0.125, 2 epochs (~30 s)
# ---------------------------------------------------------------------------------------------------------------------

# 0.208 / 0.307 / 0.264; learning_rate 0: 0.079; rec / cyc / adv weight 0: 0.208 / 0.219 / 0.207. inference.json's
# masks of the same test images written as PNGs: 0.229 / 0.335 / 0.270; learning_rate 0: 0.079
TRANSLATION_MIN_DICE = 0.14
TRANSLATION_MAX_RECONSTRUCTION = (
    0.17  # test P images, mean |G_com + G_res - x|: 0.129 / 0.117 / 0.117; rec_weight 0: 0.215
)
TRANSLATION_MIN_D_LOSS = 1.0  # discriminators' hinge loss, last 10 steps: 1.905 / 2.331 / 2.431; adv_weight 0: 0.166
# A -> P -> A cycle L1, last 10 steps: 0.131 / 0.104 / 0.110 (start 0.18-0.27); cyc_weight 0: 0.140
TRANSLATION_MAX_CYCLE = 0.2


def test_translation_semi_seg_translates_and_segments(tmp_path: Path):
    """The translation model trained briefly on cluttered MNIST: the P -> A -> P path reconstructs held-out test
    images (``rec_weight``), its translated images keep the discriminators from winning (``adv_weight``: without it
    their loss falls to ~0.2), the A -> P -> A cycle error falls, and the test digits are segmented above chance, by
    the evaluation and by inference.json on the test images saved as PNGs (the cycle bound does not catch
    ``cyc_weight`` 0 this early: the other terms train the same decoders)."""
    mnist = write_small_mnist(tmp_path / "mnist", num_train=400, num_test=40)
    overrides = {
        "mnist_source": str(mnist),
        "num_train": 160,
        "num_val": 10,
        "num_test": 20,
        "labelled_fraction": 0.25,
        "network_width": 0.125,
        "batch_size": 8,
        "absent_batch_size": 8,
        "max_epochs": 2,
        "val_interval": 2,
    }
    workflow, log = _train("translation_semi_seg", tmp_path, "train#trainer", **overrides)
    dice = _eval_dice("translation_semi_seg", tmp_path, **overrides)
    test = workflow.parser.get_parsed_content("datalists")["test"]
    images = torch.as_tensor(np.stack([item["image"] for item in test])).float()
    with torch.no_grad():
        healthy, residual = workflow.parser.get_parsed_content("network").eval().translate(images)
    reconstruction = float((healthy + residual - images).abs().mean())
    d_loss, cycle = _mean(log[-10:], "loss_d"), _mean(log[-10:], "loss_cyc")
    print(
        f"translation_semi_seg: Dice {dice:.3f}, test reconstruction {reconstruction:.4f}, discriminator loss "
        f"{_mean(log[:10], 'loss_d'):.3f} -> {d_loss:.3f}, cycle {_mean(log[:10], 'loss_cyc'):.3f} -> {cycle:.3f}"
    )
    datalist = _png_datalist(test, tmp_path / "test_png")
    inferred = _inference_dice("translation_semi_seg", tmp_path, datalist, network_width=overrides["network_width"])
    print(f"translation_semi_seg: inference.json's masks: {inferred:.3f}")
    assert dice >= TRANSLATION_MIN_DICE
    assert inferred >= TRANSLATION_MIN_DICE  # the masks inference.json writes for the test PNGs, against the labels
    assert reconstruction <= TRANSLATION_MAX_RECONSTRUCTION
    assert d_loss >= TRANSLATION_MIN_D_LOSS
    assert cycle <= TRANSLATION_MAX_CYCLE


# ---------------------------------------------------------------------------------------------------------------------
# unimatch_semi_seg: 16 cells images (3 labelled, 8 unlabelled), 64 px, 20 epochs of 2 steps, threshold 0.95 (~20 s)
# ---------------------------------------------------------------------------------------------------------------------

UNIMATCH = {
    "num_classes": 2,
    "class_names": ["cell"],
    "labelled_fraction": 0.25,
    "patch_size": [64, 64],
    "batch_size": 4,
    "unlabeled_batch_size": 4,
    # the paper's 0.01 leaves the weak predictions under 0.95 confidence in 40 steps (last-epoch coverage 0.002 /
    # 0.000 / 0.000): 0.1 makes them confident within the test's time
    "learning_rate": 0.1,
    "max_epochs": 20,
    "val_interval": 20,
    "network_def#features": [8, 16, 32, 64, 128, 8],
}
# test split: 0.705 / 0.841 / 0.830; learning_rate 0: 0.256; supervised_only.json: 0.827 (the labels alone pass at this
# size: what the unlabelled terms do is asserted below, not that they are needed). inference.json's masks of all 16
# images: 0.750 / 0.833 / 0.820; learning_rate 0: 0.233
UNIMATCH_MIN_DICE = 0.55
# share of weak-view pixels at confidence >= 0.95, mean over the last epoch: 0.782 / 0.726 / 0.771 (the first steps:
# ~0); learning_rate 0: 0.0001; supervised_only.json (strong and feature weights 0): 0
UNIMATCH_MIN_COVERAGE = 0.4


def test_unimatch_semi_seg_makes_confident_pseudo_labels_that_reach_the_loss(tmp_path: Path):
    """UniMatch at the paper's threshold 0.95: the weak views' predictions on the unlabelled images become confident
    (last-epoch coverage >= 0.4, from ~0), the strong-view and feature-perturbation terms are non-zero and in the
    logged total with the config's weights, the test split reaches Dice >= 0.55, and so do the masks inference.json
    writes, against the labels."""
    dataset = ensure_demo_dataset("cells", tmp_path / "data", num_cases=16, image_size=64)
    overrides = {"dataset_dir": str(dataset.parent), **UNIMATCH}
    workflow, log = _train("unimatch_semi_seg", tmp_path, "train#trainer", **overrides)
    weights = {k: float(workflow.parser.get_parsed_content(k)) for k in ("strong_weight", "feature_weight")}
    datalists = workflow.parser.get_parsed_content("datalists")
    assert (len(datalists["training"]), len(datalists["unlabeled"])) == (3, 8)
    steps = len(datalists["unlabeled"]) // UNIMATCH["unlabeled_batch_size"]  # an epoch: a pass over the unlabelled
    assert len(log) == UNIMATCH["max_epochs"] * steps
    for r in log:  # the logged total: (L_s + strong_weight L_strong + feature_weight L_fp) / 2
        expected = (
            r["loss_sup"] + weights["strong_weight"] * r["loss_strong"] + weights["feature_weight"] * r["loss_fp"]
        ) / 2
        assert r["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    last = log[-steps:]
    dice = _eval_dice("unimatch_semi_seg", tmp_path, **overrides)
    network = {k: UNIMATCH[k] for k in ("patch_size", "network_def#features")}
    inferred = _inference_dice("unimatch_semi_seg", tmp_path, dataset, num_classes=2, **network)
    print(
        f"unimatch_semi_seg: Dice {dice:.3f}, inference.json's masks {inferred:.3f}, coverage "
        f"{_mean(log[:steps], 'coverage'):.4f} -> {_mean(last, 'coverage'):.4f}, last epoch: strong term "
        f"{_mean(last, 'loss_strong'):.4f}, feature term {_mean(last, 'loss_fp'):.4f}"
    )
    assert weights["strong_weight"] > 0 and weights["feature_weight"] > 0
    assert dice >= UNIMATCH_MIN_DICE
    assert inferred >= UNIMATCH_MIN_DICE  # the masks inference.json writes, against the labels
    assert _mean(last, "coverage") >= UNIMATCH_MIN_COVERAGE
    assert all(r["loss_strong"] > 0 and r["loss_fp"] > 0 for r in last)


# ---------------------------------------------------------------------------------------------------------------------
# af_seg: the three stages on 12 cells images (6 train), 64 px, 30 DSP / DIP steps, 20 + 10 epochs of 3 steps (~40 s)
# ---------------------------------------------------------------------------------------------------------------------

AF_SEG = {
    "demo_kwargs": {"num_cases": 12, "image_size": 64},
    "patch_size": [64, 64],
    "batch_size": 2,
    "learning_rate": 0.001,
    "dip_steps": 30,
    "background#dsp_max_steps": 30,
    "val_interval": 50,
    "constant_epochs": 20,
    "decay_epochs": 10,
}
# 0.810 / 0.763 / 0.666 (the weak labels of the training images: ~0.84); shape_weight 0: 0.734 (30 steps of batch 4
# instead of 90 of batch 2: 0.769 / 0.312, too few); an untrained U-Net: ~0.27
AF_SEG_MIN_DICE = 0.5
# mean |label * (G(x) - x)| over the last 4 steps: 0.0026 / 0.0017 / 0.0025 (start 0.13); shape_weight 0: 0.300
AF_SEG_MAX_SHAPE_ERROR = 0.05


def test_af_seg_synthesis_keeps_the_objects_and_the_segmenter_learns(tmp_path: Path):
    """AF-Seg with no label: the generator keeps the image inside the weak label (the shape term, ``shape_weight``)
    while the discriminator sees backgrounds only, and the segmenter trained on the synthetic images reaches Dice
    >= 0.5 on real test images."""
    _, log = _train("af_seg", tmp_path, "train#trainer", **AF_SEG)
    dice = _eval_dice("af_seg", tmp_path, **AF_SEG)
    shape = _mean(log[-4:], "shape_loss")
    inferred = _inference_dice("af_seg", tmp_path, patch_size=AF_SEG["patch_size"])
    start = _mean(log[:4], "shape_loss")
    print(f"af_seg: Dice {dice:.3f}, shape error {start:.4f} -> {shape:.4f}; inference.json's masks {inferred:.3f}")
    assert dice >= AF_SEG_MIN_DICE
    assert inferred >= AF_SEG_MIN_DICE  # the masks inference.json writes, against the labels
    assert shape <= AF_SEG_MAX_SHAPE_ERROR


# ---------------------------------------------------------------------------------------------------------------------
# mipr_auto_annotation: 24 lesions images 32 px (5 labelled, 10 unlabelled), one round, G 30 epochs (~15 s)
# ---------------------------------------------------------------------------------------------------------------------

MIPR = {
    "demo_kwargs": {"num_cases": 24, "image_size": 32},
    "image_size": [32, 32],
    "labelled_fraction": 0.3,
    "val_fraction": 0.15,
    "test_fraction": 0.2,
    "max_epochs": 15,
    "val_interval": 15,
    "batch_size": 4,
    "generator_epochs": 30,
    "generator_batch_size": 2,
    "generator_channels": [8, 16],
    "spade_hidden_channels": 8,
    "discriminator_channels": 8,
    "discriminator_layers": 2,
    "discriminator_num_d": 1,
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "num_rounds": 1,
    "acceptance_dice": 0.6,
}
# mean Dice of S(x') against t' over the round's non-empty pairs: 0.597 / 0.566 / 0.596 (accepted: 6 / 6 / 4 of 10);
# generator_learning_rate 0: 0.033 (0 accepted); feature_matching_weight 0: 0.520 (1 accepted: G's hinge GAN term alone
# still trains it)
MIPR_MIN_CHECK_DICE = 0.3
MIPR_MIN_DICE = 0.5  # final model, test split: 0.803 / 0.655 / 0.704; generator_learning_rate 0: 0.668


def test_mipr_generator_makes_pairs_the_gate_accepts(tmp_path: Path):
    """One annotation round with a real acceptance gate (S(x') must agree with t' at Dice >= 0.6): the trained
    generator's images x' = G(x, t') fit their labels (mean check Dice >= 0.3), some pairs pass the gate, and the
    final segmenter reaches Dice >= 0.5 on the test split. An untrained generator's pairs score ~0 and none pass."""
    _train("mipr_auto_annotation", tmp_path, **MIPR)
    dice = _eval_dice("mipr_auto_annotation", tmp_path, **MIPR)
    pairs = json.loads((tmp_path / "outputs" / "mipr" / "round1" / "datalist.json").read_text(encoding="utf-8"))
    checks = [p["dice"] for p in pairs["training"] + pairs["rejected"] if p.get("dice") is not None]  # not empty
    network = {k: MIPR[k] for k in ("image_size", "network_def#channels", "network_def#strides")}
    inferred = _inference_dice("mipr_auto_annotation", tmp_path, **network)
    print(
        f"mipr: Dice {dice:.3f}, counts {pairs['counts']}, check Dice {np.mean(checks):.3f}; inference {inferred:.3f}"
    )
    assert pairs["counts"]["accepted"] >= 1
    assert len(checks) == pairs["counts"]["unlabelled"] - pairs["counts"]["rejected_empty"] > 0
    assert np.mean(checks) >= MIPR_MIN_CHECK_DICE
    assert dice >= MIPR_MIN_DICE
    assert inferred >= MIPR_MIN_DICE  # the masks inference.json writes, against the labels
