"""Which bundle folders the app serves: the repository's own ``bundles/<name>``, or those of ``--conf bundles_dir``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

logger = logging.getLogger(__name__)

DEFAULT_BUNDLES_DIR = os.path.join("..", "bundles")


def bundles_dir(app_dir: str, conf: Mapping[str, str]) -> str:
    """The folder holding the bundles: ``conf["bundles_dir"]``, else ``<app_dir>/../bundles`` (the repository's)."""
    folder = conf.get("bundles_dir") or os.path.join(app_dir, DEFAULT_BUNDLES_DIR)
    return os.path.realpath(os.path.expanduser(folder))


def bundle_folders(app_dir: str, conf: Mapping[str, str]) -> dict[str, str]:
    """Bundle name -> folder for the names of ``--conf models a,b`` (every bundle of the folder when it is absent or
    ``all``); raises ``ValueError`` naming the bundles there when a requested one is missing."""
    folder = bundles_dir(app_dir, conf)
    available = sorted(
        name
        for name in (os.listdir(folder) if os.path.isdir(folder) else [])
        if os.path.isfile(os.path.join(folder, name, "configs", "metadata.json"))
    )
    requested = [m.strip() for m in (conf.get("models") or "all").split(",") if m.strip()]
    names = available if requested == ["all"] else requested
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise ValueError(
            f"bundles {missing or names} not found in {folder} (bundles there: {', '.join(available) or 'none'}); "
            "give --conf models <name,...> and, for bundles elsewhere, --conf bundles_dir <folder>."
        )
    result = {n: os.path.join(folder, n) for n in names}
    logger.info(f"Serving bundles from {folder}: {list(result)}")
    return result
