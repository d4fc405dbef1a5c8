"""CPU seconds per training iteration of translation_semi_seg's proposed model, as configured by the bundle.

    OMP_NUM_THREADS=1 python benchmarks/translation_cost.py [--width 1.0] [--iterations 6]
        [--discriminator-channels 128 256 512] [--out /tmp/translation_cost]

Runs ``iterations`` iterations of the bundle's ``TranslationModelTrainer`` (48x48 cluttered MNIST, batch 10 P + 10 A,
the spec's width 1 by default) on 200 generated training images and prints the process CPU time of each iteration
and the median of all but the first (warm-up). Process CPU time on one thread is less sensitive to other jobs on a
shared machine than wall time, but still varies with the load (caches, memory bandwidth).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ignite.engine import Engine, Events

from common.bundle import load_workflow


def iteration_cpu_seconds(
    width: float, iterations: int, discriminator_channels: list[int] | None, out: str
) -> list[float]:
    """Process CPU seconds of each of ``iterations`` training iterations of the proposed model."""
    workflow = load_workflow(
        "translation_semi_seg",
        ["train.json"],
        output_dir=f"{out}/outputs",
        ckpt_dir=f"{out}/models",
        network_width=width,
        num_train=200,
        num_val=20,
        num_test=20,
        max_epochs=1,
        epoch_length=iterations,
        val_interval=iterations + 1,
        discriminator_channels=discriminator_channels,
        resume=False,
    )
    workflow.initialize()
    trainer: Engine = workflow.parser.get_parsed_content("train#trainer")
    seconds: list[float] = []
    started: dict[str, float] = {}
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: started.update(t=time.process_time()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: seconds.append(time.process_time() - started["t"]))
    trainer.run()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0, help="network width multiplier (1.0: the paper's)")
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations, the first is a warm-up")
    parser.add_argument("--discriminator-channels", type=int, nargs="+", default=None, help="default: the preset")
    parser.add_argument("--out", default="/tmp/translation_cost", help="folder for the generated data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds = iteration_cpu_seconds(args.width, max(2, args.iterations), args.discriminator_channels, args.out)
    widths = args.discriminator_channels or "preset (48x48: 128, 256, 512)"
    print(f"discriminator {widths}, width {args.width}, 1 thread")
    print("CPU s per iteration:", ", ".join(f"{s:.2f}" for s in seconds))
    print(f"median without the first: {statistics.median(seconds[1:]):.2f} s")


if __name__ == "__main__":
    main()
