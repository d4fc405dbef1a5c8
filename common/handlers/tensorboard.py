"""TensorBoard logging that is skipped, with one warning, when the optional ``tensorboard`` extra is missing."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from ignite.engine import Engine
from monai.handlers import TensorBoardStatsHandler

logger = logging.getLogger(__name__)


class OptionalTensorBoardStatsHandler:
    """MONAI ``TensorBoardStatsHandler`` when ``tensorboard`` is installed (``pip install .[tensorboard]``), else a
    no-op, so that bundles run on a minimal install. Arguments are those of ``TensorBoardStatsHandler``."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def attach(self, engine: Engine) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            logger.warning("tensorboard is not installed: TensorBoard logging is off (pip install '.[tensorboard]').")
            return
        TensorBoardStatsHandler(**self.kwargs).attach(engine)
