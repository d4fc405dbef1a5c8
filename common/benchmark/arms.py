"""The benchmark's arms: a bundle recipe (or a classical method), its config overrides, its references.

Every method has its like-for-like control (the same bundle and recipe with the unlabelled terms off) and is also
compared with the strongest supervised recipe, ``unet`` (``supervised_seg``: Dice + CE, its augmentation), at equal
segmenter steps. Label-free arms stand beside the classical methods a user tries first (Otsu, Chan-Vese without
erosion) on the same test images; on 3D data also beside their volume forms (one Otsu threshold, one 3D Chan-Vese
level set per test volume), every row then scored per test volume (:mod:`common.benchmark.volumes`). Whether an arm
applies is derived from the data (:func:`not_applicable`): ``translation`` (Vorontsov et al., MedIA 2022), for
instance, needs the target-absent images of the data set's ``absent`` list (:mod:`.dataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import DatasetInfo
from .protocol import Budget


@dataclass(frozen=True)
class RunContext:
    """What an arm's overrides are built from.

    Attributes:
        data: the data set; ``budget``: the task's budget; ``labelled``: labelled cases (0: none); ``seed``.
        datalist_file: the run's training datalist (:func:`common.benchmark.protocol.write_run_datalists`).
        many_objects: images hold many objects (MIPR keeps every pseudo-label component).
    """

    data: DatasetInfo
    budget: Budget
    labelled: int
    seed: int
    datalist_file: str = ""
    many_objects: bool = True


def _data(c: RunContext) -> dict[str, Any]:
    """Overrides every image bundle shares: the run's datalist (its labelled share, its unlabelled images, no
    validation or test list), the seed, the channels and classes."""
    return {
        "dataset_dir": "",
        "datalist_file": c.datalist_file,
        "labelled_fraction": 1.0,
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "seed": c.seed,
        "num_channels": c.data.num_channels,
        "num_classes": c.data.num_classes,
        "class_names": list(c.data.class_names),
        "resume": False,
    }


def _schedule(c: RunContext, epoch_length_key: str, epochs: int | None = None) -> dict[str, Any]:
    """``epochs`` epochs of the budget's iterations, no validation (the last network is evaluated)."""
    epochs = epochs or c.budget.epochs
    return {"max_epochs": epochs, epoch_length_key: c.budget.iterations, "val_interval": epochs + 1}


def _unet_shape(c: RunContext) -> dict[str, Any]:
    channels = list(c.budget.unet_channels)
    return {"network_def#channels": channels, "network_def#strides": [2] * (len(channels) - 1)}


def _patch(c: RunContext) -> dict[str, Any]:
    return {"patch_size": [c.budget.image_size] * 2, "batch_size": c.budget.batch_size}


def _unet(c: RunContext) -> dict[str, Any]:
    return {**_data(c), **_schedule(c, "train#trainer#epoch_length"), **_patch(c), **_unet_shape(c)}


def _adversarial(c: RunContext) -> dict[str, Any]:
    return {
        **_data(c),
        **_schedule(c, "epoch_length"),
        **_patch(c),
        **_unet_shape(c),
        "unlabeled_batch_size": c.budget.batch_size,
        "semi_start_epoch": max(c.budget.epochs // 4, 1),  # paper: 5k of 20k iterations
        "discriminator_channels": [64, 128, 256],  # four stride-2 layers: images of 16 px and more
    }


def _unimatch(c: RunContext) -> dict[str, Any]:
    return {**_data(c), **_schedule(c, "epoch_length"), **_patch(c), "unlabeled_batch_size": c.budget.batch_size}


def _acwe(c: RunContext) -> dict[str, Any]:
    return {
        **_data(c),
        **_schedule(c, "train#trainer#epoch_length"),
        "batch_size": c.budget.batch_size,
        "patch_size": [c.budget.image_size] * 2,
    }


def _acwe_label_only(c: RunContext) -> dict[str, Any]:
    return {**_acwe(c), "acwe_weight": 0.0}


def _af_seg(c: RunContext) -> dict[str, Any]:
    half = c.budget.epochs // 2
    return {
        **_data(c),
        **_patch(c),
        "train#trainer#epoch_length": c.budget.iterations,
        "constant_epochs": half,
        "decay_epochs": c.budget.epochs - half,
        "val_interval": c.budget.epochs + 1,
        "learning_rate": 0.001,
        "dip_steps": 50,
        "background#dsp_max_steps": 50,
    }


MIPR_ROUNDS = 1


def _mipr(c: RunContext, rounds: int | None = None) -> dict[str, Any]:
    """MIPR with ``rounds`` annotation rounds; each round trains its segmenter anew, so each gets the budget's steps
    divided by ``rounds + 1``: all rounds together take the budget's steps, as every other arm. ``rounds`` None: the
    budget's ``mipr_rounds`` where it has them (a paper budget, :mod:`.budgets`: the paper's 3), else
    :data:`MIPR_ROUNDS`; likewise the generator's epochs (the paper's 500, else 20)."""
    if rounds is None:
        rounds = getattr(c.budget, "mipr_rounds", None) or MIPR_ROUNDS
    per_round_epochs = max(c.budget.epochs // (rounds + 1), 1)
    batch = c.budget.batch_size
    out = {
        **_data(c),
        **_unet_shape(c),
        "image_size": [c.budget.image_size] * 2,
        "batch_size": batch,
        "max_epochs": per_round_epochs,
        "val_interval": per_round_epochs + 1,
        # a fixed number of steps per epoch whatever the round's training set (labelled + accepted pairs)
        "train#dataloader#shuffle": False,
        "train#dataloader#sampler": {
            "_target_": "torch.utils.data.RandomSampler",
            "data_source": "@train#dataset",
            "replacement": True,
            "num_samples": c.budget.iterations * batch,
        },
        "generator_epochs": getattr(c.budget, "generator_epochs", None) or 20,
        "generator_channels": [16, 32, 64, 128],
        "spade_hidden_channels": 32,
        "discriminator_channels": 32,
        "discriminator_layers": 2,
        "discriminator_num_d": 2 if c.budget.image_size >= 64 else 1,  # the coarser scale needs 64 px or more
        "num_rounds": rounds,
    }
    if not c.many_objects and rounds > 0:
        out["cleaning_keep_largest_component"] = True  # one object per image (the digit)
    return out


def _mipr_control(c: RunContext) -> dict[str, Any]:
    """Round 0 alone (labelled images only) for the steps of all MIPR's rounds together."""
    return {**_mipr(c, rounds=0), "max_epochs": c.budget.epochs, "val_interval": c.budget.epochs + 1}


TRANSLATION_DEFAULT_SIZE = "48x48"  # the bundle's default preset, for overrides on data no preset fits (n/a there)


def translation_size(data: DatasetInfo) -> str | None:
    """The network preset of ``translation_semi_seg`` (``common.networks.translation.PRESETS``, ``"HxW"``) that is
    the data's 2D image size, or ``None``: the bundle trains on whole images of one preset size (no crops)."""
    from common.networks.translation import PRESETS

    if len(data.image_shape) != 2:
        return None
    size = "x".join(str(n) for n in data.image_shape)
    return size if size in PRESETS else None


def _translation(c: RunContext) -> dict[str, Any]:
    """The proposed model on the run's datalist (its labelled P images with masks, the unlabelled pool as unlabelled P,
    the ``absent`` images as A): whole images at the preset of their size, the budget's batch of P images and as many
    A images per step (the paper's equal P and A batches), the bundle's CPU width (0.25), no validation. Every P and
    A image is used in each pass (no batch dropped), so small data sets run too."""
    size = translation_size(c.data) or TRANSLATION_DEFAULT_SIZE
    return {
        **_data(c),
        **_schedule(c, "epoch_length"),
        "image_size": size,
        "patch_size": [int(n) for n in size.split("x")],
        "batch_size": c.budget.batch_size,
        "absent_batch_size": c.budget.batch_size,
        "train#dataloader#drop_last": False,
        "train#absent_dataloader#drop_last": False,
    }


@dataclass(frozen=True)
class Arm:
    """One kind of run.

    Attributes:
        key, label: name in ``--arms`` and in the tables.
        bundle, configs: the bundle and its configs merged in order; ``bundle`` None for a classical method
            (computed on the test images without training).
        role: ``reference``, ``method``, ``control``, ``label-free`` or ``classical``.
        overrides: ``RunContext -> config overrides``.
        control: a method's like-for-like control arm.
        labels: whether it trains with labels (``False``: label-free and classical arms run at 0 labelled cases).
        use_unlabelled: whether it reads the unlabelled images (``False``: its datalist lists none).
        use_absent: whether its datalist lists the data set's target-absent images (``absent``, image-level tags).
    """

    key: str
    label: str
    bundle: str | None
    configs: tuple[str, ...]
    role: str
    overrides: Callable[[RunContext], dict[str, Any]] | None = None
    control: str | None = None
    labels: bool = True
    use_unlabelled: bool = True
    use_absent: bool = False

    def planned_steps(self, c: RunContext) -> int:
        """Segmenter optimiser steps of this arm, from its overrides (all MIPR rounds together; 0 classical)."""
        return 0 if self.bundle is None else planned_steps(self.overrides(c))


def planned_steps(overrides: Mapping[str, Any]) -> int:
    """Segmenter optimiser steps a bundle run makes with these overrides: epochs (``max_epochs``, or AF-Seg's
    constant + decay epochs) times the steps per epoch (a fixed-size sampler's, or the epoch length), times the
    rounds plus one for MIPR, which trains its segmenter anew in each round."""
    o = overrides
    epochs = o.get("max_epochs") or (o["constant_epochs"] + o["decay_epochs"])
    if "train#dataloader#sampler" in o:
        per_epoch = o["train#dataloader#sampler"]["num_samples"] // o["batch_size"]
    else:
        per_epoch = o.get("train#trainer#epoch_length") or o["epoch_length"]
    return int(epochs * per_epoch) * (o.get("num_rounds", 0) + 1)


ARMS: dict[str, Arm] = {
    a.key: a
    for a in (
        Arm("unet", "U-Net, Dice + CE (supervised_seg)", "supervised_seg", ("train.json",), "reference", _unet,
            use_unlabelled=False),
        Arm("adversarial", "adversarial semi-supervised (adversarial_semi_seg)", "adversarial_semi_seg",
            ("train.json",), "method", _adversarial, control="adversarial_control"),
        Arm("adversarial_control", "its U-Net alone (adversarial_semi_seg supervised_only.json)",
            "adversarial_semi_seg", ("train.json", "supervised_only.json"), "control", _adversarial),
        Arm("unimatch", "UniMatch weak-to-strong consistency (unimatch_semi_seg)", "unimatch_semi_seg",
            ("train.json",), "method", _unimatch, control="unimatch_control"),
        Arm("unimatch_control", "its U-Net alone (unimatch_semi_seg supervised_only.json)", "unimatch_semi_seg",
            ("train.json", "supervised_only.json"), "control", _unimatch),
        Arm("mipr", f"MIPR, {MIPR_ROUNDS} annotation round (mipr_auto_annotation)", "mipr_auto_annotation",
            ("train.json",), "method", _mipr, control="mipr_control"),
        Arm("mipr_control", "its round 0 alone, the same steps (mipr_auto_annotation)", "mipr_auto_annotation",
            ("train.json",), "control", _mipr_control),
        Arm("translation", "translation between target-present and -absent images (translation_semi_seg)",
            "translation_semi_seg", ("train.json",), "method", _translation, control="translation_control",
            use_absent=True),
        Arm("translation_control", "its segmentation path alone (translation_semi_seg segmentation_path_only.json)",
            "translation_semi_seg", ("train.json", "segmentation_path_only.json"), "control", _translation,
            use_unlabelled=False),
        Arm("acwe_joint", "RCNN, ACWE + label loss (acwe_unsup_seg mode 4)", "acwe_unsup_seg",
            ("train.json", "mode4_joint.json"), "method", _acwe, control="acwe_joint_control"),
        Arm("acwe_joint_control", "RCNN, label loss alone (mode 4, ACWE weight 0)", "acwe_unsup_seg",
            ("train.json", "mode4_joint.json"), "control", _acwe_label_only),
        Arm("acwe_unsup", "RCNN + ACWE loss, no labels (acwe_unsup_seg mode 1)", "acwe_unsup_seg", ("train.json",),
            "label-free", _acwe, labels=False),
        Arm("af_seg", "AF-Seg, no labels (af_seg)", "af_seg", ("train.json",), "label-free", _af_seg, labels=False),
        Arm("otsu", "Otsu threshold per image (multi-Otsu for several classes)", None, (), "classical", labels=False),
        Arm("chan_vese", "Chan-Vese level set per image, no erosion", None, (), "classical", labels=False),
        Arm("otsu_3d", "Otsu threshold per volume (one over each test volume)", None, (), "classical", labels=False),
        Arm("chan_vese_3d", "3D Chan-Vese level set per volume, no erosion", None, (), "classical", labels=False),
    )
}  # fmt: skip

VOLUME_ARMS = ("otsu_3d", "chan_vese_3d")  # classical arms that segment whole volumes (3D data only)

TRANSLATION_ARMS = ("translation", "translation_control")


def translation_not_applicable(data: DatasetInfo) -> str | None:
    """Why ``translation`` (and its control) does not apply to ``data``, or ``None``: it translates 2D images between
    a target-present set P (the pool) and a target-absent set A (the ``absent`` list), with one target class, at one
    of its network's preset sizes."""
    from common.networks.translation import PRESETS

    if data.spatial_dims == 3:
        return (
            "translation_semi_seg translates 2D images and this data set holds 3D volumes; target-present / "
            "target-absent tags per slice of a volume are not supported"
        )
    if data.num_classes > 2:
        return (
            f"one target class (present or absent in an image); this data set has {data.num_classes - 1} "
            "foreground classes"
        )
    if data.absent is None:
        return "no target-absent images: dataset.json has no 'absent' list"
    if not data.absent:
        return "no target-absent images: dataset.json's 'absent' list is empty"
    if translation_size(data) is None:
        shape = "x".join(str(n) for n in data.image_shape)
        return (
            f"whole images of a network preset size ({', '.join(PRESETS)}, height x width); this data set's images "
            f"are {shape}"
        )
    return None


def not_applicable(data: DatasetInfo, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Arm -> why it does not apply to ``data`` (derived from its dimensions, classes, channels, image size and its
    ``absent`` list), plus ``extra``."""
    out: dict[str, str] = {}
    translation = translation_not_applicable(data)
    if translation is not None:
        out.update({k: translation for k in TRANSLATION_ARMS})
    if data.num_classes > 2:
        why = f"two-phase (one foreground class); this data set has {data.num_classes - 1} foreground classes"
        two_phase = ("acwe_joint", "acwe_joint_control", "acwe_unsup", "af_seg", "chan_vese", "chan_vese_3d")
        out.update({k: why for k in two_phase})
    if data.num_channels > 1:
        why = f"one-channel images; this data set has {data.num_channels} channels"
        out.update({k: why for k in ("otsu", "chan_vese", *VOLUME_ARMS)})
    if data.spatial_dims != 3:
        why = f"one segmentation per 3D volume; this data set holds {data.spatial_dims}D images"
        out.update({k: why for k in VOLUME_ARMS})
    out.update(extra or {})
    return out


def bundle_version(bundle: str, repo: Path) -> str:
    """The bundle's ``metadata.json`` version."""
    import json

    return json.loads((repo / "bundles" / bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
