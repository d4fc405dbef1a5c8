"""Where a bundle of this collection lives, so configs work from the repository root and from the bundle folder."""

from __future__ import annotations

from pathlib import Path


def bundle_path(name: str) -> str:
    """Absolute folder of bundle ``name``.

    Tried in order: the current folder when it is that bundle (named ``name`` with a ``configs`` folder, as
    when a user runs from inside the bundle), ``./bundles/<name>`` (the repository root), and the ``bundles/`` folder
    next to this package (an editable install). MONAI Label sets ``bundle_root`` itself and skips this.
    """
    cwd = Path.cwd()
    if cwd.name == name and (cwd / "configs").is_dir():
        return str(cwd)
    for root in (cwd, Path(__file__).resolve().parent.parent):
        candidate = root / "bundles" / name
        if (candidate / "configs").is_dir():
            return str(candidate)
    raise FileNotFoundError(
        f"bundle '{name}' not found from {cwd}; run from the repository root or the bundle folder, "
        "or set bundle_root (e.g. --bundle_root /path/to/bundles/<name>)."
    )
