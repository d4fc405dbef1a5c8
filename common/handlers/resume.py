"""Resumable training checkpoints: save every epoch atomically, resume from the newest one on restart."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch.utils.data import DataLoader

from common.engines.utils import Endless
from common.random_state import RandomStates, capture_random_states, restore_random_states

from .atomic_checkpoint import AtomicCheckpointSaver, key_metric_savers

logger = logging.getLogger(__name__)

_RANDOM = "random_states"
_ITERATOR = "iterator_"
_BEST = "optional_best_"  # the validator's key-metric savers' best scores (optional: absent from older checkpoints)
_EPOCH_FILE = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")  # as MONAI's CheckpointSaver names epoch checkpoints
OPTIONAL = "optional_"  # save_dict entries named optional_<name> may be absent from older checkpoints


def _iterators(engine: Engine) -> dict[str, Endless]:
    """The trainer's :class:`Endless` passes over its second data loader, by attribute name."""
    return {f"{_ITERATOR}{k.lstrip('_')}": v for k, v in vars(engine).items() if isinstance(v, Endless)}


def _trainer_random_states(engine: Engine) -> RandomStates:
    """The random states of the run, of the data loaders (their samplers, datasets, transforms) the trainer holds as
    attributes (``data_loader``, ``unlabeled_data_loader``, ...) and of the trainer's own generators (``rng``)."""
    kinds = (DataLoader, np.random.RandomState, np.random.Generator, torch.Generator)

    def roots() -> list:
        found = [v for _, v in sorted(vars(engine).items()) if isinstance(v, kinds)]
        running = getattr(engine.state, "dataloader", None)  # a plain Ignite engine holds its loader here only
        return found + [running] if isinstance(running, DataLoader) and all(running is not f for f in found) else found

    return RandomStates(roots)


class _MainIterator:
    """The trainer's place in its own data loader, for runs whose epochs end before the loader does (``epoch_length``
    shorter than the loader: Ignite then goes on with the same iterator in the next epoch, while a resumed run would
    start a new pass). ``state_dict`` holds the random states when the current pass started and the batches drawn
    from it; ``load_state_dict`` replays that pass up to there (loading, not training on, those batches) and hands the
    iterator to the trainer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pass_start: dict | None = None
        self.position = 0

    def attach(self, engine: Engine) -> None:
        # at STARTED, so after the other EPOCH_STARTED handlers: right before Ignite makes the epoch's iterator
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, self._new_pass)  # Ignite makes the next one
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._drawn)

    def _roots(self) -> list:
        return _trainer_random_states(self.engine)._roots()

    def _epoch_started(self, engine: Engine) -> None:
        if getattr(engine, "_dataloader_iter", None) is None:
            self._new_pass(engine)

    def _new_pass(self, engine: Engine) -> None:
        self.pass_start, self.position = capture_random_states(self._roots()), 0

    def _drawn(self, engine: Engine) -> None:
        self.position += 1

    def state_dict(self) -> dict:
        return {"pass_start": self.pass_start, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.pass_start, self.position = state["pass_start"], int(state["position"])
        loader = self.engine.state.dataloader
        try:
            finished = self.position >= len(loader)
        except TypeError:  # no length: replay and see
            finished = False
        if self.pass_start is None or self.position == 0 or finished:
            return  # the uninterrupted run makes a new iterator at the next draw too, from the same random state
        now = capture_random_states(self._roots())
        restore_random_states(self.pass_start, self._roots())
        iterator = iter(loader)
        try:
            for _ in range(self.position):
                next(iterator)
        except StopIteration:
            iterator = None
        restore_random_states(now, self._roots())
        self.engine._dataloader_iter = iterator


def epoch_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_epoch=<N>.pt`` files (as MONAI ``CheckpointSaver`` names them), oldest epoch first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    matches = [(_EPOCH_FILE.match(p.name), p) for p in folder.iterdir()]
    return [p for _, p in sorted((int(m.group(1)), p) for m, p in matches if m)]


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The epoch ``N`` of a ``checkpoint_epoch=<N>.pt`` file."""
    return int(_EPOCH_FILE.match(Path(path).name).group(1))


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The epoch checkpoint with the largest epoch, or ``None``."""
    found = epoch_checkpoints(ckpt_dir)
    return found[-1] if found else None


class ResumableCheckpoint:
    """Save ``checkpoint_epoch=N.pt`` every ``save_interval`` epochs and resume from the newest one on restart.

    The trainer it is attached to is added to ``save_dict`` as ``"trainer"`` (a config cannot reference the
    trainer from inside its own handler list), so a killed run restarted with the same command continues from
    epoch N with the network, optimiser, scheduler and trainer state restored. Files are written by
    :class:`AtomicCheckpointSaver` (temporary file, then rename; never a half file).

    The resumed run is bit-identical to an uninterrupted one (``tests/test_resume_exact.py``): the checkpoint also holds
    ``random_states`` (:class:`common.random_state.RandomStates`: Python, NumPy, torch CPU/CUDA generators, the
    trainer's own generators and those of its data loaders' samplers and MONAI transforms) and, for each
    :class:`common.engines.utils.Endless` attribute of the trainer (its second data loader), ``iterator_<name>``, its
    place in the current pass. The file is written after every handler attached with the trainer has run at the
    epoch's end (validation draws from torch's generator, an epoch-level LR scheduler steps), and after loading, the
    parameters an optimiser has stepped get the zero ``.grad`` they have in the uninterrupted run. Older checkpoints
    without these entries load, with a warning; so do checkpoints without a ``save_dict`` entry whose name starts
    with ``optional_`` (state added in a later version, e.g. the ACWE loss's running volume statistics). Under DDP
    every rank restores rank 0's random states. A resumed run whose ``max_epochs`` differs from the checkpoint's keeps
    its own schedule length (a scheduler's ``total_iters`` / ``T_max``, and the learning rate of that schedule).

    Args:
        ckpt_dir: folder of the checkpoints.
        save_dict: objects to save and restore (network, optimizer, lr scheduler, ...).
        save_interval: epochs between checkpoints.
        n_saved: checkpoints kept.
        resume: load the newest checkpoint when training starts (``False``: always start from scratch).
        save: write checkpoints (``False`` on non-zero DDP ranks).
        validator: the evaluator whose key-metric saver (:class:`AtomicCheckpointSaver`, ``save_key_metric``) keeps
            the best validated network in ``model.pt``: its best score so far is saved as ``optional_best_<i>`` and
            restored, so that after a resume a validation replaces ``model.pt`` only with a better network (without
            it the first validation after a resume would overwrite the best network of the epochs before).
    """

    def __init__(
        self,
        ckpt_dir: str,
        save_dict: Mapping[str, object],
        save_interval: int = 1,
        n_saved: int = 1,
        resume: bool = True,
        save: bool = True,
        validator: Engine | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.validator = validator
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self.save = save
        self._saving = False
        self._objects: dict[str, object] | None = None

    def attach(self, engine: Engine) -> None:
        # all at STARTED: the trainer's second-loader iterators exist only once its constructor has finished; the
        # newest checkpoint when the run starts, not when the config is built; and the saver after every handler
        # attached with the trainer (validation draws from torch's generator when it makes its loader's iterator),
        # so that the saved random state is the one the next epoch starts from
        engine.add_event_handler(Events.STARTED, self._start)

    def _start(self, engine: Engine) -> None:
        if self._objects is None:
            main = _MainIterator(engine)
            main.attach(engine)
            self._objects = {
                **self.save_dict,
                "trainer": engine,
                f"{_ITERATOR}main": main,
                **_iterators(engine),
                **{f"{_BEST}{i}": saver for i, saver in enumerate(key_metric_savers(self.validator))},
                _RANDOM: _trainer_random_states(engine),
            }
        objects = self._objects
        if self.resume:
            self._resume(engine, objects)
        elif self.save:
            self._remove_older_run()
        if self.save and not self._saving:
            self._saving = True
            AtomicCheckpointSaver(
                save_dir=self.ckpt_dir,
                save_dict=objects,
                save_interval=self.save_interval,
                n_saved=self.n_saved,
                file_prefix="",
            ).attach(engine)
            # Ignite only prunes files it wrote itself; after a resume the older run's files are pruned here
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune)

    def _resume(self, engine: Engine, objects: Mapping[str, object]) -> None:
        """Load the newest checkpoint of ``ckpt_dir`` into ``objects``, if there is one when the run starts (a
        workflow may remove stale checkpoints between building its trainer and running it, as the MIPR loop does
        when its inputs changed). Checkpoints written before the random states and data-iterator places were saved
        load too (the resumed run then draws other random numbers than an uninterrupted run)."""
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return
        logger.info(f"resuming from {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in objects if k not in checkpoint and (k == _RANDOM or k.startswith((_ITERATOR, OPTIONAL)))]
        if any(k.startswith(_BEST) for k in missing):
            logger.warning(f"{path} holds no best validation score: the next validation replaces model.pt")
        if any(not k.startswith(_BEST) for k in missing):
            logger.warning(
                f"{path} holds no {', '.join(k for k in missing if not k.startswith(_BEST))}: the resumed run draws "
                "other random numbers than an uninterrupted run would"
            )
        # the iterators replay their pass first; the random states, set last, are then the checkpoint's
        to_load = {k: v for k, v in objects.items() if k not in missing and k != _RANDOM}
        if _RANDOM not in missing:
            to_load[_RANDOM] = objects[_RANDOM]
        prior_max_epochs = engine.state.max_epochs  # as MONAI's CheckpointLoader: this run's max_epochs is kept
        horizons = _horizons(objects)  # this run's schedule lengths, before the checkpoint's overwrite them
        Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint, strict=True)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"the checkpoint {path} is at epoch {engine.state.epoch}, past this run's max_epochs {prior_max_epochs}"
            )
        engine.state.max_epochs = prior_max_epochs
        _keep_horizons(objects, horizons)
        _restore_zero_grads(objects.values())

    def _remove_older_run(self) -> None:
        """A new run (``resume`` false) removes the epoch checkpoints of an older run: a later resume would otherwise
        continue that run, and pruning by epoch would delete this run's own newer files in favour of them."""
        stale = epoch_checkpoints(self.ckpt_dir)
        if stale:
            logger.info(f"a new run (resume false): removing the older run's {', '.join(p.name for p in stale)}")
            for old in stale:
                old.unlink(missing_ok=True)

    def _prune(self, engine: Engine) -> None:
        """Keep the ``n_saved`` newest epoch checkpoints up to this epoch (after a resume Ignite does not know the
        older run's files)."""
        done = [p for p in epoch_checkpoints(self.ckpt_dir) if checkpoint_epoch(p) <= engine.state.epoch]
        for old in done[: -self.n_saved]:
            old.unlink(missing_ok=True)


_HORIZON_ATTRIBUTES = ("total_iters", "T_max")  # PolynomialLR, LinearLR, ConstantLR; CosineAnnealingLR


def _horizons(objects: Mapping[str, object]) -> dict[str, tuple[str, int]]:
    """The schedule length (attribute name, value) of each learning-rate scheduler of ``objects`` that has one."""
    out = {}
    for key, obj in objects.items():
        if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
            for name in _HORIZON_ATTRIBUTES:
                if hasattr(obj, name):
                    out[key] = (name, getattr(obj, name))
                    break
    return out


def _keep_horizons(objects: Mapping[str, object], horizons: Mapping[str, tuple[str, int]]) -> None:
    """A run resumed with a longer (or shorter) ``max_epochs`` than the checkpoint's keeps this run's schedule length:
    the scheduler's state dict holds the older run's ``total_iters`` / ``T_max``, which would leave the learning rate
    at 0 (poly, linear) or send it back up (cosine) past the older end. The length is set back to this run's, and the
    learning rate to the schedule's closed form at the current step, as if the run had been planned this long."""
    for key, (name, value) in horizons.items():
        scheduler = objects[key]
        loaded = getattr(scheduler, name)
        if loaded == value:
            continue
        setattr(scheduler, name, value)
        closed_form = getattr(scheduler, "_get_closed_form_lr", None)
        if closed_form is not None:
            rates = closed_form()
            for group, lr in zip(scheduler.optimizer.param_groups, rates):
                group["lr"] = lr
            scheduler._last_lr = list(rates)
        logger.info(
            f"{key}: schedule length {name} {value} (this run's max_epochs), not the checkpoint's {loaded}; learning "
            f"rate now {scheduler.optimizer.param_groups[0]['lr']:.3g}"
        )


def _restore_zero_grads(objects: Iterable[object]) -> None:
    """Give every parameter an optimiser has stepped a zero ``.grad``, as it has in the uninterrupted run.

    MONAI's trainers zero gradients with ``set_to_none=False``, so a parameter keeps a zero-filled ``.grad`` once it has
    had one, and Adam (weight decay, momentum) then steps it on every later iteration, also on one whose loss does not
    reach it (e.g. a segmentation head on a batch without labels); a parameter whose ``.grad`` is ``None`` is skipped.
    A resumed run starts with ``None`` everywhere: without this its first iterations would skip those parameters.
    """
    for optimizer in objects:
        if isinstance(optimizer, torch.optim.Optimizer):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is None and optimizer.state.get(param):
                        param.grad = torch.zeros_like(param)
