"""The random state of a training run, as a checkpointable object, so that a resumed run draws what the uninterrupted
run would have drawn.

A run's randomness lives in the global generators of Python, NumPy and torch (CPU and CUDA: the data loaders'
shuffle order and worker seeds, dropout, noise) and in the private ``numpy.random.RandomState`` of every MONAI
randomizable transform (``RandSpatialCropd``, ``RandFlipd``, ...; MONAI's ``DataLoader`` seeds them once, when it is
built). :class:`RandomStates` saves all of them and restores them: its ``state_dict`` holds tensors, ints and
floats only, so ``torch.load(..., weights_only=True)`` (MONAI's ``CheckpointLoader``) reads it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

__all__ = ["RandomStates", "capture_random_states", "restore_random_states", "transform_random_states"]


_CONTAINERS = (list, tuple, dict, DataLoader, Dataset, Sampler)
_GENERATORS = (np.random.RandomState, np.random.Generator, torch.Generator)


def _walk(obj: Any, found: list, seen: set[int]) -> None:
    """Append the ``RandomState`` / ``torch.Generator`` objects reachable from ``obj`` through data loaders, datasets,
    transforms and containers of those, in a fixed order (attribute order), to ``found``."""
    from monai.transforms import Randomizable, Transform

    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _GENERATORS):
        found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, (*_CONTAINERS, Transform, Randomizable)):
                _walk(item, found, seen)
    elif isinstance(obj, dict):
        for item in obj.values():
            if isinstance(item, (*_CONTAINERS, Transform, Randomizable)):
                _walk(item, found, seen)
    elif isinstance(obj, DataLoader):
        for item in (obj.generator, obj.sampler, obj.batch_sampler, obj.dataset):
            if item is not None:
                _walk(item, found, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        # datasets, samplers and transforms (a dataset's cached items are dicts of arrays: skipped, not walked)
        for item in vars(obj).values():
            if isinstance(item, (*_GENERATORS, *_CONTAINERS, Transform, Randomizable)):
                _walk(item, found, seen)


def _generators(roots: Iterable[Any]) -> list:
    found: list = []
    seen: set[int] = set()
    for root in roots:
        _walk(root, found, seen)
    return found


def _get(generator: np.random.RandomState | np.random.Generator | torch.Generator) -> dict:
    if isinstance(generator, torch.Generator):
        return {"torch": generator.get_state()}
    if isinstance(generator, np.random.Generator):  # a dict of str and int (the bit generator's state)
        return {"bit_generator": generator.bit_generator.state}
    name, keys, pos, has_gauss, cached = generator.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "gauss": [int(has_gauss), float(cached)]}


def _set(generator: np.random.RandomState | np.random.Generator | torch.Generator, state: dict) -> None:
    if isinstance(generator, torch.Generator):
        generator.set_state(state["torch"])
    elif isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state["bit_generator"]
    else:
        keys = state["keys"].numpy().astype(np.uint32)
        generator.set_state(("MT19937", keys, state["pos"], state["gauss"][0], state["gauss"][1]))


def transform_random_states(roots: Iterable[Any]) -> list[dict]:
    """The states of the generators of the data loaders, datasets and transforms reachable from ``roots``."""
    return [_get(g) for g in _generators(roots)]


def capture_random_states(roots: Iterable[Any] = ()) -> dict:
    """The global generators' states (Python, NumPy, torch CPU and CUDA) and those of the data loaders, datasets and
    transforms reachable from ``roots`` (e.g. a trainer's data loaders), as tensors, ints and floats."""
    version, internal, gauss = random.getstate()
    state = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": _get_global_numpy(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "transforms": transform_random_states(roots),
    }
    return state


def restore_random_states(state: dict, roots: Iterable[Any] = ()) -> None:
    """Set the generators to ``state`` (from :func:`capture_random_states` over the same ``roots``). Transform states
    are restored only when the number of generators found matches (a changed config: those are left, with a
    warning)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    _set(np.random.mtrand._rand, state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("the checkpoint's CUDA random states are for another number of GPUs: not restored")
    generators = _generators(roots)
    saved = state["transforms"]
    if len(generators) != len(saved) or any(_get(g).keys() != s.keys() for g, s in zip(generators, saved)):
        logger.warning(
            f"the checkpoint holds {len(saved)} data/transform random states, this run has {len(generators)}: "
            "not restored (the resumed run's augmentation differs from an uninterrupted run's)"
        )
        return
    for generator, s in zip(generators, saved):
        _set(generator, s)


def _get_global_numpy() -> dict:
    return _get(np.random.mtrand._rand)


class RandomStates:
    """Checkpointable random state of a run: ``state_dict`` captures the global generators and those reachable from
    ``roots`` (the trainer's data loaders and datasets, their transforms), ``load_state_dict`` restores them.

    Args:
        roots: objects whose data loaders / datasets / transforms hold generators; a callable returning them is
            called at every capture and restore (a trainer's loaders may be swapped before a run).
    """

    def __init__(self, roots: Iterable[Any] | Any = ()) -> None:
        self.roots = roots

    def _roots(self) -> list:
        return list(self.roots() if callable(self.roots) else self.roots)

    def state_dict(self) -> dict:
        return capture_random_states(self._roots())

    def load_state_dict(self, state: dict) -> None:
        restore_random_states(state, self._roots())
