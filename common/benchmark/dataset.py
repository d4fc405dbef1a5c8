"""A user's data set as the benchmark sees it: an MSD-layout folder (``dataset.json``), its cases, classes and split.

The benchmark runs on any folder whose ``dataset.json`` lists labelled ``training`` cases (2D images or 3D volumes,
the formats the bundles read); the built-in tasks are converters to such folders (:mod:`common.benchmark.tasks`).
A *case* is a datalist item's group (``"group"`` if given, else its image: one volume, one 2D image), so labelled
amounts count cases, not slices.

The test cases are the ``test`` items that carry labels when the file has them; otherwise a fixed share of the
labelled cases, drawn once (seed 0, whatever the run's seed) so every run of every arm is scored on the same test
cases. The other labelled cases, ``validation`` ones included, form the *pool* from which each run draws its
labelled share; the rest of the pool (and the file's ``unlabeled`` list) are its unlabelled images. No run reads a
pool label outside its labelled share (protocol v2: no validation set).

An optional ``absent`` list names *target-absent* images: images the user knows hold no target, image-level tags
that are cheap to give (``"absent": [{"image": "./imagesAbs/x.png"}, ...]``, or paths alone). When it is there, the
pool and ``unlabeled`` images are taken as target-present: the P and A sets of Vorontsov et al. (MedIA 2022), whose
``translation`` arm reads them. The tags are the user's declared weak labels, read as given; absent-ness is never
derived from any mask.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.data.datalist import group_of, load_datalist, read_datalist, split_by_group

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetInfo:
    """What the benchmark derives from a ``dataset.json``.

    Attributes:
        root: the folder; ``name``: its name (the task name of its results).
        num_channels: image channels (``modality`` / ``channel_names`` entries; 1 when neither is given).
        num_classes, class_names: classes with the background (from ``labels``), and the foreground names.
        spatial_dims: 2 or 3 (of the first training image: volumes go through the bundles' slice pipeline).
        pool: labelled cases the runs draw their labelled share from (items with absolute paths).
        test: the test cases (labelled items).
        unlabeled: the file's ``unlabeled`` images.
        test_given: the test cases come from the file's ``test`` list.
        absent: the file's ``absent`` images (items with ``image`` only, absolute paths); ``None`` when the file has
            no ``absent`` list.
        image_shape: spatial shape of the first labelled training image (``()`` for a DICOM series folder).
    """

    root: Path
    name: str
    num_channels: int
    num_classes: int
    class_names: tuple[str, ...]
    spatial_dims: int
    pool: tuple[dict[str, Any], ...]
    test: tuple[dict[str, Any], ...]
    unlabeled: tuple[dict[str, Any], ...]
    test_given: bool
    absent: tuple[dict[str, Any], ...] | None = None
    image_shape: tuple[int, ...] = ()

    @property
    def pool_cases(self) -> list[str]:
        """The pool's case identifiers, sorted."""
        return sorted({group_of(i) for i in self.pool})

    def case_id(self, case: str) -> str:
        """A case's identifier relative to the folder (what result rows record)."""
        try:
            return str(Path(case).relative_to(self.root))
        except ValueError:
            return case


def _spatial_shape(path: str) -> tuple[int, ...]:
    """An image's spatial shape (read channel-first); ``()`` for a DICOM series folder (a volume, not read here)."""
    from common.data import load_array

    return () if Path(path).is_dir() else tuple(int(n) for n in load_array(path).shape[1:])


def _absent_items(path: Path, content: dict[str, Any], taken: dict[str, str]) -> tuple[dict[str, Any], ...] | None:
    """The ``absent`` list of ``path`` (``None`` without one): ``{"image"}`` items (and ``group`` where given) with
    absolute paths. Errors name the file and the entry: a missing image, one listed in another list too (``taken``:
    image -> the list that holds it)."""
    if "absent" not in content:
        return None
    items = []
    for index, item in enumerate(load_datalist(path, "absent")):
        where = f"{path}: 'absent' item {index} ({item['image']})"
        if not Path(item["image"]).exists():
            raise FileNotFoundError(f"{where}: image not found; 'absent' lists images that hold no target.")
        if item["image"] in taken:
            raise ValueError(
                f"{where} is also in the '{taken[item['image']]}' list; an image is either target-absent ('absent') "
                "or one of the target-present pool, unlabeled or test images, not both."
            )
        items.append({k: item[k] for k in ("image", "group") if k in item})
    return tuple(items)


def read_dataset(dataset_dir: str | os.PathLike, test_fraction: float = TEST_FRACTION) -> DatasetInfo:
    """Read ``dataset_dir/dataset.json``; errors name the file and what was expected."""
    root = Path(dataset_dir).resolve()
    path = root / "dataset.json"
    if not path.is_file():
        found = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else None
        raise FileNotFoundError(
            f"{path}: no dataset.json ({'folder missing' if found is None else f'the folder holds {found}'}); expected "
            "an MSD-layout folder: dataset.json with 'labels' and a 'training' list of {'image', 'label'} items."
        )
    content = read_datalist(path)
    labels = content.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(
            f"{path}: 'labels' must be an object such as {{'0': 'background', '1': 'tumour'}}, got {labels!r}."
        )
    try:
        names = {int(k): str(v) for k, v in labels.items()}
    except ValueError as e:
        raise ValueError(
            f"{path}: the keys of 'labels' must be class numbers ('0', '1', ...), got {list(labels)}."
        ) from e
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: 'labels' must number the classes 0..{len(names) - 1}, got {sorted(names)}.")
    if len(names) < 2:
        raise ValueError(f"{path}: 'labels' holds only the background; expected at least one foreground class.")
    channels = content.get("modality") or content.get("channel_names") or {"0": "image"}
    training = load_datalist(path, "training")
    labelled = [i for i in training if "label" in i]
    if not labelled:
        raise ValueError(f"{path}: no 'training' item has a 'label'; the benchmark needs labelled cases to score.")
    validation = [i for i in load_datalist(path, "validation") if "label" in i]
    test = [i for i in load_datalist(path, "test") if "label" in i]
    unlabeled = load_datalist(path, "unlabeled") + [i for i in training if "label" not in i]
    pool = labelled + validation
    taken = {str(i["image"]): key for key, items in (("training", training), ("validation", validation)) for i in items}
    taken.update({str(i["image"]): "unlabeled" for i in load_datalist(path, "unlabeled")})
    taken.update({str(i["image"]): "test" for i in load_datalist(path, "test")})
    absent = _absent_items(path, content, taken)
    if not test:
        parts = split_by_group(pool, {"test": test_fraction}, SPLIT_SEED)
        pool, test = parts["training"], parts["test"]
    if not test or not pool:
        raise ValueError(f"{path}: {len(labelled)} labelled case(s) are too few to hold out test cases and train.")
    shape = _spatial_shape(str(labelled[0]["image"]))
    return DatasetInfo(
        root=root,
        name=root.name if root.name != "msd" else root.parent.name,
        num_channels=len(channels),
        num_classes=len(names),
        class_names=tuple(names[k] for k in range(1, len(names))),
        spatial_dims=2 if len(shape) == 2 else 3,
        pool=tuple(pool),
        test=tuple(test),
        unlabeled=tuple(unlabeled),
        test_given=bool(load_datalist(path, "test")),
        absent=absent,
        image_shape=shape,
    )
