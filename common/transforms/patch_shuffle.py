"""Patch-shuffle augmentation of MIPR (Dai, Zhu et al., arXiv 2204.10513, Sec. 2.4 and Fig. 3).

An image and its label are split into a ``K x K`` grid of tiles and the tiles are rearranged. With ``K = 2`` the six
pairwise swaps of the four tiles give "six images of different local spatial structures". For training the
label-to-image generator the paper uses different arrangements for the encoder input and the label, so the transform
can draw a separate arrangement for some keys and records every arrangement it applies, from which a caller rebuilds
the target image in the label's arrangement.

An arrangement (``order``) is a permutation of the ``K * K`` tile indices in row-major order: tile ``i`` of the output
is tile ``order[i]`` of the input.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends

__all__ = [
    "PATCH_ORDER_POSTFIX",
    "PatchShuffle",
    "RandPatchShuffled",
    "inverse_patch_order",
    "pairwise_swaps",
    "random_patch_order",
]

PATCH_ORDER_POSTFIX = "patch_order"


def pairwise_swaps(grid: int) -> list[tuple[int, ...]]:
    """The arrangements that exchange exactly two of the ``grid * grid`` tiles (six for ``grid = 2``)."""
    swaps = []
    for i, j in itertools.combinations(range(grid * grid), 2):
        order = list(range(grid * grid))
        order[i], order[j] = j, i
        swaps.append(tuple(order))
    return swaps


def _check_grid(grid: int, allow_identity: bool) -> None:
    if grid < 1 or (grid == 1 and not allow_identity):
        raise ValueError(f"patch shuffle needs grid >= 2 (or grid = 1 with allow_identity), got grid={grid}.")


def random_patch_order(grid: int, rng: np.random.RandomState, allow_identity: bool = False) -> tuple[int, ...]:
    """Draws an arrangement of the ``grid * grid`` tiles.

    ``grid = 2``: one of the six pairwise swaps of the paper, uniformly (or of the seven arrangements including the
    identity when ``allow_identity``). Larger grids: a uniformly random permutation, redrawn while it is the identity
    unless ``allow_identity``.

    Raises:
        ValueError: ``grid < 1``, or ``grid = 1`` without ``allow_identity`` (a single tile has no other arrangement).
    """
    _check_grid(grid, allow_identity)
    identity = tuple(range(grid * grid))
    if grid <= 2:
        candidates = ([identity] if allow_identity else []) + pairwise_swaps(grid)
        return candidates[rng.randint(len(candidates))]
    while True:
        order = tuple(int(i) for i in rng.permutation(grid * grid))
        if allow_identity or order != identity:
            return order


def inverse_patch_order(order: Sequence[int]) -> tuple[int, ...]:
    """The arrangement that undoes ``order``: ``PatchShuffle()(PatchShuffle()(x, order), inverse_patch_order(order))``
    is ``x``."""
    return tuple(int(i) for i in np.argsort(np.asarray(order, dtype=np.int64)))


class PatchShuffle(Transform):
    """Rearranges the ``grid x grid`` tiles of the last two (spatial) axes by an explicit arrangement.

    Works on ``(C, H, W)`` images and on ``(B, C, H, W)`` batches (any leading axes), numpy arrays or torch tensors
    (``MetaTensor`` included); the output has the input's type. The tiling is a bijection of the pixels.

    Args:
        grid: K, tiles per side; ``H`` and ``W`` must be divisible by it.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, grid: int = 2) -> None:
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}.")
        self.grid = grid

    def __call__(self, img: NdarrayOrTensor, permutation: Sequence[int]) -> NdarrayOrTensor:
        """
        Args:
            img: ``(..., H, W)`` array.
            permutation: ``grid * grid`` tile indices (row-major); output tile ``i`` is input tile
                ``permutation[i]``. A tensor or array of indices is accepted.

        Raises:
            ValueError: ``H`` or ``W`` not divisible by ``grid``, or ``permutation`` not a permutation of the tiles.
        """
        g = self.grid
        order = [int(i) for i in permutation]
        if sorted(order) != list(range(g * g)):
            raise ValueError(f"permutation must reorder the {g * g} tiles 0..{g * g - 1}, got {order}.")
        *lead, height, width = img.shape
        if height % g or width % g:
            raise ValueError(
                f"patch shuffle with grid={g} needs height and width divisible by {g}, got {height}x{width}."
            )
        h, w = height // g, width // g
        tiles = img.reshape(*lead, g, h, g, w).swapaxes(-3, -2).reshape(*lead, g * g, h, w)
        return tiles[..., order, :, :].reshape(*lead, g, g, h, w).swapaxes(-3, -2).reshape(*lead, height, width)


class RandPatchShuffled(RandomizableTransform, MapTransform):
    """Dictionary patch shuffle: one random arrangement for all ``keys``, its own for each of ``separate_keys``.

    With probability ``prob`` the ``(C, H, W)`` arrays of ``keys`` are rearranged by :class:`PatchShuffle`; the keys
    not in ``separate_keys`` share one arrangement (so an image and its label stay consistent), each key in
    ``separate_keys`` gets an independently drawn one (the paper's different arrangements of the encoder input and the
    label). Arrangements are drawn by :func:`random_patch_order`. The arrangement applied to each key (the identity
    when the transform was skipped) is stored in the data under ``f"{key}_{PATCH_ORDER_POSTFIX}"`` as an int64 array
    of ``grid * grid`` tile indices (it collates to ``(B, grid * grid)``) and in ``self.last_permutations``; the
    target image in the label's arrangement is ``PatchShuffle(grid)(image, d[f"label_{PATCH_ORDER_POSTFIX}"])``.

    Args:
        keys: keys of the arrays to rearrange.
        grid: K, tiles per side (2 in the paper).
        prob: probability of rearranging.
        separate_keys: keys (among ``keys``) that get their own arrangement.
        allow_identity: let a drawn arrangement be the identity (``False``: the six swaps for ``grid = 2``).
        allow_missing_keys: don't raise for missing keys.
    """

    backend = PatchShuffle.backend

    def __init__(
        self,
        keys: KeysCollection,
        grid: int = 2,
        prob: float = 1.0,
        separate_keys: Sequence[str] = (),
        allow_identity: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        unknown = set(separate_keys) - set(self.keys)
        if unknown:
            raise ValueError(f"separate_keys must be among keys {list(self.keys)}, got {sorted(unknown)}.")
        _check_grid(grid, allow_identity)
        self.shuffle = PatchShuffle(grid)
        self.separate_keys = tuple(separate_keys)
        self.allow_identity = allow_identity
        self.last_permutations: dict[Hashable, tuple[int, ...]] = {}

    def randomize(self, data: None = None) -> None:
        """Decides whether to rearrange and draws the shared and the separate arrangements into
        ``self.last_permutations``."""
        super().randomize(None)
        grid = self.shuffle.grid
        identity = tuple(range(grid * grid))
        if not self._do_transform:
            self.last_permutations = {key: identity for key in self.keys}
            return
        shared = random_patch_order(grid, self.R, self.allow_identity)
        self.last_permutations = {
            key: random_patch_order(grid, self.R, self.allow_identity) if key in self.separate_keys else shared
            for key in self.keys
        }

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            order = self.last_permutations[key]
            d[key] = self.shuffle(d[key], order)
            d[f"{key}_{PATCH_ORDER_POSTFIX}"] = np.asarray(order, dtype=np.int64)
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Puts every key back into the original arrangement, from the orders recorded in the data."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.shuffle(d[key], inverse_patch_order(d[f"{key}_{PATCH_ORDER_POSTFIX}"]))
        return d
