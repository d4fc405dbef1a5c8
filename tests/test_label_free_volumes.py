"""Label-free segmentation of volumes whose object fills a minority of the slices (issue 34).

``acwe_unsup_seg`` trained with no label on a synthetic 3D stack (40 slices; nuclei in the middle ones; noise and a
slow intensity drift everywhere) must find the nuclei and leave the object-free slices empty. With the per-volume
ACWE statistics (``acwe_region_statistics: "volume"``, the default) it does; with the paper's per-image form
(``"image"``) the object-free slices come out about half foreground. ``ACWE_REGION_STATISTICS=image pytest ...``
runs the bundle test with the old form, which fails it.

On the benchmark's ``sparse_stack`` task (48 x 48 x 24 volumes, few nuclei) two further failures are covered: the
ACWE network of some seeds falls into the energy's second minimum, the split of the background drift (fixed by
restarts chosen by the energy, ``num_restarts``; ``ACWE_NUM_RESTARTS=0 pytest ...`` runs without them and fails), and
AF-Seg's stage 1 ran on the slice pipeline's clipped intensities, on which the drift is the better split of the
volumes with the fewest nuclei, and with a 3D smoothing that removes the nuclei's end slices (fixed by
``stage1_volume_intensities: "source"`` and ``stage1_volume_smoothing: 0``; ``AF_SEG_STAGE1_INTENSITIES=samples`` or
``AF_SEG_STAGE1_SMOOTHING=1`` run the old way and fail).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import run_workflow

from common.bundle import load_workflow
from common.classical.coarse_masks import write_coarse_masks
from common.data import has_volumes
from common.data.sparse_stack import sparse_stack, sparse_stack_msd
from common.handlers.energy_restarts import EnergyRestartHandler
from common.losses.acwe import ACWELoss
from common.transforms import ScalePercentilesd, SliceOccupancyd

REGION_STATISTICS = os.environ.get("ACWE_REGION_STATISTICS")  # unset: the bundles' own default (configs) is tested
MIN_DICE = 0.7  # per-image form on this stack: about 0.1 (docs/README.md, "Volumes")
MAX_EMPTY_SHARE = 0.01  # foreground share of an object-free slice; per-image form: about 0.5
NUM_RESTARTS = os.environ.get("ACWE_NUM_RESTARTS")  # unset: the bundle's default
STAGE1_INTENSITIES = os.environ.get("AF_SEG_STAGE1_INTENSITIES")  # unset: the bundle's default ("source")
STAGE1_SMOOTHING = os.environ.get("AF_SEG_STAGE1_SMOOTHING")  # unset: the bundle's default (0)
BENCHMARK_STACK = {"num_volumes": 10, "num_test": 3, "size": 48, "depth": 24, "object_slices": 10, "num_nuclei": 4}


def _scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """3D Dice and the foreground share of each object-free slice (last axis)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    dice = 2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)
    empty = ~truth.any(axis=(0, 1))
    return float(dice), pred[..., empty].mean(axis=(0, 1))


def test_volume_statistics_equal_one_energy_over_the_volume():
    torch.manual_seed(0)
    pred, image = torch.randn(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    loss = ACWELoss(region_statistics="volume")
    energy = loss(pred, image, ["v"] * 4, [0, 1, 2, 3])
    p = pred.clamp(0, 1)
    c1, c2 = (p * image).sum() / (p.sum() + 1e-8), ((1 - p) * image).sum() / ((1 - p).sum() + 1e-8)
    expected = (p * (image - c1) ** 2).sum() + ((1 - p) * (image - c2) ** 2).sum() + 0.004 * p.sum()
    assert torch.allclose(energy, expected)
    # later batches: the slices not in the batch enter through their last seen (detached) sums
    half = loss(pred[:2], image[:2], ["v"] * 2, [0, 1])
    expected_half = (p[:2] * (image[:2] - c1) ** 2).sum() + ((1 - p[:2]) * (image[:2] - c2) ** 2).sum()
    assert torch.allclose(half, expected_half + 0.004 * p[:2].sum())


def test_one_slice_sources_keep_the_per_image_energy_bitwise():
    torch.manual_seed(1)
    pred, image = torch.randn(3, 1, 12, 12, requires_grad=True), torch.rand(3, 1, 12, 12)
    old = ACWELoss()(pred, image)
    new = ACWELoss(region_statistics="volume")(pred, image, ["a.png", "b.png", "c.png"], [0, 0, 0])
    assert torch.equal(old, new)
    assert torch.equal(torch.autograd.grad(old, pred)[0], torch.autograd.grad(new, pred)[0])
    with pytest.raises(ValueError, match="region_statistics"):
        ACWELoss(region_statistics="patient")


def test_volume_percentiles(tmp_path: Path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(3):
        path = tmp_path / f"s{k}.npy"
        np.save(path, (rng.random((1, 8, 8)) * (k + 1)).astype(np.float32))
        items.append({"image": str(path), "source": "vol.nii.gz", "slice": k})
    np.save(tmp_path / "flat.npy", rng.random((1, 8, 8)).astype(np.float32))
    items.append({"image": str(tmp_path / "flat.npy"), "source": "flat.png", "slice": 0})
    volume, per_image = ScalePercentilesd("image", (0, 100), volumes=items), ScalePercentilesd("image", (0, 100))
    first = torch.as_tensor(np.load(items[0]["image"]))
    scaled = volume({"image": first, "source": "vol.nii.gz"})["image"]
    assert float(scaled.max()) < 0.5  # the dimmest slice stays dim: scaled with the volume's range
    flat = torch.as_tensor(np.load(items[3]["image"]))
    assert torch.equal(volume({"image": flat, "source": "flat.png"})["image"], per_image({"image": flat})["image"])


def test_slice_occupancy_log():
    pred = torch.zeros(1, 8, 8, 5)
    pred[0, 2:4, 2:4, 1:3] = 1
    report = SliceOccupancyd("pred", image_key=None, slice_axis=2)
    report({"pred": pred})
    (summary,) = report.last.values()
    assert summary["occupied"] == [1, 2] and summary["slices"] == 5


def test_label_free_stack_keeps_object_free_slices_empty(tmp_path: Path):
    image_path, label_path = sparse_stack(tmp_path / "data", size=64)
    images, models, preds = image_path.parent, tmp_path / "models", tmp_path / "preds"
    settings: dict = {"patch_size": [64, 64]}
    if REGION_STATISTICS is not None:
        settings["acwe_region_statistics"] = REGION_STATISTICS
    run_workflow(
        "acwe_unsup_seg",
        ["train.json"],
        unlabeled_dir=str(images),
        output_dir=str(tmp_path / "outputs"),
        ckpt_dir=str(models),
        max_epochs=10,
        val_interval=10,
        **settings,
    )
    run_workflow(
        "acwe_unsup_seg",
        ["inference.json"],
        "infer",
        dataset_dir=str(images),
        output_dir=str(preds),
        ckpt_dir=str(models),
        **settings,
    )
    pred = np.squeeze(nib.load(next(preds.glob("*_seg.nii.gz"))).get_fdata())
    dice, empty_share = _scores(pred, nib.load(label_path).get_fdata())
    form = REGION_STATISTICS or "the default"
    message = f"{form}: Dice {dice:.3f}, object-free slices' foreground share up to {empty_share.max():.3f}"
    assert dice > MIN_DICE, message
    assert empty_share.max() < MAX_EMPTY_SHARE, message


def test_af_seg_coarse_masks_over_the_volume(tmp_path: Path):
    image_path, label_path = sparse_stack(tmp_path / "data", size=64)
    image, truth = nib.load(image_path).get_fdata(), nib.load(label_path).get_fdata().astype(bool)
    image = (image - image.mean()) / image.std()  # the slice pipeline's per-volume z-score
    items = []
    for k in range(image.shape[2]):
        np.save(tmp_path / f"s{k}.npy", image[None, :, :, k].astype(np.float32))
        items.append({"image": str(tmp_path / f"s{k}.npy"), "source": str(image_path), "slice": k})
    shares = {}
    for mode in ("volume", "image"):
        out = write_coarse_masks(items, tmp_path / mode, erosion_radius=0, region_statistics=mode)
        masks = np.stack([np.load(item["weak"])[0] for item in out], axis=-1).astype(bool)
        dice, share = _scores(masks, truth)
        shares[mode] = share.max()
        if mode == "volume":
            assert dice > 0.85, dice  # per-slice level set on this stack: about 0.11
    assert shares["volume"] < MAX_EMPTY_SHARE < shares["image"], shares


def test_af_seg_stage1_bundle_on_a_volume(tmp_path: Path):
    image_path, label_path = sparse_stack(tmp_path / "data", size=64)
    workflow = run_workflow(
        "af_seg", ["train.json", "stage1_coarse.json"], unlabeled_dir=str(image_path.parent), output_dir=str(tmp_path)
    )
    items = workflow.parser.get_parsed_content("stage1_train")
    assert len(items) == 40 and {item["source"] for item in items} == {str(image_path)}
    truth = nib.load(label_path).get_fdata().astype(bool)
    masks = {int(item["slice"]): np.load(item["weak"])[0] for item in items}
    empty = [k for k in range(truth.shape[2]) if not truth[..., k].any()]
    assert max(masks[k].mean() for k in empty) < MAX_EMPTY_SHARE


# ---------------------------------------------------------------------------------------------------------------------
# the benchmark's sparse_stack task: energy restarts (acwe_unsup_seg) and stage 1 on the volume's own intensities
# ---------------------------------------------------------------------------------------------------------------------


def _benchmark_stack(tmp_path: Path) -> tuple[Path, dict]:
    """The benchmark's ``sparse_stack`` folder and a label-free training datalist of its 7 training volumes, as the
    benchmark writes it for a run without labels."""
    folder = sparse_stack_msd(tmp_path / "data", **BENCHMARK_STACK)
    content = json.loads((folder / "dataset.json").read_text())
    datalist = tmp_path / "datalist_train.json"
    training = [{"image": str(folder / item["image"])} for item in content["training"]]
    datalist.write_text(json.dumps({"name": "sparse_stack", "training": training}), encoding="utf-8")
    return datalist, content


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Phase:
    decide_epoch = 1


def _restart_run(items: list[dict], energies: list[float], max_epochs: int = 6) -> tuple[EnergyRestartHandler, list]:
    """Run the restart handler's epoch logic with given candidate energies; returns it and each candidate's weight."""
    from ignite.engine import Engine

    torch.manual_seed(0)
    net = _Net()
    optimizer = torch.optim.Adam(net.parameters())
    handler = EnergyRestartHandler(net, optimizer, ACWELoss(region_statistics="volume"), items, num_restarts=3)
    handler.phase_handler = _Phase()
    queue, weights = list(energies), []

    def energy() -> float:
        weights.append(net.conv.weight.detach().clone())
        return queue.pop(0)

    handler.energy = energy
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=max_epochs)
    return handler, weights


def test_energy_restarts_keep_the_candidate_of_lowest_energy():
    volume = [{"image": "x.npy", "source": "v.nii.gz", "slice": k} for k in range(3)]
    handler, weights = _restart_run(volume, [0.013, 0.006, 0.009, 0.012])
    assert handler.candidates == 4 and handler.window_epochs == 4 and handler.best["index"] == 1
    assert len({float(w.sum()) for w in weights}) == 4  # four different initialisations
    assert torch.equal(handler.network.conv.weight, weights[1])  # the run continues candidate 2
    assert handler.phase_handler.decide_epoch == 5  # the phase is decided on the chosen network
    short, _ = _restart_run(volume, [0.01, 0.02], max_epochs=3)  # room for two candidates only
    assert short.candidates == 2
    images = [{"image": f"{k}.png", "source": f"{k}.png", "slice": 0} for k in range(3)]
    flat, weights = _restart_run(images, [])
    assert not has_volumes(images) and flat.window_epochs == 0 and not weights  # 2D images: nothing happens
    assert flat.phase_handler.decide_epoch == 1


def test_acwe_restarts_escape_the_drift_split(tmp_path: Path):
    """Seed 2 of the benchmark's run: without restarts its network splits the background drift (Dice 0.000, energy
    per pixel 0.013 against 0.0056); with them the candidate of lowest energy finds the nuclei."""
    datalist, content = _benchmark_stack(tmp_path)
    settings = {} if NUM_RESTARTS is None else {"num_restarts": int(NUM_RESTARTS)}
    workflow = load_workflow(
        "acwe_unsup_seg",
        ["train.json"],
        "train",
        datalist_file=str(datalist),
        dataset_dir="",
        val_fraction=0.0,
        test_fraction=0.0,
        seed=2,
        class_names=["nucleus"],
        resume=False,
        max_epochs=6,
        val_interval=7,
        batch_size=8,
        patch_size=[48, 48],
        output_dir=str(tmp_path / "outputs"),
        ckpt_dir=str(tmp_path / "models"),
        **{"train#trainer#epoch_length": 50, **settings},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    net = workflow.parser.get_parsed_content("network_def").eval()
    folder = next((tmp_path / "data").glob("sparse_stack_*"))
    dice = []
    for item in content["test"]:
        image = nib.load(folder / item["image"]).get_fdata().astype(np.float32)
        lo, hi = np.percentile(image, [0.5, 99.5])  # intensity_percentiles of the volume, as inference scales it
        x = torch.as_tensor(np.moveaxis((image - lo) / (hi - lo), -1, 0)[:, None].astype(np.float32))
        with torch.no_grad():
            pred = np.moveaxis(net(x)[:, 0].numpy() > 0, 0, -1)
        dice.append(_scores(pred, nib.load(folder / item["label"]).get_fdata())[0])
    assert min(dice) > 0.95, f"num_restarts {NUM_RESTARTS or 'default'}: test-volume Dice {np.round(dice, 3)}"


def test_af_seg_stage1_on_the_volumes_own_intensities(tmp_path: Path):
    """The stage-1 masks of the benchmark's training volumes through the bundle (its clipped slice pipeline)."""
    datalist, content = _benchmark_stack(tmp_path)
    settings = {}
    if STAGE1_INTENSITIES is not None:
        settings["stage1_volume_intensities"] = STAGE1_INTENSITIES
    if STAGE1_SMOOTHING is not None:
        settings["stage1_volume_smoothing"] = int(STAGE1_SMOOTHING)
    workflow = run_workflow(
        "af_seg",
        ["train.json", "stage1_coarse.json"],
        datalist_file=str(datalist),
        dataset_dir="",
        val_fraction=0.0,
        test_fraction=0.0,
        class_names=["nucleus"],
        output_dir=str(tmp_path / "outputs"),
        **settings,
    )
    items = workflow.parser.get_parsed_content("stage1_train")
    folder = next((tmp_path / "data").glob("sparse_stack_*"))
    scores = {}
    for source in sorted({item["source"] for item in items}):
        masks = {int(i["slice"]): np.load(i["weak"])[0] for i in items if i["source"] == source}
        pred = np.stack([masks[k] for k in sorted(masks)], axis=-1)
        truth = nib.load(folder / "labelsTr" / Path(source).name).get_fdata()
        scores[Path(source).name] = _scores(pred, truth)
    dice = {name: round(d, 3) for name, (d, _) in scores.items()}
    assert len(dice) == 6 and min(dice.values()) > 0.95, f"stage-1 Dice per training volume {dice}"
    assert max(float(share.max()) for _, share in scores.values()) < MAX_EMPTY_SHARE


def test_stage1_source_intensities_fall_back_to_the_samples(tmp_path: Path):
    image_path, _ = sparse_stack(tmp_path / "data", size=32, depth=12, object_slices=6, num_nuclei=2)
    image = nib.load(image_path).get_fdata()
    items = []
    for k in range(image.shape[2]):
        np.save(tmp_path / f"s{k}.npy", image[None, :16, :16, k].astype(np.float32))  # resized: not the source's shape
        items.append({"image": str(tmp_path / f"s{k}.npy"), "source": str(image_path), "slice": k})
    out = write_coarse_masks(items, tmp_path / "out", erosion_radius=0, region_statistics="volume",
                             volume_intensities="source")  # fmt: skip
    assert len(out) == 12 and all(np.load(item["weak"]).shape == (1, 16, 16) for item in out)  # from the samples
    with pytest.raises(ValueError, match="volume_intensities"):
        write_coarse_masks(items, tmp_path / "bad", region_statistics="volume", volume_intensities="raw")


# ---------------------------------------------------------------------------------------------------------------------
# AF-Seg stage 3 on volumes: the segmenter's normalisation (instance norm per slice over-covers object-free slices)
# ---------------------------------------------------------------------------------------------------------------------


def test_af_seg_segmenter_norm_follows_the_data(tmp_path: Path):
    from monai.networks.nets import UNet

    from common.engines.af_seg import checkpoint_norm, segmenter_norm

    volume = [{"image": f"{k}.npy", "source": "stack.nii.gz", "slice": k} for k in range(3)]
    images = [{"image": f"{k}.png", "source": f"{k}.png", "slice": 0} for k in range(3)]
    assert segmenter_norm(volume) == "batch" and segmenter_norm(images) == "instance"
    assert checkpoint_norm(tmp_path / "missing.pt", "instance") == "instance"
    for norm in ("batch", "instance"):
        net = UNet(2, 1, 1, channels=(4, 8), strides=(2,), num_res_units=1, norm=norm)
        torch.save({"model": net.state_dict()}, tmp_path / f"{norm}.pt")
        assert checkpoint_norm(tmp_path / f"{norm}.pt", "instance") == norm


def test_af_seg_segmenter_keeps_object_free_slices_empty():
    """The segmenter the bundle builds for volume slices, fitted to sparse_stack slices, leaves object-free slices
    (almost) empty; with instance norm (each slice normalised on its own) about a third of their pixels cross 0.5
    after these 60 steps (10.8 % after the benchmark's 300 AF-Seg steps, seed 1)."""
    from monai.networks.nets import UNet

    from common.data.sparse_stack import sparse_stack_arrays
    from common.engines.af_seg import segmenter_norm

    torch.manual_seed(0)
    xs, ys = [], []
    for seed in range(4):
        image, label = sparse_stack_arrays(48, 24, 10, 4, seed=seed)
        v = image.astype(np.float32)
        xs.append(np.moveaxis(np.clip((v - v.mean()) / (5 * v.std()), -1, 1), 2, 0)[:, None])
        ys.append(np.moveaxis(label, 2, 0)[:, None].astype(np.float32))
    x, y = torch.as_tensor(np.concatenate(xs[:3])), torch.as_tensor(np.concatenate(ys[:3]))
    items = [{"image": f"{k}.npy", "source": "stack_000.nii.gz", "slice": k} for k in range(24)]
    net = UNet(2, 1, 1, channels=(8, 16, 32), strides=(2, 2), num_res_units=2, norm=segmenter_norm(items))
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(60):
        batch = torch.randint(0, len(x), (8,))
        optimiser.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x[batch]), y[batch]).backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        pred = torch.sigmoid(net(torch.as_tensor(xs[3]))) > 0.5
    empty = torch.as_tensor(ys[3]).flatten(1).sum(1) == 0
    share = float(pred[empty].float().mean())
    assert share < 0.05, f"{share:.3f} of the object-free slices' pixels predicted foreground"
