"""Stop training with a clear message when the loss stops being finite."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

from .resume import latest_checkpoint


def _first_loss(output: Any) -> Any:
    """The ``loss`` of a MONAI trainer's output (a dict, or a list of per-sample dicts), else the output itself."""
    if isinstance(output, list) and output:
        output = output[0]
    return output.get("loss") if isinstance(output, dict) else output


class StopOnNonFiniteLoss:
    """Raise ``FloatingPointError`` at the first iteration whose loss is NaN or infinite.

    Unlike Ignite's ``TerminateOnNan`` (which stops quietly) this fails the run with a message naming the epoch,
    iteration and the last good checkpoint, which stays untouched: epoch checkpoints are only written at the end
    of a completed epoch.

    Args:
        ckpt_dir: folder of the epoch checkpoints, named in the message.
        output_transform: maps ``engine.state.output`` to the loss (default: its ``"loss"`` entry).
    """

    def __init__(self, ckpt_dir: str | None = None, output_transform: Callable[[Any], Any] = _first_loss) -> None:
        self.ckpt_dir = ckpt_dir
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir else None
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise FloatingPointError(
            f"training stopped: loss is {value} at epoch {engine.state.epoch}, iteration {engine.state.iteration}; "
            f"{kept}. Check the learning rate and the input intensities (NaN/Inf in the data are rejected on load)."
        )
