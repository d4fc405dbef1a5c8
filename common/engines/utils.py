"""Pieces shared by the engines: a MONAI ``Trainer`` base with the amp steps of trainers that hold several
optimisers, an endless pass over a second data loader, and scalar terms for logging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from torch.optim import Optimizer
from torch.utils.data import DataLoader

__all__ = ["AmpTrainer", "ScalarTerms", "endless"]


class AmpTrainer(Trainer):
    """``monai.engines.Trainer`` for engines that write their own ``_iteration`` with one or more optimisers
    (generator / discriminator / segmenter): the autocast context and the scaled backward + optimiser step that
    follow the trainer's ``amp``, ``amp_kwargs`` and ``scaler``. The iteration calls ``scaler.update()`` once, after
    its last step."""

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.state.device.type, enabled=self.amp, **self.amp_kwargs)

    def _backward_step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()


def endless(loader: DataLoader, name: str = "second") -> Iterator[Any]:
    """Batches of ``loader`` forever, re-iterating (and so reshuffling) it each time it is exhausted.

    The engines with two data sources (labelled + unlabelled, present + absent) let the first loader drive the
    epoch and draw from the second with this. ``name`` names the loader in the error raised when it is empty.
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"the {name} data loader is empty.")


class ScalarTerms:
    """``output_transform`` for ``StatsHandler`` / ``TensorBoardStatsHandler``: ``{key: float}`` of the scalar terms
    of a trainer's output (a dict, or a decollated list of dicts: the first is read).

    Args:
        keys: the terms to log (e.g. ``loss``, ``loss_d``, ``coverage``); ``None``: every key starting with ``loss``.
    """

    def __init__(self, keys: Sequence[str] | None = None) -> None:
        self.keys = tuple(keys) if keys is not None else None

    def __call__(self, output: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, float]:
        first = output[0] if isinstance(output, Sequence) else output
        keys = self.keys if self.keys is not None else [k for k in first if str(k).startswith("loss")]
        return {k: float(first[k]) for k in keys if k in first}
