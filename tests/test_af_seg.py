"""AF-Seg: unit tests of the three stages, smoke runs of the bundle on tiny demo data, no label before evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bundle_utils import assert_panel, assert_report_consistent, make_workflow, missing_properties, run_workflow
from monai.engines import IterationEvents
from monai.networks.nets import PatchDiscriminator, UNet
from monai.transforms import SaveImaged
from PIL import Image

import common.priors.deep_priors as background_module
from common.classical.coarse_masks import (
    auto_erosion_radius,
    coarse_mask,
    erosion_radius_used,
    select_channel,
    write_coarse_masks,
)
from common.engines.af_seg import AFSegTrainer, linear_decay
from common.networks.residual_generator import ResidualGenerator
from common.priors.deep_priors import (
    deep_image_prior_inpaint,
    deep_segmentation_prior,
    write_clean_backgrounds,
)

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


def _discs(size: int, radius: float, spacing: int) -> np.ndarray:
    """``(size, size)`` bool mask of discs of ``radius`` on a grid of ``spacing`` pixels."""
    yy, xx = np.mgrid[:size, :size]
    centres = np.arange(spacing // 2, size, spacing)
    return np.any([(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2 for cy in centres for cx in centres], axis=0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_auto_erosion_radius_follows_object_size(tmp_path: Path):
    """ "auto": no erosion for small blobs (equivalent radius ~4 px), some for large discs (20 px); decided once on
    the training images, recorded in their datalist.json, and passed on to the validation images."""
    small, large = _discs(64, 4, 16), _discs(128, 20, 64)
    assert auto_erosion_radius([small, small]) == 0
    assert auto_erosion_radius([large]) == 3  # floor(0.15 * ~20)
    assert auto_erosion_radius([large], erosion_size_fraction=0.0) == 0 and auto_erosion_radius([]) == 0
    rng = np.random.default_rng(0)
    items = {}
    for name, mask in (("small", small), ("large", large)):
        image = (0.2 + 0.6 * mask + 0.02 * rng.standard_normal(mask.shape)).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", image[None])
        items[name] = [{"image": str(tmp_path / f"{name}.npy")}]
    out = write_coarse_masks(items["small"], tmp_path / "small", erosion_radius="auto")
    settings = json.loads((tmp_path / "small" / "datalist.json").read_text())["settings"]
    assert settings["erosion_radius_used"] == 0 and 3.5 < settings["median_equivalent_radius"] < 5
    assert _dice(np.load(out[0]["weak"])[0], small) > 0.9  # nothing eroded away
    out = write_coarse_masks(items["large"], tmp_path / "large", erosion_radius="auto")
    radius = erosion_radius_used(out)
    assert radius == 3
    weak = np.load(out[0]["weak"])[0]
    assert weak.sum() < 0.85 * large.sum() and (weak.astype(bool) <= large).all()
    val = write_coarse_masks(items["large"], tmp_path / "val", erosion_radius=radius)  # validation: the same radius
    assert erosion_radius_used(val) == radius and np.array_equal(np.load(val[0]["weak"]), np.load(out[0]["weak"]))
    with pytest.raises(ValueError):
        write_coarse_masks(items["large"], tmp_path / "bad", erosion_radius="large")


def _rgb_like(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(3, H, W)`` image whose channel 0 (red) holds a bright disk; channels 1 and 2 are noise only."""
    image, disk = _disk_image(size)
    rng = np.random.default_rng(1)
    return np.stack([image, *(0.5 + 0.1 * rng.standard_normal((2, size, size)))]).astype(np.float32), disk


def test_channel_selection_on_rgb_image(tmp_path: Path):
    """``coarse.channel`` 0 finds the objects of the red channel; another channel does not; stage 2 fits its DSP
    mask on the chosen channel and inpaints all three."""
    torch.set_num_threads(1)
    rgb, disk = _rgb_like()
    assert np.allclose(select_channel(rgb, "grey"), rgb.mean(axis=0)) and np.array_equal(select_channel(rgb, 0), rgb[0])
    assert np.array_equal(select_channel(rgb[:1], "grey"), rgb[0]) and select_channel(rgb[0], 2).shape == (32, 32)
    with pytest.raises(ValueError):
        select_channel(rgb, 3)
    assert _dice(coarse_mask(rgb, erosion_radius=0, channel=0), disk) > 0.9
    assert _dice(coarse_mask(rgb, erosion_radius=0, channel=1), disk) < 0.5
    np.save(tmp_path / "rgb.npy", rgb)
    stage1 = write_coarse_masks(
        [{"image": str(tmp_path / "rgb.npy")}], tmp_path / "stage1", erosion_radius=0, channel=0
    )
    assert _dice(np.load(stage1[0]["weak"])[0], disk) > 0.9
    kwargs = {"dsp_max_steps": 2, "dip_steps": 2, "noise_channels": 2, "mask_dilation": 0, "channel": 0}
    stage2 = write_clean_backgrounds(stage1, tmp_path / "stage2", **kwargs)
    background, dsp = np.load(stage2[0]["background"]), np.load(stage2[0]["dsp"])
    assert background.shape == (3, 32, 32) and background.dtype == np.float32 and dsp.shape == (1, 32, 32)
    assert (dsp[0] >= np.load(stage1[0]["weak"])[0]).all()
    assert np.array_equal(background[:, dsp[0] == 0], rgb[:, dsp[0] == 0])  # known pixels are kept


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
    with caplog.at_level("WARNING", logger="common.priors.deep_priors"):
        dsp, steps = deep_segmentation_prior(image, weak, area_ratio=2.0, max_steps=100, channels=(8, 16))
    assert steps < 100 and dsp.sum() <= 2 * weak.sum() and not caplog.records
    with caplog.at_level("WARNING", logger="common.priors.deep_priors"):
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


def test_trainer_three_channels():
    """RGB-like images: G, D and S take 3 channels; the discriminator step needs 3-channel clean backgrounds (it
    failed when stage 2 wrote one channel: ``torch.cat`` of a 1-channel background and a 3-channel G(x)), and a
    1-channel background is refused with a message."""
    torch.manual_seed(0)
    g = ResidualGenerator(UNet(2, 3, 3, channels=(4, 8), strides=(2,), norm="instance", act="LEAKYRELU"))
    s = UNet(2, 3, 1, channels=(4, 8), strides=(2,))
    d = PatchDiscriminator(spatial_dims=2, num_layers_d=2, channels=4, in_channels=3, out_channels=1, norm="INSTANCE")
    batch = {"image": torch.rand(2, 3, 16, 16), "label": (torch.rand(2, 1, 16, 16) > 0.7).float()}
    batch["background"] = torch.rand(2, 3, 16, 16)
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch.items()} for i in range(2)], batch_size=2)
    g_opt = torch.optim.Adam(list(g.parameters()) + list(s.parameters()), 2e-4)
    trainer = AFSegTrainer("cpu", 1, loader, g, d, s, g_opt, torch.optim.Adam(d.parameters(), 2e-4), decollate=False)
    before = [p.detach().clone() for p in d.parameters()]
    out = trainer._iteration(trainer, batch)
    assert out["synthetic"].shape == (2, 3, 16, 16) and out["pred"].shape == (2, 1, 16, 16)
    assert torch.isfinite(out["d_loss"]) and torch.isfinite(out["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, d.parameters()))
    with pytest.raises(ValueError, match="channel"):
        trainer._iteration(trainer, {**batch, "background": batch["background"][:, :1]})


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
    assert_report_consistent(report)
    # image | weak label | clean background | synthetic | prediction | truth
    assert_panel(tmp / "outputs" / "eval" / "panel.png", "iciicc")
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


def _postprocess_until_save(transforms: list, pred: torch.Tensor) -> torch.Tensor:
    data = {"pred": pred}
    for transform in transforms:
        if isinstance(transform, SaveImaged):
            break
        data = transform(data)
    return torch.as_tensor(data["pred"])


@pytest.mark.parametrize(
    "configs, key",
    [(["inference.json"], "postprocessing"), (["train.json", "evaluate.json"], "validate#postprocessing")],
)
def test_postprocessing_removes_small_objects(configs: list[str], key: str, tmp_path: Path):
    """Inference and evaluation (validation too) drop predicted objects below ``min_object_size`` pixels."""
    logits = torch.full((1, 24, 24), -5.0)
    logits[:, 2:4, 2:4] = 5.0  # 4 px
    logits[:, 10:20, 10:20] = 5.0  # 100 px
    parser = make_workflow(BUNDLE, configs, "infer" if key == "postprocessing" else "train").parser
    assert parser["min_object_size"] == 10
    pred = _postprocess_until_save(parser.get_parsed_content(key).transforms, logits.clone())
    assert pred[:, 2:4, 2:4].sum() == 0 and pred[:, 10:20, 10:20].all() and pred.sum() == 100
    parser["min_object_size"] = 0
    pred = _postprocess_until_save(parser.get_parsed_content(key, instantiate=True, lazy=False).transforms, logits)
    assert pred.sum() == 104


def test_stage1_radius_decided_on_training_images(trained):
    """The validation weak labels are eroded with the radius chosen on the training images' coarse masks."""
    _, workflow = trained
    stage1_dir = Path(workflow.parser.get_parsed_content("stage1_dir"))
    train = json.loads((stage1_dir / "training" / "datalist.json").read_text())["settings"]
    val = json.loads((stage1_dir / "validation" / "datalist.json").read_text())["settings"]
    assert train["erosion_radius"] == "auto" and isinstance(train["erosion_radius_used"], int)
    assert val["erosion_radius"] == val["erosion_radius_used"] == train["erosion_radius_used"]
    assert workflow.parser.get_parsed_content("stage1_erosion_radius") == train["erosion_radius_used"]


def _stage2_rank(rank: int, world_size: int, tmp: str, items: list[dict]) -> None:
    """One rank of :func:`test_stage2_split_across_ranks`: records the files it writes and the list it returns."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world_size)
    written = []

    def recording_save(path: Path, array: np.ndarray) -> None:
        written.append(str(path))
        save(path, array)

    save, background_module.save_npy_atomic = background_module.save_npy_atomic, recording_save
    kwargs = {"dsp_max_steps": 2, "dip_steps": 2, "noise_channels": 2}
    result = write_clean_backgrounds(items, Path(tmp) / "stage2", **kwargs)
    (Path(tmp) / f"rank{rank}.json").write_text(json.dumps({"written": written, "result": result}))
    dist.destroy_process_group()


def test_stage2_split_across_ranks(tmp_path: Path):
    """Under torch.distributed each item is computed by exactly one rank, and every rank returns the full list."""
    image, disk = _disk_image(16)
    items = []
    for i in range(4):
        np.save(tmp_path / f"img{i}.npy", np.roll(image, i, axis=1)[None])
        np.save(tmp_path / f"weak{i}.npy", np.roll(disk, i, axis=1)[None].astype(np.uint8))
        items.append({"image": str(tmp_path / f"img{i}.npy"), "weak": str(tmp_path / f"weak{i}.npy")})
    mp.spawn(_stage2_rank, args=(2, str(tmp_path), items), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    written = [{Path(p).name for p in rank["written"] if p.endswith("_background.npy")} for rank in ranks]
    assert written[0] == {"00000_img0_background.npy", "00002_img2_background.npy"}
    assert written[1] == {"00001_img1_background.npy", "00003_img3_background.npy"}
    assert ranks[0]["result"] == ranks[1]["result"] and len(ranks[0]["result"]) == 4
    assert [Path(item["background"]).name for item in ranks[0]["result"]] == sorted(written[0] | written[1])
    assert all(np.load(item["background"]).shape == (1, 16, 16) for item in ranks[0]["result"])
    single = write_clean_backgrounds(items, tmp_path / "single", dsp_max_steps=2, dip_steps=2, noise_channels=2)
    for a, b in zip(single, ranks[0]["result"]):  # the same numbers as one process
        assert np.array_equal(np.load(a["background"]), np.load(b["background"]))
