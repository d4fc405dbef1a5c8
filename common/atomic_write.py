"""Atomic file writes: write to a hidden temporary file next to the target, then rename it over the target.

The one home of every writer the project needs (text, JSON, ``.npy``, torch objects, binary streams, PNG); readers
(and a restarted run) see either the old file or the whole new one, never half a file. A process killed
mid-write leaves only the hidden ``.<stem>.partial-<pid><suffix>`` file, which :func:`remove_partial_files` deletes.
Whole folders (prepared data sets) are built under a temporary name and moved into place by :func:`publish_folder`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

PARTIAL_MARKER = ".partial-"


def partial_path(path: Path) -> Path:
    """The temporary name for ``path``: hidden, marked, and ending with the same suffix (``np.save`` and
    ``savefig`` choose the format from it)."""
    return path.with_name(f".{path.stem}{PARTIAL_MARKER}{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed over ``path``, on any error it is removed.

    Example::

        with atomic_path("model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(obj, indent=2))


def write_binary_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file_object)`` on a temporary binary file, then rename it over ``path``; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save(path, array)`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return Path(path)


def save_torch_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj, path)`` atomically (a state dict, a checkpoint); returns ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_png_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a channel-first ``(C, H, W)`` uint8 array (C = 1 or 3) as a PNG that MONAI reads back as ``array``.

    MONAI's ``PILReader`` (``LoadImage`` for PNG/JPEG) returns the spatial axes as ``(W, H)`` of the file, and every
    tensor of this project comes from it, so the array is transposed on writing: the file shows the orientation of
    the source image in any viewer, and ``LoadImage`` gives back ``array``. Returns ``path``.
    """
    from PIL import Image

    pixels = np.ascontiguousarray(np.moveaxis(np.asarray(array), 0, -1).swapaxes(0, 1))
    with atomic_path(path) as tmp:
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(tmp, format="PNG")
    return Path(path)


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (not recursive); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and PARTIAL_MARKER in p.name and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike, marker: str) -> Path:
    """Moves the finished folder ``tmp`` to ``final`` (one rename). When another process (a DDP rank preparing the
    same seeded data) published ``final`` first, which its ``marker`` file (the index or datalist written last)
    shows, ``tmp`` is removed and the other's folder kept; any other failure is raised. Returns ``final``."""
    tmp, final = Path(tmp), Path(final)
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / marker).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final
