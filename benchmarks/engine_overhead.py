"""Engine overhead of every trainer: each bundle's Ignite trainer against a bare PyTorch loop doing the same steps.

    python benchmarks/engine_overhead.py [--iterations 3] [--warmup 1] [--repeats 8] [--threads 1]
        [--trainers NAME ...] [--no-variants] [--profile NAME ...] [--top 25] [--json FILE]

For each trainer (``SupervisedTrainer`` of supervised_seg, ``ActiveContourTrainer`` of acwe_unsup_seg,
``AdversarialSemiTrainer`` of adversarial_semi_seg, ``TranslationModelTrainer`` of translation_semi_seg,
``AFSegTrainer`` of af_seg, ``PixelRearrangementTrainer`` of mipr_auto_annotation) the trainer is instantiated from the
bundle's ``train.json`` with ``monai.bundle.ConfigParser`` (networks, optimisers, losses, inferer, loss weights, the
trainer's own post-processing / metrics / ``decollate`` exactly as configured), with small demo sizes (the overrides in
``CASES``, as ``benchmarks/run_demo.py``), the CPU as device, ``amp`` off, the train handlers (checkpoints, validation,
logging) removed and the data loaders replaced by ``iterations`` batches drawn once beforehand (seeded random tensors of
the bundle's shapes, dtypes and value ranges, held in memory). One extra row: ``SupervisedTrainer`` without
post-processing, train metric and decollation (the engine alone, as ``benchmarks/speed.py``).

The bare loop is written from the trainer's ``_iteration``: the same network, optimiser and loss objects (taken from
the trainer), the same forward passes, loss terms, backward passes and optimiser steps in the same order, on the same
batches; it leaves out what only the engine does (events, output dict, logged scalars, decollation, post-processing,
metrics, the ``.train()`` calls of every iteration). Before every run the networks and optimisers are reset to one
saved initial state and the random generators re-seeded, so both loops compute the same thing: after each pair of
runs the parameters the two loops end with are compared (``max param diff``; 0: bit-identical).

Each repeat times one engine run (``trainer.run()``, start-up included) and one bare run of ``iterations``
iterations, in alternating order; one untimed warm-up pair of ``warmup`` iterations per trainer comes first.
Printed per trainer: images/s through the engine and through the bare loop (from the median wall times), the ratio
engine time / bare time (median of the per-repeat ratios; target at most 1.10) with its lowest and highest value, the
same ratio of CPU times (``time.process_time``: not lengthened by other processes taking the core), the bare loop's
time per iteration, and the engine-only work per iteration under cProfile (self time of the calls the engine run
makes beyond those of the bare loop; see :func:`engine_only_work`). ``--profile NAME`` prints, for those trainers,
the functions behind that figure and the top of the engine run's profile.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.networks.utils import one_hot
from torch.nn.utils import parametrize

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.engines.adversarial_semi import confident_pseudo_labels  # noqa: E402
from common.engines.pixel_rearrangement import _halves  # noqa: E402
from common.engines.unimatch import BOX_KEYS, STRONG_KEYS, cutmix_partners  # noqa: E402
from common.engines.utils import endless  # noqa: E402
from common.losses.gan import hinge_discriminator_loss, hinge_generator_loss  # noqa: E402
from common.losses.unimatch import confident_pseudo_labels as unimatch_pseudo_labels  # noqa: E402
from common.losses.unimatch import unimatch_loss  # noqa: E402
from common.transforms.cutmix import cutmix  # noqa: E402
from common.transforms.patch_shuffle import random_patch_order  # noqa: E402

Batches = dict[str, list[dict[str, torch.Tensor]]]


@dataclass
class Case:
    """One trainer: its bundle config, demo overrides, batches and the bare loop written from its ``_iteration``."""

    trainer: str
    bundle: str
    label: str
    overrides: dict[str, Any]
    batches: Callable[[int, torch.Generator], Batches]
    bare: Callable[[Any, Batches, dict[str, Any]], None]
    loaders: dict[str, str] = field(default_factory=lambda: {"data_loader": "train#trainer#train_data_loader"})
    trainer_id: str = "train#trainer"
    handlers_id: str = "train#handlers"
    configs: tuple[str, ...] = ("train.json",)
    variant: str = ""
    placeholder: str = "$[]"  # what the loaders' config ids become (the batches are set on the trainer later)

    def images(self, batches: Batches) -> int:
        """Images per iteration (all loaders)."""
        return sum(int(b[0]["image"].shape[0]) for b in batches.values())


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _classes(g: torch.Generator, n: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, n, shape, generator=g).float()


# --- SupervisedTrainer (supervised_seg) --------------------------------------------------------------------------


def supervised_batches(n: int, g: torch.Generator) -> Batches:
    return {
        "data_loader": [{"image": _randn(g, 8, 1, 128, 128), "label": _classes(g, 2, 8, 1, 128, 128)} for _ in range(n)]
    }


def supervised_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``SupervisedTrainer._iteration`` without amp, accumulation or compile."""
    net, opt, loss_fn, inferer = tr.network, tr.optimizer, tr.loss_function, tr.inferer
    net.train()
    for b in batches["data_loader"]:
        opt.zero_grad(set_to_none=tr.optim_set_to_none)
        loss = loss_fn(inferer(b["image"], net), b["label"]).mean()
        loss.backward()
        opt.step()


# --- ActiveContourTrainer (acwe_unsup_seg) -----------------------------------------------------------------------


def acwe_batches(n: int, g: torch.Generator) -> Batches:
    # label-free training (the bundle drops the labels of its training items): images in [0, 1]
    return {"data_loader": [{"image": torch.rand(20, 1, 48, 48, generator=g)} for _ in range(n)]}


def acwe_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``ActiveContourTrainer._iteration``: ``loss_function(pred, image, None)``."""
    net, opt, loss_fn, inferer = tr.network, tr.optimizer, tr.loss_function, tr.inferer
    net.train()
    for b in batches["data_loader"]:
        opt.zero_grad(set_to_none=tr.optim_set_to_none)
        x = b["image"]
        loss = loss_fn(inferer(x, net), x, None).mean()
        loss.backward()
        opt.step()


# --- AdversarialSemiTrainer (adversarial_semi_seg) ---------------------------------------------------------------


def adversarial_batches(n: int, g: torch.Generator) -> Batches:
    return {
        "data_loader": [{"image": _randn(g, 8, 1, 32, 32), "label": _classes(g, 3, 8, 1, 32, 32)} for _ in range(n)],
        "unlabeled_data_loader": [{"image": _randn(g, 8, 1, 32, 32)} for _ in range(n)],
    }


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.full_like(logits, 1.0 if real else 0.0)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def adversarial_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``AdversarialSemiTrainer._iteration`` with the discriminator and both semi-supervised terms active (epoch 1 >
    ``semi_start_epoch`` = ``semi_adv_start_epoch`` = 0), without amp."""
    s, d, opt_s, opt_d, inferer = tr.network, tr.d_network, tr.optimizer, tr.d_optimizer, tr.inferer
    s.train()
    d.train()
    for b, bu in zip(batches["data_loader"], batches["unlabeled_data_loader"]):
        images, labels = b["image"], b["label"].long()
        d.requires_grad_(False)
        opt_s.zero_grad(set_to_none=tr.optim_set_to_none)
        logits = inferer(images, s)
        loss = F.cross_entropy(logits.float(), labels[:, 0], ignore_index=tr.ignore_index)
        probs = torch.softmax(logits.float(), dim=1)
        loss = loss + tr.lambda_adv * _bce(d(probs), real=True)
        logits_u = inferer(bu["image"], s)
        probs_u = torch.softmax(logits_u.float(), dim=1)
        d_u = d(probs_u)
        loss = loss + tr.lambda_semi_adv * _bce(d_u, real=True)
        confidence = torch.sigmoid(d_u.detach().float())
        pseudo, mask = confident_pseudo_labels(probs_u.detach(), confidence, tr.semi_threshold, tr.ignore_index)
        if mask.any():
            loss = loss + tr.lambda_semi * F.cross_entropy(logits_u.float(), pseudo, ignore_index=tr.ignore_index)
        loss.backward()
        opt_s.step()
        d.requires_grad_(True)
        opt_d.zero_grad(set_to_none=tr.optim_set_to_none)
        fakes = torch.cat([probs.detach(), probs_u.detach()])
        real = F.one_hot(labels[:, 0], tr.num_classes).permute(0, 3, 1, 2).to(fakes.dtype)
        loss_d = 0.5 * (_bce(d(real), real=True) + _bce(d(fakes), real=False))
        loss_d.backward()
        opt_d.step()


# --- TranslationModelTrainer (translation_semi_seg) --------------------------------------------------------------


def translation_batches(n: int, g: torch.Generator) -> Batches:
    labelled = torch.zeros(10)
    labelled[:2] = 1  # two of the ten P images carry their mask
    return {
        "data_loader": [
            {"image": _randn(g, 10, 1, 48, 48), "label": _classes(g, 2, 10, 1, 48, 48), "labelled": labelled.clone()}
            for _ in range(n)
        ],
        "absent_data_loader": [{"image": _randn(g, 10, 1, 48, 48)} for _ in range(n)],
    }


def translation_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``TranslationModelTrainer._iteration`` (its base's), directions "both", without amp: the generator terms
    (the engine's ``_translation_terms``: only the loop around them is bare), then one discriminator step on this
    iteration's fakes, then the generator's adversarial term against the updated discriminators and one
    generator/segmenter step (the weights as the trainer holds them, ``lambda_sum`` applied)."""
    net, d_a, d_p, opt, opt_d = tr.network, tr.discriminator_a, tr.discriminator_p, tr.optimizer, tr.d_optimizer
    net.train()
    d_a.train()
    d_p.train()
    for b, ba in zip(batches["data_loader"], batches["absent_data_loader"]):
        x_p, labels, x_a = b["image"], b["label"], ba["image"]
        mask = b["labelled"].bool().view(-1)
        d_a.requires_grad_(False)
        d_p.requires_grad_(False)
        opt.zero_grad(set_to_none=tr.optim_set_to_none)
        with parametrize.cached():  # the engine's own loss terms: the loop around them is what is measured
            terms, fakes = tr._translation_terms(x_p, x_a, labels, mask)
        x_pa, x_ap = fakes["x_pa"], fakes["x_ap"]
        d_a.requires_grad_(True)
        d_p.requires_grad_(True)
        opt_d.zero_grad(set_to_none=tr.optim_set_to_none)
        with parametrize.cached():
            loss_d = hinge_discriminator_loss(d_a(x_a, True), d_a(x_pa.detach(), True))  # per element, the default
            loss_d = loss_d + hinge_discriminator_loss(d_p(x_p, True), d_p(x_ap.detach(), True))
        loss_d.backward()
        opt_d.step()
        d_a.requires_grad_(False)
        d_p.requires_grad_(False)
        with parametrize.cached():
            terms["loss_adv"] = hinge_generator_loss(d_a(x_pa)) + hinge_generator_loss(d_p(x_ap))
            loss = sum(tr.weights[k] * v for k, v in terms.items())
        loss.backward()
        opt.step()


# --- AFSegTrainer (af_seg) ---------------------------------------------------------------------------------------


def af_seg_batches(n: int, g: torch.Generator) -> Batches:
    return {
        "data_loader": [
            {
                "image": _randn(g, 4, 1, 64, 64).clamp(-1, 1),
                "weak": _classes(g, 2, 4, 1, 64, 64),
                "background": _randn(g, 4, 1, 64, 64).clamp(-1, 1),
            }
            for _ in range(n)
        ]
    }


def _last(output: Any) -> torch.Tensor:
    """As ``common.engines.af_seg._last`` (not imported: that module is being changed independently)."""
    return output[-1] if isinstance(output, (list, tuple)) else output


def af_seg_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``AFSegTrainer._iteration`` (fp32)."""
    gen, disc, seg, opt_g, opt_d, adv = (
        tr.generator,
        tr.discriminator,
        tr.segmenter,
        tr.g_optimizer,
        tr.d_optimizer,
        tr.adversarial_loss,
    )
    image_key, label_key, background_key = tr.keys
    gen.train()
    seg.train()
    disc.train()
    for b in batches["data_loader"]:
        image, label, background = b[image_key].float(), b[label_key].float(), b[background_key].float()
        label = (label > 0).float()
        opt_g.zero_grad(set_to_none=tr.optim_set_to_none)
        synthetic = gen(image)
        pred = seg(synthetic)
        g_adv = adv(_last(disc((1 - label) * synthetic)), target_is_real=True, for_discriminator=False)
        loss = g_adv + tr.seg_loss(pred, label) + tr.shape_weight * (label * (synthetic - image)).abs().mean()
        loss.backward()
        opt_g.step()
        opt_d.zero_grad(set_to_none=tr.optim_set_to_none)
        both = torch.cat([(1 - label) * background, (1 - label) * synthetic.detach()])
        real_logits, fake_logits = _last(disc(both)).chunk(2)
        d_loss = 0.5 * (
            adv(real_logits, target_is_real=True, for_discriminator=True)
            + adv(fake_logits, target_is_real=False, for_discriminator=True)
        )
        d_loss.backward()
        opt_d.step()


# --- PixelRearrangementTrainer (mipr_auto_annotation) ------------------------------------------------------------


def mipr_batches(n: int, g: torch.Generator) -> Batches:
    return {
        "data_loader": [
            {"image": torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, "label": _classes(g, 2, 4, 1, 64, 64)}
            for _ in range(n)
        ]
    }


def mipr_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``PixelRearrangementTrainer._iteration`` (fp32, no perceptual loss), arrangements from its seeded generator."""
    gen, disc, opt_g, opt_d, adv, fm = (
        tr.generator,
        tr.discriminator,
        tr.g_optimizer,
        tr.d_optimizer,
        tr.adversarial_loss,
        tr.feature_matching_loss,
    )
    shuffle, grid, rng = tr.patch_shuffle, tr.patch_shuffle.grid, np.random.RandomState(ctx["seed"])
    image_key, label_key = tr.keys

    def draw() -> tuple[int, ...]:
        if grid == 1 or rng.rand() >= tr.shuffle_prob:
            return tuple(range(grid * grid))
        return random_patch_order(grid, rng, allow_identity=True)

    gen.train()
    disc.train()
    for b in batches["data_loader"]:
        image, label = b[image_key].float(), b[label_key]
        onehot = one_hot(label.long(), tr.num_classes, dim=1)
        order_b = draw()
        order_a = draw() if tr.separate_arrangements else order_b
        x_a, x_b, t_b = shuffle(image, order_a), shuffle(image, order_b), shuffle(onehot, order_b)
        real_pair = torch.cat([t_b, x_b], dim=1)
        opt_d.zero_grad(set_to_none=tr.optim_set_to_none)
        fake = gen(x_a, t_b)
        logits, _ = disc(torch.cat([torch.cat([t_b, fake.detach()], dim=1), real_pair]))
        fake_logits, real_logits = _halves(logits)
        loss_d = adv(fake_logits, target_is_real=False, for_discriminator=True)
        loss_d = loss_d + adv(real_logits, target_is_real=True, for_discriminator=True)
        loss_d.backward()
        opt_d.step()
        disc.requires_grad_(False)
        opt_g.zero_grad(set_to_none=tr.optim_set_to_none)
        logits, features = disc(torch.cat([torch.cat([t_b, fake], dim=1), real_pair]))
        fake_logits, _ = _halves(logits)
        fake_features, real_features = zip(*(_halves(f) for f in features))
        loss_g = adv(fake_logits, target_is_real=True, for_discriminator=False)
        loss_g = loss_g + tr.feature_matching_weight * fm(fake_features, real_features)
        loss_g.backward()
        opt_g.step()
        disc.requires_grad_(True)


# --- UniMatchTrainer (unimatch_semi_seg) -------------------------------------------------------------------------


def unimatch_batches(n: int, g: torch.Generator) -> Batches:
    def box() -> torch.Tensor:
        mask = torch.zeros(8, 1, 64, 64, dtype=torch.bool)
        mask[:, :, 8:40, 16:48] = torch.rand(8, 1, 1, 1, generator=g) < 0.5
        return mask

    unlabelled = [
        {
            "image": _randn(g, 8, 1, 64, 64),
            "image_strong1": _randn(g, 8, 1, 64, 64),
            "image_strong2": _randn(g, 8, 1, 64, 64),
            "cutmix_box1": box(),
            "cutmix_box2": box(),
        }
        for _ in range(n)
    ]
    labelled = [{"image": _randn(g, 8, 1, 64, 64), "label": _classes(g, 2, 8, 1, 64, 64)} for _ in range(n)]
    return {"labeled_data_loader": labelled, "data_loader": unlabelled}


def unimatch_bare(tr: Any, batches: Batches, ctx: dict[str, Any]) -> None:
    """``UniMatchTrainer._iteration`` (fp32): with the unlabelled terms on, the partners' weak predictions (eval
    mode, no gradients), CutMix of the strong views, labelled + weak with the feature-perturbed stream, the strong
    views, and the loss; otherwise (``supervised_only.json``) the labelled batch alone. Batches, named by the
    trainer's attributes: ``labeled_data_loader`` and ``data_loader`` (the unlabelled one, which drives the epoch:
    weak and strong views, CutMix boxes)."""
    net, opt, inferer = tr.network, tr.optimizer, tr.inferer
    for b, bu in zip(batches["labeled_data_loader"], batches["data_loader"]):
        images, labels = b["image"], b["label"].long()
        opt.zero_grad(set_to_none=tr.optim_set_to_none)
        if not tr.uses_unlabeled:
            net.train()
            loss = unimatch_loss(tr.loss_function(inferer(images, net).float(), labels))
        else:
            weak = bu["image"]
            num_l, num_u = images.shape[0], weak.shape[0]
            views = range(tr.num_strong_views)
            with torch.no_grad():
                net.eval()
                mix_labels, mix_confidence = unimatch_pseudo_labels(inferer(weak, net))
            partner = cutmix_partners(num_u)
            boxes = [bu[BOX_KEYS[v]] for v in views]
            strong = [cutmix(box, (bu[STRONG_KEYS[v]], bu[STRONG_KEYS[v]][partner]))[0] for v, box in zip(views, boxes)]
            net.train()
            logits_all, logits_fp = inferer(torch.cat([images, weak]), net, perturb=True).chunk(2)
            logits, logits_weak = logits_all.split([num_l, num_u])
            logits_strong = inferer(torch.cat(strong), net).chunk(len(strong))
            pseudo, confidence = unimatch_pseudo_labels(logits_weak.detach())
            loss_strong = []
            for v, logits_v in zip(views, logits_strong):
                target = cutmix(boxes[v], (pseudo, mix_labels[partner]), (confidence, mix_confidence[partner]))
                loss_strong.append(tr.unlabeled_loss(logits_v, *target))
            loss_fp = tr.unlabeled_loss(logits_fp[num_l:], pseudo, confidence)
            loss_sup = tr.loss_function(logits.float(), labels)
            loss = unimatch_loss(loss_sup, loss_strong, loss_fp, tr.strong_weight, tr.feature_weight)
        loss.backward()
        opt.step()


UNIMATCH_LOADERS = {"data_loader": "train#trainer#unlabeled_data_loader", "labeled_data_loader": "train#dataloader"}

CASES = [
    Case(
        "SupervisedTrainer",
        "supervised_seg",
        "U-Net 16-256, DiceCE, Adam; batch 8 x 128x128; as configured (train_dice false: no train metric)",
        {},
        supervised_batches,
        supervised_bare,
    ),
    Case(
        "SupervisedTrainer",
        "supervised_seg",
        "the same, engine only: decollate False, no post-processing or metric (as benchmarks/speed.py)",
        {
            "train#trainer#postprocessing": None,
            "train#trainer#key_train_metric": None,
            "train#trainer#decollate": False,
        },
        supervised_batches,
        supervised_bare,
        variant="engine only",
    ),
    Case(
        "ActiveContourTrainer",
        "acwe_unsup_seg",
        "RCNN (16 features, 3 blocks x 3 steps), ACWE loss (mode 1), Adam; batch 20 x 48x48",
        {},
        acwe_batches,
        acwe_bare,
    ),
    Case(
        "AdversarialSemiTrainer",
        "adversarial_semi_seg",
        "U-Net 16-128 + FC discriminator 64-128, all semi terms on; batch 8 + 8 x 32x32",
        {
            "patch_size": [32, 32],
            "network_def#channels": [16, 32, 64, 128],
            "network_def#strides": [2, 2, 2],
            "discriminator_channels": [64, 128],
            "semi_start_epoch": 0,
            "semi_adv_start_epoch": 0,
        },
        adversarial_batches,
        adversarial_bare,
        loaders={
            "data_loader": "train#trainer#train_data_loader",
            "unlabeled_data_loader": "train#trainer#unlabeled_data_loader",
        },
    ),
    Case(
        "TranslationModelTrainer",
        "translation_semi_seg",
        "proposed model (translation, both directions), width 0.25; batch 10 P (2 labelled) + 10 A x 48x48",
        {},
        translation_batches,
        translation_bare,
        loaders={
            "data_loader": "train#trainer#train_data_loader",
            "absent_data_loader": "train#trainer#absent_data_loader",
        },
    ),
    Case(
        "UniMatchTrainer",
        "unimatch_semi_seg",
        "U-Net 16-256 with feature perturbation, both strong views; batch 8 + 8 x 64x64",
        {"patch_size": [64, 64], "batch_size": 8, "unlabeled_batch_size": 8},
        unimatch_batches,
        unimatch_bare,
        loaders=UNIMATCH_LOADERS,
        placeholder="$[None]",  # an empty unlabelled loader is an error of the trainer
    ),
    Case(
        "AFSegTrainer",
        "af_seg",
        "stage 3: G (BasicUNet), D (PatchDiscriminator), S (U-Net 32-256); batch 4 x 64x64",
        {"patch_size": [64, 64], "batch_size": 4, "learning_rate": 0.001},
        af_seg_batches,
        af_seg_bare,
    ),
    Case(
        "PixelRearrangementTrainer",
        "mipr_auto_annotation",
        "SPADE+ G 16-128 (hidden 32) + 2-scale D (16, 2 layers); batch 4 x 3x64x64",
        {
            "image_size": [64, 64],
            "generator_channels": [16, 32, 64, 128],
            "spade_hidden_channels": 32,
            "discriminator_channels": 16,
            "discriminator_layers": 2,
            "generator_batch_size": 4,
        },
        mipr_batches,
        mipr_bare,
        loaders={"data_loader": "generator#trainer#train_data_loader"},
        trainer_id="generator#trainer",
        handlers_id="generator#handlers",
    ),
]


class Bench:
    """A trainer built from its bundle config, with the networks' and optimisers' initial state to reset to."""

    def __init__(self, case: Case, iterations: int) -> None:
        self.case = case
        parser = ConfigParser()
        folder = REPO / "bundles" / case.bundle / "configs"
        parser.read_config([str(folder / c) for c in case.configs])
        overrides = {
            **case.overrides,
            "bundle_root": str(REPO / "bundles" / case.bundle),
            "device": "$torch.device('cpu')",
            "amp": False,
            "resume": False,
            "max_epochs": 1,
            case.handlers_id: [],
            **{config_id: case.placeholder for config_id in case.loaders.values()},
            f"{case.trainer_id}#epoch_length": iterations,
        }
        if case.trainer_id != "train#trainer":
            overrides["generator_epochs"] = 1
        parser.update(overrides)
        torch.manual_seed(0)
        self.trainer = parser.get_parsed_content(case.trainer_id)
        self.seed = int(parser.get_parsed_content("seed"))
        tr = self.trainer
        modules = {
            name: getattr(tr, name, None)
            for name in ("network", "generator", "discriminator", "d_network", "discriminator_a", "discriminator_p")
        }
        self.modules = {}
        for name, module in modules.items():  # de-duplicated (``network`` may be an alias of the segmenter)
            if module is not None and all(module is not m for m in self.modules.values()):
                self.modules[name] = module
        self.optimizers = {
            name: getattr(tr, name)
            for name in ("optimizer", "g_optimizer", "d_optimizer")
            if getattr(tr, name, None) is not None
        }
        self.initial = (
            {k: copy.deepcopy(m.state_dict()) for k, m in self.modules.items()},
            {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers.items()},
        )
        self.trainable = {k: [p.requires_grad for p in m.parameters()] for k, m in self.modules.items()}

    def reset(self) -> None:
        """Networks and optimisers back to their initial state, gradients cleared, generators re-seeded."""
        modules, optimizers = self.initial
        for k, m in self.modules.items():
            m.load_state_dict(modules[k])
            for p, trainable in zip(m.parameters(), self.trainable[k]):
                p.grad = None
                p.requires_grad_(trainable)
        for k, o in self.optimizers.items():
            o.load_state_dict(optimizers[k])
        tr = self.trainer
        for attr in ("_unlabeled", "_absent"):  # endless iterators over the second loader start afresh
            if hasattr(tr, attr):
                setattr(tr, attr, None)
        if getattr(tr, "_labeled", None) is not None:  # UniMatch draws its labelled batches from one made at start
            tr._labeled = endless(tr.labeled_data_loader, "labelled")
        if hasattr(tr, "rng"):
            tr.rng = np.random.RandomState(self.seed)
        torch.manual_seed(0)
        np.random.seed(0)

    def parameters(self) -> list[torch.Tensor]:
        return [p.detach().clone() for m in self.modules.values() for p in m.parameters()]

    def run_engine(self, batches: Batches) -> tuple[float, float]:
        """Wall and CPU seconds of one ``trainer.run()`` over ``batches``."""
        tr = self.trainer
        for attr, b in batches.items():
            setattr(tr, attr, b)
        tr.state.epoch_length, tr.state.max_epochs = len(batches["data_loader"]), 1
        self.reset()
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        tr.run()
        seconds = time.perf_counter() - start, time.process_time() - cpu
        if tr.state.iteration != len(batches["data_loader"]):
            raise RuntimeError(f"{self.case.trainer} ran {tr.state.iteration} iterations")
        return seconds

    def run_bare(self, batches: Batches) -> tuple[float, float]:
        """Wall and CPU seconds of the bare loop over ``batches``."""
        self.reset()
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        self.case.bare(self.trainer, batches, {"seed": self.seed})
        return time.perf_counter() - start, time.process_time() - cpu


def measure(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    batches = case.batches(args.iterations, g)
    warm = {k: v[: args.warmup] for k, v in batches.items()}
    bench = Bench(case, args.iterations)
    gc.collect()
    gc.freeze()  # the configs, networks and batches: keeps the collections before each run (and within it) short
    bench.run_engine(warm), bench.run_bare(warm)  # warm-up, not timed
    times: dict[str, list[tuple[float, float]]] = {"engine": [], "bare": []}
    ratios, cpu_ratios, diffs = [], [], []
    for r in range(args.repeats):
        ends = {}
        for which in ("engine", "bare") if r % 2 == 0 else ("bare", "engine"):
            times[which].append(bench.run_engine(batches) if which == "engine" else bench.run_bare(batches))
            ends[which] = bench.parameters()
        (engine, engine_cpu), (bare, bare_cpu) = times["engine"][-1], times["bare"][-1]
        ratios.append(engine / bare)
        cpu_ratios.append(engine_cpu / bare_cpu)
        diffs.append(max(float((a - b).abs().max()) for a, b in zip(ends["engine"], ends["bare"])))
    engine_only_ms, extra, engine_stats = engine_only_work(bench, batches)
    images = args.iterations * case.images(batches)
    return {
        "trainer": case.trainer,
        "variant": case.variant,
        "bundle": case.bundle,
        "setup": case.label,
        "images_per_iteration": case.images(batches),
        "engine_images_per_s": images / statistics.median(t[0] for t in times["engine"]),
        "bare_images_per_s": images / statistics.median(t[0] for t in times["bare"]),
        "engine_over_bare": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "engine_over_bare_cpu": statistics.median(cpu_ratios),
        "engine_only_ms": engine_only_ms,
        "bare_ms": 1e3 * statistics.median(t[0] for t in times["bare"]) / args.iterations,
        "max_param_diff": max(diffs),
        "engine_s": times["engine"],
        "bare_s": times["bare"],
        "_extra": extra,
        "_engine_stats": engine_stats,
        "_bench": bench,
        "_batches": batches,
    }


def engine_only_work(bench: Bench, batches: Batches) -> tuple[float, list[tuple[float, float, str]], pstats.Stats]:
    """cProfile of one engine run and one bare run: the work only the engine does.

    Returns the self time (ms per iteration) of the calls the engine run makes beyond those of the bare loop (for
    each function called more often in the engine run: its self time pro rata of the extra calls), the list of those
    functions ``(ms per iteration, extra calls per iteration, name)``, largest first, and the engine run's profile.
    Events, output dicts, decollation, post-processing, metrics and per-iteration ``.train()`` calls show up here;
    the compute kernels, called equally often by both loops, drop out. Profiling slows Python down, so this is an
    upper bound of the engine's own work, free of the timing noise of the machine.
    """
    stats = {}
    for name, run in (("engine", bench.run_engine), ("bare", bench.run_bare)):
        prof = cProfile.Profile()
        prof.enable()
        run(batches)
        prof.disable()
        stats[name] = pstats.Stats(prof)
    bare = stats["bare"].stats  # type: ignore[attr-defined]
    iterations = len(batches["data_loader"])
    extra = []
    for key, (_, calls, self_time, _, _) in stats["engine"].stats.items():  # type: ignore[attr-defined]
        more = calls - (bare[key][1] if key in bare else 0)
        if more > 0:
            extra.append((1e3 * self_time * more / calls / iterations, more / iterations, pstats.func_std_string(key)))
    extra.sort(reverse=True)
    return sum(e[0] for e in extra), extra, stats["engine"]


def print_profile(result: dict[str, Any], top: int) -> None:
    """The functions behind a trainer's engine-only work, and the top of its engine run's profile."""
    print(
        f"\n== {result['trainer']}: functions the engine run calls more often than the bare loop "
        f"({result['engine_only_ms']:.2f} ms self time per iteration)"
    )
    print(f"{'self ms / iteration':>19} {'extra calls / iteration':>23}  function")
    for ms, calls, name in result["_extra"][:top]:
        print(f"{ms:19.3f} {calls:23.1f}  {name}")
    print(f"\n== {result['trainer']}: engine run, top functions by self time")
    result["_engine_stats"].sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=1, help="iterations of the untimed warm-up run of each loop")
    parser.add_argument("--repeats", type=int, default=8, help="engine/bare pairs per trainer")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--trainers", nargs="+", default=[c.trainer for c in CASES], help="subset of trainers")
    parser.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="skip the extra rows (SupervisedTrainer, engine only)",
    )
    parser.add_argument("--profile", nargs="*", default=[], help="trainers to cProfile after timing")
    parser.add_argument("--top", type=int, default=25, help="cProfile entries printed")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for case in CASES:
        if case.trainer in args.trainers and (args.variants or not case.variant):
            results.append(measure(case, args))
            print(f"measured {case.trainer} {case.variant}", file=sys.stderr, flush=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.iterations} timed iterations per run "
        f"after a {args.warmup}-iteration warm-up, {args.repeats} engine/bare pairs (alternating order), "
        "medians\n"
    )
    print(
        "| trainer (bundle) | setup | images / iteration | engine images/s | bare images/s | engine / bare "
        "| min-max | engine / bare, CPU time | bare ms / iteration | engine-only work, ms / iteration (cProfile) "
        "| max param diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = f"{r['trainer']}, {r['variant']}" if r["variant"] else r["trainer"]
        print(
            f"| {name} ({r['bundle']}) | {r['setup']} | {r['images_per_iteration']} | "
            f"{r['engine_images_per_s']:.1f} | {r['bare_images_per_s']:.1f} | {r['engine_over_bare']:.3f} | "
            f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f} | {r['engine_over_bare_cpu']:.3f} | {r['bare_ms']:.0f} | "
            f"{r['engine_only_ms']:.1f} | {r['max_param_diff']:.1g} |"
        )
    for r in results:
        if r["trainer"] in args.profile and not r["variant"]:
            print_profile(r, args.top)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{k: v for k, v in r.items() if not k.startswith("_")} for r in results], f, indent=2)


if __name__ == "__main__":
    main()
