"""AF-Seg: unit tests of the three stages, smoke runs of the bundle on tiny demo data, no label before evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import missing_properties, run_workflow
from monai.engines import IterationEvents
from monai.networks.nets import PatchDiscriminator, UNet
from PIL import Image

from common.classical.coarse_masks import coarse_mask, write_coarse_masks
from common.engines.af_seg import AFSegTrainer, linear_decay
from common.engines.af_seg_background import deep_image_prior_inpaint, deep_segmentation_prior
from common.networks.residual_generator import ResidualGenerator

BUNDLE = "af_seg"
TINY_DEMO = {"num_cases": 4, "image_size": 32}


def _overrides(tmp: Path, **extra: object) -> dict:
    return {
        "output_dir": str(tmp / "outputs"),
        "ckpt_dir": str(tmp / "models"),
        "demo_kwargs": TINY_DEMO,
        "max_epochs": 1,
        "val_interval": 1,
        "patch_size": [32, 32],
        "batch_size": 2,
        "dip_steps": 3,
        "background#dsp_max_steps": 3,
        **extra,
    }


def _disk_image(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    rng = np.random.default_rng(0)
    return (0.2 + 0.6 * disk + 0.02 * rng.standard_normal((size, size))).astype(np.float32), disk


def test_coarse_mask_level_set_and_vesselness():
    image, disk = _disk_image()
    mask = coarse_mask(image, "level_set", erosion_radius=1)
    assert mask.dtype == np.uint8 and mask.sum() < disk.sum() and (mask.astype(bool) <= disk).all()
    line = np.full((32, 32), 0.8, np.float32)
    line[:, 15:18] = 0.2  # a dark vertical vessel
    vessel = coarse_mask(line, "vesselness", erosion_radius=0, bright_foreground=False)
    assert vessel[:, 15:18].mean() > 0.5 and vessel[:, :10].sum() == 0
    with pytest.raises(ValueError):
        coarse_mask(image, "watershed")


def test_write_coarse_masks_drops_labels_and_skips_when_done(tmp_path: Path):
    image, disk = _disk_image()
    np.save(tmp_path / "img.npy", image[None])
    items = [{"image": str(tmp_path / "img.npy"), "label": "GROUND_TRUTH"}]
    out = write_coarse_masks(items, tmp_path / "stage1", erosion_radius=0)
    assert "label" not in out[0] and np.load(out[0]["weak"]).shape == (1, 32, 32)
    assert (tmp_path / "stage1" / "datalist.json").is_file()
    Path(out[0]["weak"]).unlink()  # a finished stage is not recomputed
    assert write_coarse_masks(items, tmp_path / "stage1") == out


def test_dsp_and_dip():
    torch.set_num_threads(1)
    image, disk = _disk_image()
    weak = coarse_mask(image, "level_set", erosion_radius=2)
    dsp, steps = deep_segmentation_prior(image, weak, area_ratio=2.0, max_steps=50, channels=(8, 16))
    assert dsp.shape == (32, 32) and 1 <= steps <= 50 and (dsp >= weak).all()
    clean = deep_image_prior_inpaint(image, disk, steps=30, channels=(8, 16), noise_channels=4)
    assert clean.shape == (32, 32) and np.allclose(clean[~disk], image[~disk])


def test_dsp_stop_rule_met_or_warned(caplog: pytest.LogCaptureFixture):
    """The stop rule ends DSP at an area <= lambda x the weak label's; when ``max_steps`` cannot reach it, a warning
    is logged and the mask is the lambda x |weak| most probable pixels (united with the weak label), not most of
    the image."""
    torch.set_num_threads(1)
    image, disk = _disk_image()
    weak = coarse_mask(image, "level_set", erosion_radius=2)
    with caplog.at_level("WARNING", logger="common.engines.af_seg_background"):
        dsp, steps = deep_segmentation_prior(image, weak, area_ratio=2.0, max_steps=100, channels=(8, 16))
    assert steps < 100 and dsp.sum() <= 2 * weak.sum() and not caplog.records
    with caplog.at_level("WARNING", logger="common.engines.af_seg_background"):
        dsp, steps = deep_segmentation_prior(image, weak, 2.0, max_steps=1, learning_rate=1e-6, channels=(8, 16))
    assert steps == 1 and "stop rule" in caplog.text
    assert (dsp >= weak).all() and weak.sum() < dsp.sum() <= 3 * weak.sum()


def test_trainer_losses_and_schedule():
    factor = linear_decay(2, 2)
    assert [round(factor(e), 3) for e in range(4)] == [1.0, 1.0, 0.667, 0.333]  # epochs 1-2 constant, 3-4 decaying
    g = ResidualGenerator(UNet(2, 1, 1, channels=(4, 8), strides=(2,), norm="instance", act="LEAKYRELU"))
    x = torch.rand(1, 1, 8, 8)
    assert ((g(x) - x).abs() <= 2.0).all()
    s = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    d = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=4, in_channels=1, out_channels=1)
    batch = {"image": torch.rand(2, 1, 16, 16), "label": (torch.rand(2, 1, 16, 16) > 0.7).float()}
    batch["background"] = torch.rand(2, 1, 16, 16)
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(2)], batch_size=2)
    g_opt = torch.optim.Adam(list(g.parameters()) + list(s.parameters()), 2e-4)
    trainer = AFSegTrainer("cpu", 1, loader, g, d, s, g_opt, torch.optim.Adam(d.parameters(), 2e-4), decollate=False)
    out = trainer._iteration(trainer, batch)
    shape = (batch["label"] * (out["synthetic"] - batch["image"])).abs().mean()
    assert torch.isclose(out["shape_loss"], shape, atol=1e-6)
    assert torch.isclose(out["loss"], out["g_adv_loss"] + out["seg_loss"] + 50 * out["shape_loss"], atol=1e-4)
    assert out["pred"].shape == (2, 1, 16, 16) and torch.isfinite(out["d_loss"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: bfloat16 autocast, gradient scaler disabled")
@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")
def test_trainer_amp_on_cpu():
    """With amp the networks run under autocast (bfloat16 on CPU, where the gradient scaler disables itself) and two
    iterations give finite losses and float32 outputs."""
    torch.manual_seed(0)
    g = ResidualGenerator(UNet(2, 1, 1, channels=(4, 8), strides=(2,), norm="instance", act="LEAKYRELU"))
    s = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    d = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=4, in_channels=1, out_channels=1)
    items = [
        {
            "image": torch.rand(1, 16, 16),
            "label": (torch.rand(1, 16, 16) > 0.7).float(),
            "background": torch.rand(1, 16, 16),
        }
        for _ in range(4)
    ]
    loader = torch.utils.data.DataLoader(items, batch_size=2)
    g_opt = torch.optim.Adam(list(g.parameters()) + list(s.parameters()), 2e-4)
    d_opt = torch.optim.Adam(d.parameters(), 2e-4)
    trainer = AFSegTrainer("cpu", 1, loader, g, d, s, g_opt, d_opt, decollate=False, amp=True)
    dtypes, losses = [], []
    s.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED, lambda engine: losses.append(engine.state.output["loss"].item())
    )
    before = [p.detach().clone() for p in s.parameters()]
    trainer.run()
    assert trainer.state.iteration == 2 and set(dtypes) == {torch.bfloat16}
    out = trainer.state.output
    assert all(np.isfinite(losses)) and len(losses) == 2
    assert all(torch.isfinite(out[k]) for k in ("loss", "g_adv_loss", "seg_loss", "shape_loss", "d_loss"))
    assert out["pred"].dtype == out["synthetic"].dtype == torch.float32
    assert any(not torch.equal(a, b) for a, b in zip(before, s.parameters()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("af_seg")
    workflow = run_workflow(BUNDLE, ["train.json"], **_overrides(tmp))
    return tmp, workflow


def test_properties_complete(tmp_path: Path):
    assert missing_properties(BUNDLE, ["train.json"], "train", **_overrides(tmp_path)) == []
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img.png")
    assert missing_properties(BUNDLE, ["inference.json"], "infer", dataset_dir=str(tmp_path)) == []


def test_no_label_before_evaluation(trained):
    """Stages 1-3 see no manual label: every item lacks "label", weak labels and backgrounds are our own files."""
    tmp, workflow = trained
    parser = workflow.parser
    stage1_dir = parser.get_parsed_content("stage1_dir")
    for key in ("train_items", "val_items", "stage1_train", "stage1_val", "stage2_train", "train#dataset#data"):
        items = parser.get_parsed_content(key)
        assert items and all("label" not in item for item in items), key
    for item in parser.get_parsed_content("stage2_train"):
        assert item["weak"].startswith(stage1_dir) and item["background"].startswith(stage1_dir)
    for item in parser.get_parsed_content("validate#dataset#data"):  # monitoring against weak labels only
        assert item["label"].startswith(stage1_dir)
    assert (tmp / "models" / "model.pt").is_file() and (tmp / "models" / "checkpoint_epoch=1.pt").is_file()


def test_stage_configs_skip_finished_outputs(trained):
    """stage1/stage2 configs reuse the outputs of the full run instead of recomputing them."""
    tmp, workflow = trained
    stage2 = Path(workflow.parser.get_parsed_content("stage2_dir")) / "datalist.json"
    before = stage2.stat().st_mtime_ns
    run_workflow(BUNDLE, ["train.json", "stage2_background.json"], **_overrides(tmp))
    assert stage2.stat().st_mtime_ns == before


def test_evaluate_writes_report_and_panels(trained):
    tmp, _ = trained
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], **_overrides(tmp))
    report = json.loads((tmp / "outputs" / "eval" / "metrics.json").read_text())
    assert 0.0 <= report["summary"]["dice"]["mean"]["mean"] <= 1.0 and report["per_image"]
    assert (tmp / "outputs" / "eval" / "panel.png").stat().st_size > 1000
    assert (tmp / "outputs" / "eval" / "test_panel.png").is_file()


def test_inference_on_2d_image(trained, tmp_path: Path):
    tmp, _ = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 36)) * 255).astype(np.uint8)).save(inputs / "img.png")
    out = tmp_path / "pred"
    run_workflow(
        BUNDLE, ["inference.json"], "infer", dataset_dir=str(inputs), output_dir=str(out), ckpt_dir=str(tmp / "models")
    )
    pred = np.squeeze(np.asarray(nib.load(out / "img_seg.nii.gz").dataobj))
    assert pred.shape == (36, 40) and set(np.unique(pred)) <= {0, 1}
