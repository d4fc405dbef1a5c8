"""Pieces shared by the engines: a MONAI ``Trainer`` base with the amp steps of trainers that hold several
optimisers, an endless pass over a second data loader, and scalar terms for logging."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import default_metric_cmp_fn, default_prepare_batch
from torch.optim import Optimizer
from torch.utils.data import DataLoader

__all__ = ["AmpTrainer", "ScalarTerms", "endless"]


class AmpTrainer(Trainer):
    """``monai.engines.Trainer`` for engines that write their own ``_iteration`` with one or more optimisers
    (generator / discriminator / segmenter): the autocast context and the scaled backward + optimiser step that
    follow the trainer's ``amp``, ``amp_kwargs`` and ``scaler``. The iteration calls ``scaler.update()`` once, after
    its last step.

    The constructor takes ``monai.engines.SupervisedTrainer``'s argument names (``train_data_loader``,
    ``key_train_metric``, ``train_handlers``) so that bundle configs read the same for every trainer; subclasses put
    their own arguments first and pass the rest on as ``**trainer_kwargs``.

    Args:
        device, max_epochs, train_data_loader, epoch_length, non_blocking, prepare_batch, iteration_update,
        postprocessing, key_train_metric, additional_metrics, metric_cmp_fn, train_handlers, to_kwargs, amp_kwargs:
            as in ``monai.engines.SupervisedTrainer``.
        amp: automatic mixed precision: the iteration runs its forward passes under :meth:`_autocast` and steps every
            optimiser through :meth:`_backward_step` with the trainer's one gradient scaler (MONAI makes a
            ``torch.cuda.amp.GradScaler``, which disables itself without CUDA).
        decollate: decollate the output (default ``False``: the outputs of these trainers hold scalars next to batch
            tensors whose batch sizes may differ).
        optim_set_to_none: ``zero_grad(set_to_none=...)`` of every optimiser.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.optim_set_to_none = optim_set_to_none

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
