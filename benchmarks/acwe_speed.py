"""Quality and speed of the learned ACWE segmenter (Chen & Frey, MIDL 2020) versus per-image Chan-Vese.

    python benchmarks/acwe_speed.py --ckpt bundles/acwe_unsup_seg/models/model.pt \
        [--output-dir bundles/acwe_unsup_seg/outputs] [--override '{"demo_kwargs": {...}}'] [--json speed.json]

Both methods see the same test slices of the bundle's data (``datalists['test']`` of ``configs/train.json`` with
the given overrides), loaded by the bundle's own preprocessing (per-slice min-max to [0, 1]). Chan-Vese is
``common.classical.chan_vese.chan_vese_segment`` (scikit-image), one image at a time; the network runs in eval mode,
once with batch 1 (latency per image) and once with batches of ``--batch-size`` (throughput). Seconds per image are
wall-clock on this machine with the torch thread count shown; the ratio is taken from the same run. Dice is the
foreground Dice of ``common.metrics.SegmentationReport`` (mean ± std over the test slices).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser

from common.classical.chan_vese import chan_vese_segment
from common.metrics import SegmentationReport

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "acwe_unsup_seg"


def bundle_parser(overrides: dict[str, Any]) -> ConfigParser:
    """``configs/train.json`` of the bundle with ``overrides`` (e.g. ``output_dir``, ``demo_kwargs``)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def load_test_slices(parser: ConfigParser) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The test split through the bundle's preprocessing: images ``(N, 1, H, W)`` in [0, 1], labels ``(N, 1, H, W)``.

    All test slices must share one size (true for prepared slices of one data set).
    """
    transform = parser.get_parsed_content("validate#preprocessing")
    items = [transform(item) for item in parser.get_parsed_content("datalists")["test"]]
    images = torch.stack([torch.as_tensor(i["image"]).float() for i in items])
    labels = torch.stack([torch.as_tensor(i["label"]).float() for i in items])
    return images, labels, [Path(i["image"].meta["filename_or_obj"]).name for i in items]


def dice_summary(pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """Foreground Dice ``{"mean", "std", "n"}`` over images; pred, label: ``(N, 1, H, W)`` in {0, 1}."""
    report = SegmentationReport(num_classes=2, class_names=["foreground"])
    report.add(pred.long(), label.long())
    return report.summary()["dice"]["mean"]


def run_chan_vese(images: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, float]:
    """Chan-Vese on each image ``(N, 1, H, W)``; returns masks ``(N, 1, H, W)`` and seconds per image."""
    start = time.perf_counter()
    masks = [chan_vese_segment(image[0].numpy(), **kwargs) for image in images]
    seconds = (time.perf_counter() - start) / len(images)
    return torch.from_numpy(np.stack(masks)[:, None]).float(), seconds


@torch.inference_mode()
def run_network(network: torch.nn.Module, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Network foreground (output > 0) for images ``(N, 1, H, W)`` in batches; returns masks and seconds per image."""
    network.eval()
    network(images[:1])  # warm-up (allocations, first-call overheads)
    start = time.perf_counter()
    outputs = [network(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    seconds = (time.perf_counter() - start) / len(images)
    return (torch.cat(outputs) > 0).float(), seconds


def load_network(parser: ConfigParser, ckpt: str) -> torch.nn.Module:
    """The bundle's ``network_def`` with the weights of ``ckpt`` (a ``model.pt`` state dict), on the CPU."""
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    return network.cpu()


def benchmark(parser: ConfigParser, ckpt: str, batch_size: int = 20) -> list[dict[str, Any]]:
    """Rows ``{"method", "dice", "seconds_per_image", "speed-up"}`` for Chan-Vese and the network (batch 1, batched).

    ``speed-up``: Chan-Vese seconds per image / the method's seconds per image, from this one run.
    """
    images, labels, _ = load_test_slices(parser)
    network = load_network(parser, ckpt)
    cv_masks, cv_seconds = run_chan_vese(images)
    rows = [{"method": "Chan-Vese (skimage, per image)", "dice": dice_summary(cv_masks, labels), "seconds": cv_seconds}]
    for bs in (1, batch_size):
        masks, seconds = run_network(network, images, bs)
        rows.append({"method": f"RCNN, batch {bs}", "dice": dice_summary(masks, labels), "seconds": seconds})
    for row in rows:
        row["speed_up"] = cv_seconds / row["seconds"]
    return rows


def speed_table(rows: list[dict[str, Any]], num_images: int) -> str:
    """Markdown table of :func:`benchmark` rows."""
    lines = [
        f"| method ({num_images} test slices, {torch.get_num_threads()} torch threads) | Dice | s / image | "
        "speed-up vs Chan-Vese |",
        "|---|---|---|---|",
    ]
    for r in rows:
        d = r["dice"]
        lines.append(
            f"| {r['method']} | {d['mean']:.3f} ± {d['std']:.3f} | {r['seconds']:.4f} | {r['speed_up']:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(BUNDLE / "models" / "model.pt"), help="network weights (model.pt)")
    parser.add_argument("--output-dir", default=str(BUNDLE / "outputs"), help="the bundle's output_dir (data cache)")
    parser.add_argument("--override", default="{}", help="JSON dict of further train.json overrides")
    parser.add_argument("--batch-size", type=int, default=20, help="batch size of the throughput run")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    config = bundle_parser({"output_dir": args.output_dir, **json.loads(args.override)})
    rows = benchmark(config, args.ckpt, args.batch_size)
    num_images = len(config.get_parsed_content("datalists")["test"])
    print(speed_table(rows, num_images))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
