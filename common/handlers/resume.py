"""Resumable training checkpoints: save every epoch atomically, resume from the newest one on restart."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from .atomic_checkpoint import AtomicCheckpointSaver

logger = logging.getLogger(__name__)


def epoch_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_epoch=<N>.pt`` files (as MONAI ``CheckpointSaver`` names them), oldest epoch first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")
    matches = [(pattern.match(p.name), p) for p in folder.iterdir()]
    return [p for _, p in sorted((int(m.group(1)), p) for m, p in matches if m)]


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

    Args:
        ckpt_dir: folder of the checkpoints.
        save_dict: objects to save and restore (network, optimizer, lr scheduler, ...).
        save_interval: epochs between checkpoints.
        n_saved: checkpoints kept.
        resume: load the newest checkpoint when training starts (``False``: always start from scratch).
        save: write checkpoints (``False`` on non-zero DDP ranks).
    """

    def __init__(
        self,
        ckpt_dir: str,
        save_dict: Mapping[str, object],
        save_interval: int = 1,
        n_saved: int = 1,
        resume: bool = True,
        save: bool = True,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.save_dict = dict(save_dict)
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self.save = save

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, "trainer": engine}
        if self.resume:  # the newest checkpoint when the run starts, not when the config is built
            engine.add_event_handler(Events.STARTED, self._resume, objects)
        if self.save:
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
        when its inputs changed)."""
        path = latest_checkpoint(self.ckpt_dir)
        if path is not None:
            logger.info(f"resuming from {path}")
            CheckpointLoader(load_path=str(path), load_dict=objects, map_location="cpu")(engine)

    def _prune(self, engine: Engine) -> None:
        for old in epoch_checkpoints(self.ckpt_dir)[: -self.n_saved]:
            old.unlink(missing_ok=True)
