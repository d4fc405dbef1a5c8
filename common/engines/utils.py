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

__all__ = ["AmpTrainer", "Endless", "ScalarTerms", "endless"]


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


class Endless(Iterator[Any]):
    """Batches of ``loader`` forever, re-iterating (and so reshuffling) it each time it is exhausted.

    The engines with two data sources (labelled + unlabelled, present + absent) let the first loader drive the
    epoch and draw from the second with this. ``name`` names the loader in the error raised when it is empty.

    Its place in the second loader is part of a resumable run (``common.handlers.ResumableCheckpoint`` saves the
    ``Endless`` attributes of the trainer): ``state_dict`` holds the random states at the start of the current pass
    and the number of batches drawn in it; ``load_state_dict`` replays that pass up to there (it loads those batches
    again, without training on them) and puts the random states back as they were.
    """

    def __init__(self, loader: Iterable, name: str = "second") -> None:
        self.loader = loader
        self.name = name
        self._iterator: Iterator[Any] | None = None
        self._pass_start: dict | None = None
        self._position = 0

    def __iter__(self) -> Endless:
        return self

    def __next__(self) -> Any:
        from common.random_state import capture_random_states

        for _ in range(2):
            if self._iterator is None:
                self._pass_start = capture_random_states([self.loader])
                self._iterator = iter(self.loader)
                self._position = 0
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                if self._position == 0:
                    break
                continue
            self._position += 1
            return batch
        raise ValueError(f"the {self.name} data loader is empty.")

    def state_dict(self) -> dict:
        return {"pass_start": self._pass_start if self._iterator is not None else None, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        from common.random_state import capture_random_states, restore_random_states

        self._iterator, self._pass_start, self._position = None, None, 0
        if state.get("pass_start") is None:
            return
        now = capture_random_states([self.loader])
        restore_random_states(state["pass_start"], [self.loader])
        self._pass_start = state["pass_start"]
        self._iterator = iter(self.loader)
        for _ in range(int(state["position"])):
            next(self._iterator)
        self._position = int(state["position"])
        restore_random_states(now, [self.loader])


def endless(loader: Iterable, name: str = "second") -> Endless:
    """An :class:`Endless` pass over ``loader``."""
    return Endless(loader, name)


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


def step_output(
    images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor, **terms: Any
) -> dict[str, Any]:
    """A training iteration's ``engine.state.output``: the batch ``(B, C, H, W)``, its labels, the detached logits
    ``(B, K, H, W)`` and total loss, and each named term (tensors detached, numbers as they are)."""
    from monai.utils import CommonKeys as Keys

    return {
        Keys.IMAGE: images,
        Keys.LABEL: labels,
        Keys.PRED: logits.detach(),
        Keys.LOSS: loss.detach(),
        **{k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in terms.items()},
    }
