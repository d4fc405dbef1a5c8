"""MONAI ``CheckpointSaver`` whose files are written atomically.

MONAI's ``CheckpointSaver`` writes through Ignite's ``DiskSaver`` with ``atomic=False`` (for file permissions), so
a run killed while it writes ``model.pt`` or ``checkpoint_epoch=N.pt`` leaves a corrupt file that the evaluate and
inference workflows (or a resumed run) then fail to load. This saver keeps MONAI's arguments and file names and
writes every file through :func:`common.atomic_write.atomic_path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from common.atomic_write import atomic_path, remove_partial_files

_MONAI_CHECKPOINTS = ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint")
_ATTACHED: WeakKeyDictionary[Engine, list[AtomicCheckpointSaver]] = WeakKeyDictionary()


def key_metric_savers(engine: Engine | None) -> list[AtomicCheckpointSaver]:
    """The :class:`AtomicCheckpointSaver` handlers attached to ``engine`` (an evaluator) that keep the network of the
    best key metric, in the order they were attached (none for ``None``)."""
    if engine is None:
        return []
    return [s for s in _ATTACHED.get(engine, []) if s._key_metric_checkpoint is not None]


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes through a temporary file and a rename, optionally to a fixed file name.

    Args:
        dirname: folder of the files.
        filename: fixed file name (MONAI's ``final_filename``/``key_metric_filename``); ``None``: Ignite's name.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        with atomic_path(self.dirname / (self.filename or filename)) as tmp:
            torch.save(checkpoint, tmp)

    def remove(self, filename: str) -> None:
        """Ignite removes the old file before it saves the new one; under a fixed name the save replaces it
        atomically, so removing first would only open a window without any ``model.pt``."""
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments, same files) with atomic writes.

    When attached it also removes the temporary files a killed run left in ``save_dir``. Unlike MONAI's, a run
    that raises (a non-finite loss, an error in a handler) does not delete the previous final file and write the
    half-trained network in its place: ``model.pt`` is written only by a run that completed, and the epoch
    checkpoints (``ResumableCheckpoint``) are what a crashed run resumes from.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: object) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        for name in _MONAI_CHECKPOINTS:
            checkpoint = getattr(self, name)  # MONAI sets all three, None where that kind of file is off
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, checkpoint.save_handler.filename)

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            remove_partial_files(self.save_dir)
        super().attach(engine)
        _ATTACHED.setdefault(engine, []).append(self)

    def state_dict(self) -> dict[str, Any]:
        """The best key-metric score so far and its file (Ignite's ``Checkpoint.state_dict``: the kept ``(score,
        filename)`` pairs; empty without a key-metric file), so that a resumed training
        (:class:`common.handlers.ResumableCheckpoint` with ``validator``) replaces ``key_metric_filename`` only with a
        better network than the best one before the resume."""
        checkpoint = self._key_metric_checkpoint
        return dict(checkpoint.state_dict()) if checkpoint is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self._key_metric_checkpoint is not None and state:
            self._key_metric_checkpoint.load_state_dict(state)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Re-raise ``e`` and leave the final file as it was (see the class docs)."""
        raise e
