"""The built-in tasks: converters to MSD-layout folders (so they run through the same path as a user's data), each
with the budget and labelled amounts the benchmark uses on it.

* ``cluttered_mnist``: the translation paper's task (Vorontsov et al., MedIA 2022): real MNIST digits over clutter of
  digit pieces, 48 x 48 (``common.data.cluttered_mnist``); 20 and 100 labelled of 2200; its 2000 training A images
  (clutter only) are the ``absent`` list the ``translation`` arm reads.
* ``mni_tissue``: real T1 MRI, the MNI152 2009a template (``common.data.mni_tissue``): axial slices, grey / white
  matter, contiguous slabs per split; 4 and 12 labelled slices.
* ``cells_hard``: synthetic microscopy made hard on purpose (``common.data.demo``, 128 px); 4 labelled images.
* ``sparse_stack``: synthetic 3D stacks whose nuclei fill a minority of the slices (``common.data.sparse_stack``):
  10 volumes of 48 x 48 x 24, 3 of them the test list; 2 labelled volumes. The label-free rows on volumes, beside
  the classical methods per slice and per volume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import Budget


@dataclass(frozen=True)
class BuiltinTask:
    """A built-in task.

    Attributes:
        name, title: ``--task`` name and a line for the report.
        prepare: ``(data_dir, quick) -> MSD folder`` (prepared once; later calls find it).
        labelled: labelled cases of the runs with labels.
        budget, quick_budget: the runs' budget, and that of ``--quick``.
        many_objects: images hold many objects, so MIPR keeps every pseudo-label component.
        not_applicable: arm -> why it does not apply here (beyond what the data decides).
        eval_batch_size: test images per evaluation batch (all of one shape here; 1 for volumes); the batch does
            not change a prediction (the networks evaluate in eval mode), only the time.
    """

    name: str
    title: str
    prepare: Callable[[Path, bool], Path]
    labelled: tuple[int, ...]
    budget: Budget
    quick_budget: Budget
    many_objects: bool = False
    not_applicable: Mapping[str, str] = field(default_factory=dict)
    eval_batch_size: int = 1


def _cluttered_mnist(data_dir: Path, quick: bool) -> Path:
    from common.data.cluttered_mnist import export_msd, prepare_cluttered_mnist

    sizes = (
        {"num_train": 200, "num_val": 20, "num_test": 20}
        if quick
        else {"num_train": 2000, "num_val": 200, "num_test": 500}
    )
    return export_msd(prepare_cluttered_mnist(data_dir, "48_simple", labelled_digits=None, seed=0, **sizes))


def _mni_tissue(data_dir: Path, quick: bool) -> Path:
    from common.data.mni_tissue import prepare_mni_tissue

    return prepare_mni_tissue(data_dir / "mni_tissue", image_size=32 if quick else 64)


def _cells_hard(data_dir: Path, quick: bool) -> Path:
    from common.data.demo import ensure_demo_dataset

    cases, size = (16, 32) if quick else (48, 128)
    return ensure_demo_dataset("cells_hard", data_dir / "cells_hard", seed=0, num_cases=cases, image_size=size).parent


def _sparse_stack(data_dir: Path, quick: bool) -> Path:
    from common.data.sparse_stack import sparse_stack_msd

    sizes = (
        {"num_volumes": 5, "num_test": 2, "size": 48, "depth": 12, "object_slices": 8, "num_nuclei": 3}
        if quick
        else {"num_volumes": 10, "num_test": 3, "size": 48, "depth": 24, "object_slices": 10, "num_nuclei": 4}
    )
    return sparse_stack_msd(data_dir, **sizes)


TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in (
        BuiltinTask(
            "cluttered_mnist",
            "cluttered MNIST 48 x 48 (real MNIST digits over clutter of digit pieces)",
            _cluttered_mnist,
            labelled=(20, 100),
            budget=Budget("default", steps=600, epochs=6, batch_size=8, image_size=48),
            quick_budget=Budget("quick", steps=8, epochs=2, batch_size=8, image_size=48),
            eval_batch_size=50,
            not_applicable={
                "af_seg": (
                    "its premise, a classical coarse mask that is roughly right, does not hold (the clutter is made "
                    "of digit pieces of the digit's intensity), and stage 2 (a Deep Image Prior fit per image) over "
                    "2000 images is hours on a CPU"
                ),
            },
        ),
        BuiltinTask(
            "mni_tissue",
            "MNI152 2009a T1 template, axial slices, grey / white matter",
            _mni_tissue,
            labelled=(4, 12),
            budget=Budget("default", steps=600, epochs=6, batch_size=8, image_size=64),
            quick_budget=Budget("quick", steps=8, epochs=2, batch_size=8, image_size=32),
            many_objects=True,
            eval_batch_size=16,
        ),
        BuiltinTask(
            "cells_hard",
            "synthetic microscopy, uneven illumination, dim and touching nuclei, 128 px",
            _cells_hard,
            labelled=(4,),
            budget=Budget("default", steps=300, epochs=10, batch_size=8, image_size=128),
            quick_budget=Budget("quick", steps=6, epochs=2, batch_size=8, image_size=32),
            many_objects=True,
            eval_batch_size=16,
        ),
        BuiltinTask(
            "sparse_stack",
            "synthetic 3D stacks, nuclei in a minority of the slices, drift and noise elsewhere, 48 x 48 x 24",
            _sparse_stack,
            labelled=(2,),
            budget=Budget("default", steps=300, epochs=6, batch_size=8, image_size=48),
            quick_budget=Budget("quick", steps=4, epochs=2, batch_size=4, image_size=48),
            many_objects=True,
        ),
    )
}
