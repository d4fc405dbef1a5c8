"""Training samples without metadata (``common.data.PlainCacheDataset``): the batches of the ``MetaTensor`` path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, MetaTensor, get_track_meta

from common.data import PlainCacheDataset, PreparedCacheDataset, plain_tensors

REPO = Path(__file__).resolve().parent.parent


def _items(root: Path, n: int = 7) -> list[dict]:
    """Prepared-style 2D samples (``.npy`` image and label, channel first) of uneven sizes."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        shape = (1, 20 + i, 24 - i)
        image, label = root / f"img{i}.npy", root / f"lab{i}.npy"
        np.save(image, rng.normal(size=shape).astype(np.float32))
        np.save(label, (rng.random(shape) > 0.6).astype(np.float32))
        items.append({"image": str(image), "label": str(label)})
    return items


def _transform(bundle: str, config_id: str, overrides: dict) -> object:
    """A bundle's own training transform (from its ``train.json``), seeded."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), **overrides})
    transform = parser.get_parsed_content(config_id, instantiate=True)
    transform.set_random_state(7)
    return transform


def _batches(dataset: PlainCacheDataset, epochs: int = 3) -> list[dict]:
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=3, shuffle=True)
    return [b for _ in range(epochs) for b in loader]


@pytest.mark.parametrize(
    "bundle, config_id, keys",
    [
        ("supervised_seg", "train#preprocessing", ("image", "label")),
        ("adversarial_semi_seg", "train#preprocessing", ("image", "label")),
        ("unimatch_semi_seg", "train#preprocessing", ("image", "label")),
        ("acwe_unsup_seg", "train#preprocessing", ("image", "label")),
    ],
)
def test_plain_path_gives_the_same_batches(tmp_path: Path, bundle: str, config_id: str, keys: tuple[str, ...]):
    items = _items(tmp_path)
    overrides = {"patch_size": [16, 16], "num_channels": 1, "num_classes": 2}
    if bundle == "acwe_unsup_seg":  # per-image percentile scaling: no data set to read volumes from
        overrides.update(datalists={}, acwe_region_statistics="image")
    kwargs = {"cache_rate": 1.0, "num_workers": 0, "progress": False}
    meta = PlainCacheDataset(items, _transform(bundle, config_id, overrides), track_meta=True, **kwargs)
    plain = PlainCacheDataset(items, _transform(bundle, config_id, overrides), track_meta=False, **kwargs)
    with_meta, without = _batches(meta), _batches(plain)
    assert len(with_meta) == len(without) == 9
    for a, b in zip(with_meta, without):
        for key in keys:
            assert isinstance(a[key], MetaTensor)
            assert type(b[key]) is torch.Tensor  # no MetaTensor left, nothing to track
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype
            assert torch.equal(a[key].as_tensor(), b[key])
        assert not [k for k in b if k.endswith("_meta_dict") or k.endswith("_transforms")]
    assert get_track_meta()  # restored after every sample


def test_prepared_cache_dataset_passes_track_meta(tmp_path: Path):
    items = _items(tmp_path, 3)
    transform = _transform("supervised_seg", "train#preprocessing", {"patch_size": [16, 16]})
    dataset = PreparedCacheDataset(
        items, transform, str(tmp_path / "work"), num_channels=1, num_classes=2, track_meta=False, progress=False
    )
    sample = dataset[0]
    assert type(sample["image"]) is torch.Tensor and sample["image"].shape == (1, 16, 16)
    cached = dataset._cache[0]
    assert all(type(v) is torch.Tensor for v in cached.values() if isinstance(v, torch.Tensor))


def test_plain_tensors_keeps_values_and_drops_metadata():
    t = MetaTensor(torch.arange(4.0), meta={"filename_or_obj": "x"})
    out = plain_tensors({"image": t, "image_meta_dict": {"a": 1}, "image_transforms": [], "n": [t, 3], "s": "x"})
    assert set(out) == {"image", "n", "s"}
    assert type(out["image"]) is torch.Tensor and torch.equal(out["image"], t.as_tensor())
    assert type(out["n"][0]) is torch.Tensor and out["n"][1] == 3


def test_autocast_inferer_bf16_on_cpu_and_float32_out():
    from monai.inferers import SimpleInferer

    from common.inferers import AutocastInferer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    seen = {}

    def network(inputs: torch.Tensor) -> torch.Tensor:
        out = net(inputs)
        seen["dtype"] = out.dtype
        return out

    off = AutocastInferer(SimpleInferer(), enabled=False)(x, network)
    assert seen["dtype"] == torch.float32
    on = AutocastInferer(SimpleInferer(), enabled=True, channels_last=True)(x, network)
    assert seen["dtype"] == torch.bfloat16 and on.dtype == torch.float32
    assert net.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(on, off, atol=0.1)  # bf16 rounding only
    on.sum().backward()  # gradients flow back through the autocast forward
    assert net.weight.grad is not None and net.weight.grad.dtype == torch.float32
