"""A readable console: messages that third-party code logs on every call are let through once per process.

MONAI's ``NvImgCodecPydicomReader`` is built by every ``LoadImage`` when pydicom is installed, and each build logs
"nvImageCodec is not available; skipping pydicom decoder plugin registration" on a machine without CUDA and
nvImageCodec: hundreds of times in one demo run. :func:`log_once` keeps the first of each distinct message.
"""

from __future__ import annotations

import logging

__all__ = ["REPEATING_LOGGERS", "OnceFilter", "log_once"]

REPEATING_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin",)


class OnceFilter(logging.Filter):
    """Pass each distinct (level, message) of the logger it is attached to once; drop the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def log_once(names: tuple[str, ...] = REPEATING_LOGGERS) -> None:
    """Attach one :class:`OnceFilter` to each named logger (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OnceFilter) for f in logger.filters):
            logger.addFilter(OnceFilter())
