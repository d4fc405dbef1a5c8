"""MONAI ``CheckpointSaver`` whose files are written atomically.

MONAI's ``CheckpointSaver`` writes through Ignite's ``DiskSaver`` with ``atomic=False`` (for file permissions), so
a run killed while it writes ``model.pt`` or ``checkpoint_epoch=N.pt`` leaves a corrupt file that the evaluate and
inference workflows (or a resumed run) then fail to load. This saver keeps MONAI's arguments and file names and
writes every file through :func:`common.atomic_write.atomic_path`.
"""

from __future__ import annotations

from collections.abc import Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from common.atomic_write import atomic_path, remove_partial_files

_MONAI_CHECKPOINTS = ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint")


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

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Re-raise ``e`` and leave the final file as it was (see the class docs)."""
        raise e
