"""Automatic mixed precision (the bundles' ``amp`` key) on a GPU: training speed, peak memory and finite losses of
every bundle's trainer with ``amp`` false and true, plus the engine overhead of ``SupervisedTrainer`` on the GPU.

    python benchmarks/amp_gpu.py [--warmup 5] [--iterations 40] [--out outputs/amp_gpu] [--mnist-work-dir DIR]

Each bundle's training workflow is built from its configs with the demo data overrides of ``run_demo.py`` (the
translation bundle: cluttered MNIST at the paper's sizes, ``full_schedule.json``), and its ``amp`` key set. The
trainer's data loaders are replaced by ``warmup + iterations`` batches drawn from them once beforehand, so the timing
covers the training step (the trainer's own iteration, post-processing and handlers) and not data loading. Iterations
per second are timed between the end of the warm-up and the last iteration (CUDA synchronised at both ends); peak
memory is ``torch.cuda.max_memory_allocated`` during the run (models and optimiser states included); a run is
"finite" when every ``loss*`` term of every iteration was. Validation is off.

Second table: supervised_seg's U-Net (as ``benchmarks/speed.py``: DiceCE, Adam, batch 8 of 128x128, the same
batches, already on the GPU) through a bare loop and through MONAI's ``SupervisedTrainer``, fp32 and AMP.

Writes ``<out>/amp_gpu.md`` and ``amp_gpu.json``. Needs a CUDA device (``--device cpu`` only checks that it runs).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.run_demo import ACWE_DEMO, ADVERSARIAL_DEMO, AF_SEG_DEMO  # noqa: E402
from common.bundle import load_workflow  # noqa: E402


@dataclass
class AmpCase:
    """One bundle's training config, and the trainer attributes holding its data loaders."""

    bundle: str
    configs: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    loaders: tuple[str, ...] = ("data_loader",)
    label: str = ""


CASES = [
    AmpCase(
        "supervised_seg",
        ["train.json"],
        {"demo_task": "cells", "demo_kwargs": {"num_cases": 40}, "class_names": ["cell"]},
        label="U-Net, cells demo, batch 8 x 128x128",
    ),
    AmpCase(
        "acwe_unsup_seg",
        ["train.json"],
        {k: v for k, v in ACWE_DEMO.items() if k != "val_interval"},
        label="RCNN + ACWE (mode 1), bone demo slices",
    ),
    AmpCase(
        "adversarial_semi_seg",
        ["train.json", "semi_1_8.json"],
        {
            **{k: v for k, v in ADVERSARIAL_DEMO.items() if k not in ("val_interval", "epoch_length")},
            "semi_start_epoch": 0,
            "semi_adv_start_epoch": 0,
        },
        loaders=("data_loader", "unlabeled_data_loader"),
        label="U-Net + FC discriminator, 1/8 labels, semi terms on, 8 + 8 x 32x32",
    ),
    AmpCase(
        "translation_semi_seg",
        ["train.json", "full_schedule.json"],
        {},
        loaders=("data_loader", "absent_data_loader"),
        label="proposed model, cluttered MNIST 48x48, width 1, batch 20 + 20",
    ),
    AmpCase(
        "af_seg",
        ["train.json"],
        {
            **{k: v for k, v in AF_SEG_DEMO.items() if k not in ("val_interval",)},
            "demo_task": "cells",
            "class_names": ["cell"],
            "dip_steps": 20,
            "background#dsp_max_steps": 20,
        },
        label="stage 3 (G, D, S), cells demo, batch 4 x 64x64 (stages 1-2 shortened)",
    ),
]


def _loss_terms(output: Any) -> dict[str, float]:
    """The ``loss*`` scalars of a trainer's output (a dict, or a decollated list of dicts: the first is read)."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    return {
        k: float(torch.as_tensor(v).detach().float().mean())
        for k, v in first.items()
        if str(k).startswith("loss") and isinstance(v, (torch.Tensor, float, int))
    }


def _images(batch: Any) -> int:
    return int(batch["image"].shape[0]) if isinstance(batch, dict) else 0


def run_case(case: AmpCase, amp: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Builds the bundle's trainer with ``amp``, times ``args.iterations`` cached iterations after a warm-up."""
    out = args.out / "runs" / f"{case.bundle}_amp{int(amp)}"
    shutil.rmtree(out, ignore_errors=True)
    overrides = {
        "output_dir": str(out / "outputs"),
        "ckpt_dir": str(out / "models"),
        "resume": False,
        "val_interval": 10**6,
        "max_epochs": 1,
        "amp": amp,
        "device": f"$torch.device('{args.device}')",
        **case.overrides,
    }
    if case.bundle == "translation_semi_seg" and args.mnist_work_dir:
        overrides["output_dir"] = str(args.mnist_work_dir)
    workflow = load_workflow(case.bundle, case.configs, bundle_root=str(REPO / "bundles" / case.bundle), **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    total = args.warmup + args.iterations
    images_per_iteration = 0
    for name in case.loaders:
        loader = getattr(trainer, name)
        batches = list(itertools.islice(itertools.cycle(loader), total)) if loader is not None else None
        if batches:
            images_per_iteration += _images(batches[0])
        setattr(trainer, name, batches)
    trainer.state.epoch_length, trainer.state.max_epochs = total, 1
    cuda = torch.device(args.device).type == "cuda"
    stamps: dict[str, float] = {}
    losses: list[dict[str, float]] = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def on_iteration(engine: Any) -> None:
        losses.append(_loss_terms(engine.state.output))
        if engine.state.iteration == args.warmup:
            sync()
            stamps["start"] = time.perf_counter()
        if engine.state.iteration == total:
            sync()
            stamps["end"] = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.run()
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
    finite = all(torch.isfinite(torch.tensor(v)) for step in losses for v in step.values())
    seconds = stamps["end"] - stamps["start"]
    last = losses[-5:]
    result = {
        "bundle": case.bundle,
        "label": case.label,
        "amp": amp,
        "trainer_amp": bool(getattr(trainer, "amp", False)),
        "trainer": type(trainer).__name__,
        "images_per_iteration": images_per_iteration,
        "iterations_per_s": args.iterations / seconds,
        "images_per_s": args.iterations * images_per_iteration / seconds,
        "peak_mib": peak,
        "finite": finite,
        "final_loss": statistics.mean(step.get("loss", float("nan")) for step in last),
    }
    workflow.finalize()
    del workflow, trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def engine_overhead(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Images/s of supervised_seg's U-Net step through a bare loop and through ``SupervisedTrainer``, fp32 / AMP."""
    from monai.engines import SupervisedTrainer
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randn(8, 1, 128, 128, generator=g).to(device),
            "label": torch.randint(0, 2, (8, 1, 128, 128), generator=g).float().to(device),
        }
        for _ in range(args.iterations)
    ]

    def network() -> torch.nn.Module:
        torch.manual_seed(0)
        net = UNet(2, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
        return net.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare(amp: bool) -> float:
        net, loss_fn = network(), DiceCELoss(to_onehot_y=True, softmax=True)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        net.train()
        sync()
        start = time.perf_counter()
        for b in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(net(b["image"]), b["label"])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sync()
        return time.perf_counter() - start

    def engine(amp: bool) -> float:
        net = network()
        trainer = SupervisedTrainer(
            device=device,
            max_epochs=1,
            train_data_loader=batches,
            network=net,
            optimizer=torch.optim.Adam(net.parameters(), 1e-3),
            loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
            decollate=False,
            amp=amp,
        )
        sync()
        start = time.perf_counter()
        trainer.run()
        sync()
        return time.perf_counter() - start

    rows = []
    for amp in (False, True):
        bare(amp), engine(amp)  # warm-up (cuDNN autotuning, allocator)
        times: dict[str, list[float]] = {"bare": [], "engine": []}
        for _ in range(args.repeats):
            times["bare"].append(bare(amp))
            times["engine"].append(engine(amp))
        b, e = statistics.median(times["bare"]), statistics.median(times["engine"])
        n = args.iterations * 8
        rows.append({"amp": amp, "bare_images_per_s": n / b, "engine_images_per_s": n / e, "engine_over_bare": e / b})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| bundle | trainer | amp | amp in trainer | images / iteration | iterations / s | images / s | peak MiB "
        "| losses finite | mean loss, last 5 iterations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['bundle']} | - | {r['amp']} | - | - | - | - | - | failed: {r['error']} | - |")
            continue
        lines.append(
            f"| {r['bundle']} | {r['trainer']} | {r['amp']} | {r['trainer_amp']} | {r['images_per_iteration']} | "
            f"{r['iterations_per_s']:.1f} | {r['images_per_s']:.0f} | {r['peak_mib']:.0f} | {r['finite']} | "
            f"{r['final_loss']:.4g} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the engine-overhead timing")
    parser.add_argument("--bundles", nargs="+", default=[c.bundle for c in CASES])
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="+", type=int, default=[0, 1], help="amp settings to run (0, 1)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the engine-overhead table")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "amp_gpu")
    parser.add_argument(
        "--mnist-work-dir", type=Path, default=None, help="output_dir holding (or to hold) the cluttered MNIST set"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    rows = []
    for case in CASES:
        if case.bundle not in args.bundles:
            continue
        for amp in (bool(a) for a in args.amp):
            print(f"== {case.bundle}, amp {amp}", flush=True)
            try:
                rows.append(run_case(case, amp, args))
            except Exception as e:  # a failure under amp is a finding: report it in the table
                traceback.print_exc()
                rows.append({"bundle": case.bundle, "amp": amp, "error": f"{type(e).__name__}: {e}"[:300]})
    text = (
        f"Device: {device_name}, torch {torch.__version__}; {args.iterations} timed iterations after {args.warmup} "
        "warm-up, cached batches, validation off.\n\n" + _table(rows)
    )
    overhead = []
    if not args.no_overhead:
        overhead = engine_overhead(args)
        text += (
            f"\n\nsupervised_seg U-Net, batch 8 x 128x128 on the device, {args.iterations} steps x {args.repeats} "
            "repeats (medians):\n\n| amp | bare loop images/s | SupervisedTrainer images/s | engine / bare time |\n"
            "|---|---|---|---|\n"
            + "\n".join(
                f"| {r['amp']} | {r['bare_images_per_s']:.0f} | {r['engine_images_per_s']:.0f} | "
                f"{r['engine_over_bare']:.3f} |"
                for r in overhead
            )
        )
    print(text)
    (args.out / "amp_gpu.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "amp_gpu.json").write_text(
        json.dumps({"device": device_name, "torch": torch.__version__, "rows": rows, "overhead": overhead}, indent=1),
        encoding="utf-8",
    )
    return 1 if any("error" in r or not r["finite"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
