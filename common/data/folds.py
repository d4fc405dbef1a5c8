"""Five-fold cross-validation datalists of Tan et al. (2022, Sec. 4.1), split by volume.

The volumes (groups) of an MSD-style datalist are shuffled with a seed and cut into ``num_folds`` folds. Fold ``k``
is the test set of round ``k``; in the semi-supervised protocol the next ``labelled_folds`` folds (cyclically) keep
their labels and the following ``unlabelled_folds`` folds lose them (they become the datalist's ``"unlabeled"``
list); in the fully supervised protocol every non-test fold is labelled. Each round is written as a datalist JSON
that a bundle reads through its ``datalist_file`` key (``prepare_datalists`` then takes the validation volumes
from the labelled training volumes and applies ``labelled_fraction`` to the rest).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .datalist import group_of, load_datalist, write_json_atomic

__all__ = ["cross_validation_datalists"]


def cross_validation_datalists(
    datalist_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_folds: int = 5,
    labelled_folds: int = 2,
    unlabelled_folds: int = 2,
) -> list[dict[str, Path]]:
    """Write ``fold<k>_semi.json`` and ``fold<k>_full.json`` for every round ``k``; return their paths per round.

    Args:
        datalist_path: MSD-style ``dataset.json`` whose ``"training"`` items are all labelled.
        out_dir: folder of the written datalists (absolute paths inside, so they can live anywhere).
        seed: seed of the volume shuffle.
        num_folds: folds (5 in Tan et al.).
        labelled_folds, unlabelled_folds: folds with and without labels in the semi-supervised protocol (2 and 2 in
            Tan et al.); ``1 + labelled_folds + unlabelled_folds`` must not exceed ``num_folds``.

    Returns:
        one ``{"semi": path, "full": path}`` per round, round ``k`` testing on fold ``k``.
    """
    if 1 + labelled_folds + unlabelled_folds > num_folds:
        raise ValueError(f"1 test + {labelled_folds} labelled + {unlabelled_folds} unlabelled > {num_folds} folds.")
    items = load_datalist(datalist_path, "training")
    groups = sorted({group_of(i) for i in items})
    if len(groups) < num_folds:
        raise ValueError(f"{datalist_path}: {len(groups)} volumes cannot fill {num_folds} folds.")
    order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
    fold_of = {order[i]: f for f, part in enumerate(np.array_split(np.arange(len(order)), num_folds)) for i in part}
    folds = [[i for i in items if fold_of[group_of(i)] == f] for f in range(num_folds)]
    out = Path(out_dir)
    rounds = []
    for k in range(num_folds):
        others = [folds[(k + j) % num_folds] for j in range(1, num_folds)]
        labelled = [i for fold in others[:labelled_folds] for i in fold]
        unlabelled = [
            {key: v for key, v in i.items() if key != "label"}
            for fold in others[labelled_folds : labelled_folds + unlabelled_folds]
            for i in fold
        ]
        paths = {"semi": out / f"fold{k}_semi.json", "full": out / f"fold{k}_full.json"}
        write_json_atomic(paths["semi"], {"training": labelled, "unlabeled": unlabelled, "test": folds[k]})
        write_json_atomic(paths["full"], {"training": [i for fold in others for i in fold], "test": folds[k]})
        rounds.append(paths)
    return rounds
