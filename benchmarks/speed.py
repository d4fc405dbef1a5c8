"""Training throughput of our engines against a bare PyTorch loop, and 3D inference throughput.

    python benchmarks/speed.py [--iterations 30] [--repeats 3] [--batch 8] [--size 128] [--threads N]

For ``supervised_seg``'s network (MONAI ``UNet``, DiceCE, Adam) it times the same optimiser steps on the same
in-memory batches twice, interleaved ``repeats`` times: through MONAI's ``SupervisedTrainer`` (the bundle's engine,
events and post-processing off) and through a bare ``for`` loop (forward, loss, backward, step). It prints images/s
for each and their ratio (engine time / bare time, measured in one run; target at most 1.10), and the throughput
of ``common.inferers.SliceOrImageInferer`` on a 3D volume. The same comparison for every trainer of the collection
(built from the bundle configs, on one thread): ``benchmarks/engine_overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from common.inferers import SliceOrImageInferer


def _network() -> torch.nn.Module:
    return UNet(2, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")


def _batches(n: int, batch: int, size: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(batch, 1, size, size, generator=g),
            "label": torch.randint(0, 2, (batch, 1, size, size), generator=g).float(),
        }
        for _ in range(n)
    ]


def time_bare(batches: list[dict[str, torch.Tensor]]) -> float:
    """Seconds for one pass of forward, loss, backward and Adam step per batch, in a plain loop."""
    net, loss_fn = _network(), DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    start = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(b["image"]), b["label"])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def time_engine(batches: list[dict[str, torch.Tensor]]) -> float:
    """Seconds for the same steps through MONAI's ``SupervisedTrainer``."""
    net = _network()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        decollate=False,
    )
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start


def time_volume_inference(size: int, depth: int) -> float:
    """Seconds to segment one (1, 1, size, size, depth) volume slice by slice."""
    net = _network().eval()
    inferer = SliceOrImageInferer(roi_size=(size, size), spatial_dim=2, sw_batch_size=8)
    volume = torch.randn(1, 1, size, size, depth)
    with torch.no_grad():
        start = time.perf_counter()
        inferer(volume, net)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--depth", type=int, default=64, help="slices of the inference volume")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = _batches(args.iterations, args.batch, args.size)
    time_bare(batches[:2]), time_engine(batches[:2])  # warm-up
    bare, engine = [], []
    for _ in range(args.repeats):
        bare.append(time_bare(batches))
        engine.append(time_engine(batches))
    images = args.iterations * args.batch
    volume_s = time_volume_inference(args.size, args.depth)
    figures = {
        "threads": torch.get_num_threads(),
        "bare_images_per_s": images / statistics.median(bare),
        "engine_images_per_s": images / statistics.median(engine),
        "engine_over_bare": statistics.median(engine) / statistics.median(bare),
        "volume_slices_per_s": args.depth / volume_s,
    }
    print(
        f"supervised_seg UNet, batch {args.batch} x {args.size}x{args.size}, {args.iterations} steps x {args.repeats}"
    )
    print("| measure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
