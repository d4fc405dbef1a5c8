"""Protocol v2 of the label-efficiency benchmark, enforced by the data each run is given.

* The only labels a run's training reads are its labelled share: the run's training datalist holds its ``k``
  labelled cases with their labels, the rest of the pool without them (``unlabeled``), no validation and no test
  list; the bundles are run with ``val_fraction`` and ``test_fraction`` 0 and no validation (``val_interval`` past
  the last epoch), so the last network is evaluated: no model, phase, threshold or setting is chosen with labels.
* The test labels are read only by the evaluation, from a second datalist (the labelled share and the test cases).
* Image-level tags the user declares are read as given: the ``absent`` list of target-absent images (images known to
  hold no target, :mod:`.dataset`) goes into the training datalist of the arms that read it (``translation``);
  absent-ness is never derived from a label (unlabelled cases' masks least of all).
* Every run of a task gets the same segmenter optimiser steps (:class:`Budget`); each seed draws its own labelled
  subset (recorded in the result row).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.atomic_write import write_text_atomic
from common.data.datalist import drop_labels, group_of

from .dataset import DatasetInfo

PROTOCOL = "v2"
SEEDS = (0, 1, 2, 3, 4)  # at least 5 seeds per row


@dataclass(frozen=True)
class Budget:
    """What every trained run of a task gets.

    Attributes:
        name: ``default``, ``quick`` (a smoke run, not a result) or a custom name.
        steps, epochs: segmenter optimiser steps, in ``epochs`` epochs of ``steps // epochs``.
        batch_size: labelled batch (the unlabelled batch of the semi-supervised arms is the same size).
        image_size: side of the square training patches (2D).
        unet_channels: widths of the U-Nets (supervised, adversarial, MIPR's segmenter).
    """

    name: str
    steps: int
    epochs: int
    batch_size: int
    image_size: int
    unet_channels: tuple[int, ...] = (16, 32, 64, 128, 256)

    @property
    def iterations(self) -> int:
        return self.steps // self.epochs

    def as_row(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def labelled_subset(data: DatasetInfo, labelled: int, seed: int) -> list[str]:
    """The ``labelled`` cases (sorted identifiers) a run with ``seed`` draws from the pool; 0 gives none."""
    cases = data.pool_cases
    if labelled > len(cases):
        raise ValueError(f"{data.root}: {labelled} labelled cases asked, the pool holds {len(cases)}.")
    return sorted(random.Random(seed).sample(cases, labelled))


def write_run_datalists(
    data: DatasetInfo,
    cases: list[str],
    run_dir: str | os.PathLike,
    use_unlabelled: bool = True,
    use_absent: bool = False,
) -> dict[str, Path]:
    """Write the run's two datalists into ``run_dir`` and return their paths.

    ``train``: ``training`` = the labelled cases (with labels), ``unlabeled`` = the other pool cases and the file's
    unlabelled images (without labels; none when ``use_unlabelled`` is false), and with ``use_absent`` (an arm that
    reads them) ``absent`` = the file's target-absent images (image only); no validation or test list.
    ``eval``: ``training`` = the labelled cases, ``test`` = the test cases. A run with no labelled case (label-free)
    gets every pool image as a ``training`` item without a label (the bundles' label-free path).
    """
    chosen = set(cases)
    labelled = [dict(i) for i in data.pool if group_of(i) in chosen]
    others = drop_labels([i for i in data.pool if group_of(i) not in chosen]) + [dict(i) for i in data.unlabeled]
    header = _header(data)
    if labelled:
        train = {**header, "training": labelled, "unlabeled": others if use_unlabelled else []}
        if use_absent:
            train["absent"] = [dict(i) for i in data.absent or ()]
        evaluation = {**header, "training": labelled, "test": [dict(i) for i in data.test]}
    else:
        train = {**header, "training": others}
        evaluation = {**header, "training": others, "test": [dict(i) for i in data.test]}
    run_dir = Path(run_dir)
    paths = {"train": run_dir / "datalist_train.json", "eval": run_dir / "datalist_eval.json"}
    for key, content in (("train", train), ("eval", evaluation)):
        write_text_atomic(paths[key], json.dumps(content, indent=1))
    return paths


def write_truth_datalist(data: DatasetInfo, cases: list[str], run_dir: str | os.PathLike, limit: int) -> Path:
    """``run_dir/datalist_truth.json``: ``test`` = up to ``limit`` of the pool cases outside ``cases`` (the run's
    unlabelled share, drawn with seed 0), *with* their labels; ``training`` = the labelled cases. For the
    pseudo-label diagnostic of a run that has finished training (:mod:`common.benchmark.diagnostics`), never for
    training."""
    chosen = set(cases)
    others = sorted(c for c in data.pool_cases if c not in chosen)
    drawn = set(random.Random(0).sample(others, min(limit, len(others))))
    content = {
        **_header(data),
        "training": [dict(i) for i in data.pool if group_of(i) in chosen],
        "test": [dict(i) for i in data.pool if group_of(i) in drawn],
    }
    path = Path(run_dir) / "datalist_truth.json"
    write_text_atomic(path, json.dumps(content, indent=1))
    return path


def _header(data: DatasetInfo) -> dict[str, Any]:
    content = json.loads((data.root / "dataset.json").read_text(encoding="utf-8"))
    return {k: content[k] for k in ("name", "labels", "modality", "channel_names", "label_scale") if k in content}
