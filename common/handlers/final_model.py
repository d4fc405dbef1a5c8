"""The model a finished training leaves for inference: ``models/model.pt`` after every completed training (issue 29).

The bundles keep the network of the best validation in ``model.pt`` (an :class:`AtomicCheckpointSaver` with
``save_key_metric`` among the validator's handlers, ``select_by_key_metric`` true). That saver writes only when a
validation runs, so a training shorter than ``val_interval`` (``--max_epochs 3`` with ``val_interval`` 5, or MONAI
Label with nothing held out) used to finish without any ``model.pt`` and the inference after it stopped on the missing
file. :class:`FinalModelSaver` replaces the trainer's final-network saver and decides at completion:

- no validation selects the model (``select_by_key_metric`` false, or no ``validator``): the last network;
- a validation ran in this run: the best validated network stays (the key-metric saver wrote it);
- no validation ran in this run: the last network, replacing any older ``model.pt`` (a stale file of an earlier
  training must not be served as the model just trained), except for a resumed run whose earlier part validated
  (resumed at an epoch >= ``val_interval``): its ``model.pt`` is the best of those validations and is kept.

One log line says which network ``model.pt`` holds and why. Files are written atomically and on DDP rank 0 only
(:class:`AtomicDiskSaver`); a run that raises writes nothing (:class:`AtomicCheckpointSaver`). Not changed here: the
key-metric saver of a resumed run starts without the earlier best score (it is not in the epoch checkpoint), so the
first validation after a resume replaces ``model.pt`` whatever its score. ``af_seg`` (its validation only monitors)
passes no ``validator`` and always keeps the last network; MIPR's loop writes ``model.pt`` itself, from the last
round (``common.engines.mipr_loop``).
"""

from __future__ import annotations

import logging
import math
import os

import ignite.distributed as idist
from ignite.engine import Engine, Events

from .atomic_checkpoint import AtomicCheckpointSaver

logger = logging.getLogger(__name__)

__all__ = ["FinalModelSaver"]


class FinalModelSaver(AtomicCheckpointSaver):
    """Write ``final_filename`` when the training completes unless a validation chose it (see the module docs).

    Attach it to the trainer (``train#handlers``) in place of the ``save_final`` saver, with the same ``save_dict``
    as the key-metric saver of ``validator``: its keys are those of the inference config's ``CheckpointLoader``
    (``{"model": network}`` writes the bare state dict, several entries a dict of state dicts).

    Args:
        save_dir: folder of ``final_filename`` (the bundle's ``ckpt_dir``).
        save_dict: the objects to save, e.g. ``{"model": network}``.
        validator: the evaluator that ``ValidationHandler`` runs and whose key-metric saver writes ``final_filename``;
            ``None`` when no validation selects the model (the last network is always kept).
        select_by_key_metric: whether the validator's saver keeps the best validated network in ``final_filename``
            (the bundles' ``select_by_key_metric``); false: the last network is always written.
        val_interval: epochs between validations; named in the log, and on a resumed run it tells whether the
            epochs before the resume validated (``None``: unknown, so a resumed run without validation writes the
            last network).
        final_filename: the file inference loads.
        kwargs: further ``monai.handlers.CheckpointSaver`` arguments (``name``, ``file_prefix``).
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        validator: Engine | None = None,
        select_by_key_metric: bool = True,
        val_interval: int | None = None,
        final_filename: str = "model.pt",
        **kwargs: object,
    ) -> None:
        super().__init__(
            save_dir=save_dir, save_dict=save_dict, save_final=True, final_filename=final_filename, **kwargs
        )
        self.validator = validator
        self.select_by_key_metric = bool(select_by_key_metric) and validator is not None
        self.val_interval = None if val_interval is None else int(val_interval)
        self.path = os.path.join(save_dir, final_filename)
        self.validations = 0
        self._first_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer: count this run's validations and decide at ``COMPLETED``."""
        super().attach(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _started(self, engine: Engine) -> None:
        self.validations, self._first_epoch = 0, None

    def _epoch_started(self, engine: Engine) -> None:
        if self._first_epoch is None:  # after a resume (loaded at STARTED) this is the resumed epoch + 1
            self._first_epoch = engine.state.epoch

    def _validated(self, validator: Engine) -> None:
        self.validations += 1

    def completed(self, engine: Engine) -> None:
        """Write the last network to ``final_filename`` or keep the best validated one; log which, in one line."""
        write, message = self.decide(engine)
        if write:
            self._final_checkpoint.reset()  # a trainer run again (MIPR's rounds) saves again
            self._final_checkpoint(engine)
        if idist.get_rank() == 0:
            logger.info(message)

    def decide(self, engine: Engine) -> tuple[bool, str]:
        """Whether to write the last network now, and the log line saying what ``final_filename`` holds."""
        epoch, max_epochs = engine.state.epoch, engine.state.max_epochs
        last = f"{self.path} is the last network (epoch {epoch})"
        if not self.select_by_key_metric:
            why = "select_by_key_metric is false" if self.validator is not None else "no validation selects the model"
            return True, f"{why}: {last}"
        exists = os.path.isfile(self.path)
        if self.validations:
            if not exists:  # the validator had no key-metric saver (or not on this rank): never end without a model
                return True, f"{self.validations} validation(s) ran but none saved {self.path}: {last}"
            return False, f"{self.path} is the best validated network of this run: {self._best()}"
        resumed_at = (self._first_epoch or epoch + 1) - 1
        if resumed_at > 0 and self.val_interval is not None and resumed_at >= self.val_interval and exists:
            return False, (
                f"no validation ran in this run (resumed at epoch {resumed_at} of {max_epochs}, val_interval "
                f"{self.val_interval}): {self.path} is kept, the best validated network of the epochs before the resume"
            )
        interval = self.val_interval
        why = f" (val_interval {interval} > max_epochs {max_epochs})" if interval and interval > max_epochs else ""
        return True, f"no validation ran in this training{why}: {last}"

    def _best(self) -> str:
        """The validator's best key metric and its epoch, as MONAI's evaluator tracks them."""
        state = self.validator.state
        name = getattr(state, "key_metric_name", None) or "key metric"
        best, best_epoch = getattr(state, "best_metric", None), getattr(state, "best_metric_epoch", None)
        if best is None or best_epoch is None or best_epoch < 1:  # not a MONAI evaluator
            return f"{self.validations} validation(s) in this run"
        if not math.isfinite(float(best)):
            return f"{self.validations} validation(s), no finite {name}: the first validation's network"
        return f"{name} {float(best):.4f} at epoch {best_epoch} ({self.validations} validation(s) in this run)"
