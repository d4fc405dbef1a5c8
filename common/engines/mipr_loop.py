"""The iterative annotation loop of MIPR (Dai, Zhu et al., "MIPR: Automatic Annotation of Medical Images with Pixel
Rearrangement", arXiv 2204.10513, Fig. 1): a self-training workflow over two Ignite trainers.

Round 0 trains the segmenter ``S`` on the labelled images and the generator ``G`` on the same pairs. Round
``k = 1..num_rounds`` pseudo-labels every unlabelled image with ``S_{k-1}``, cleans, rearranges and checks the pairs
(:func:`common.engines.mipr_annotation.annotate_round`), then retrains ``S_k`` from its initial weights on the
labelled images plus the pairs accepted in round ``k`` (the pairs are made anew each round, so their number grows
as ``S`` improves, as in the paper's Table 1).

``S`` is trained by the bundle's own ``train#trainer`` (a MONAI ``SupervisedTrainer``), run once per round: before
each run the loop restores the network, optimiser and learning-rate scheduler to their initial states and swaps the
training set (``CacheDataset.set_data``). Every round's final model is saved atomically to
``ckpt_dir/round<k>/model.pt`` (the paper trains a fixed 100 epochs with cosine annealing and keeps the last model),
the last one also to ``ckpt_dir/model.pt``; ``G`` to ``ckpt_dir/generator.pt``. A restarted run skips every round
whose model exists and the generator training when its checkpoint exists, so a killed loop resumes at the round it
was in; it resumes only a loop on the same inputs: the labelled, unlabelled and calibration items and the acceptance
settings are fingerprinted into ``ckpt_dir/mipr_inputs.json``, and when they differ (a new final label through MONAI
Label, another split) the saved rounds, generator and pairs are removed and the loop starts afresh. Per-round counts
go to ``work_dir/rounds.json`` and the log.

Under ``torchrun`` (``configs/multi_gpu_train.json``) every rank trains ``S`` and ``G`` (DDP), rank 0 alone annotates
and writes files, and the other ranks wait for it and read its pairs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from monai.data import CacheDataset
from monai.engines import Trainer
from torch import nn
from torch.optim import Optimizer

from common.atomic_write import save_torch_atomic, write_json_atomic
from common.data.datalist import read_json
from common.visualize import save_panel

from .mipr_annotation import annotate_round, pseudo_label, rearrange, reconstruction_threshold

logger = logging.getLogger(__name__)

__all__ = ["MIPRAnnotationLoop", "save_state_atomic"]


def _unwrapped(module: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return getattr(module, "module", module)


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _fit_distributed_sampler(sampler: object, size: int) -> None:
    """A ``DistributedSampler`` sizes its epoch at construction; refit it to a training set that changed size."""
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.num_samples = math.ceil(size / sampler.num_replicas)
        sampler.total_size = sampler.num_samples * sampler.num_replicas


def save_state_atomic(module: nn.Module, path: str | os.PathLike) -> Path:
    """``torch.save(module.state_dict())`` through a temporary file and ``os.replace``: never a half file.

    A ``DistributedDataParallel`` wrapper is unwrapped first, so the file loads into the bare network.
    """
    return save_torch_atomic(path, _unwrapped(module).state_dict())


class MIPRAnnotationLoop:
    """Pseudo-label -> clean -> rearrange -> accept -> retrain, for ``num_rounds`` rounds.

    Args:
        segmenter_trainer: trainer of ``S`` whose data loader iterates a ``CacheDataset``; its data at ``run`` time
            are the labelled items (so MONAI Label's override of ``train#dataset#data`` is honoured).
        segmenter: ``S``, ``(B, C, H, W)`` -> ``(B, num_classes, H, W)`` logits (the trainer's network).
        segmenter_optimizer: the trainer's optimiser.
        lr_scheduler: the trainer's learning-rate scheduler (cosine annealing in the paper), or ``None``.
        generator_trainer: trainer of ``G`` and its discriminator on the labelled pairs
            (:class:`common.engines.pixel_rearrangement.PixelRearrangementTrainer`).
        generator: ``G(image, one_hot_label)``.
        unlabelled_items: datalist items of the unlabelled images.
        load: item -> dict with the ``(C, H, W)`` ``"image"`` in [-1, 1] (and ``"label"`` when the item has one).
        clean: pseudo-label cleaning, ``(1, H, W)`` -> ``(1, H, W)`` class map.
        work_dir: folder of ``round<k>/`` pairs, ``rounds.json`` and the panels.
        ckpt_dir: folder of the round models and the generator.
        num_rounds: annotation rounds (3 in the paper).
        num_classes: classes including background.
        acceptance_dice: Dice(argmax S(x'), t') needed to accept a pair (rules ``"segmenter"`` and ``"both"``).
        acceptance: who judges a pair, ``"segmenter"``, ``"reconstruction"`` or ``"both"``
            (:mod:`common.engines.mipr_annotation`).
        reconstruction_quantile: the ``"reconstruction"`` threshold is this quantile of ``mean |G(x, t) - x|`` on
            ``calibration_items`` after ``G`` is trained (computed whenever there are such items, written to
            ``rounds.json``, and applied by the rules ``"reconstruction"`` and ``"both"``).
        calibration_items: labelled items ``G`` did not train on (the validation split).
        new_layouts: further pairs ``(G(x, t''), t'')`` per accepted pair, ``t''`` a new layout of its label.
        truth: hidden labels of the unlabelled items (benchmarks only: logged as the pairs' ``true_dice``, never used
            to accept), e.g. :class:`common.data.HiddenTruth`; ``None`` in the bundle.
        seed: seed of the new layouts.
        generator_ckpt_dir: the folder of ``G``'s epoch checkpoints (its trainer's resume handler), removed with the
            saved rounds when the inputs changed, so that a new ``G`` does not resume the old one's training.
        panel_items: a few labelled items (e.g. test images) drawn as image | pseudo-label | rearranged image |
            its label | truth after every round.
        device: where annotation runs.
    """

    def __init__(
        self,
        segmenter_trainer: Trainer,
        segmenter: nn.Module,
        segmenter_optimizer: Optimizer,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        generator_trainer: Trainer,
        generator: nn.Module,
        unlabelled_items: Sequence[Mapping],
        load: Callable[[Mapping], Mapping],
        clean: Callable[[torch.Tensor], torch.Tensor],
        work_dir: str,
        ckpt_dir: str,
        num_rounds: int = 3,
        num_classes: int = 2,
        acceptance_dice: float = 0.9,
        panel_items: Sequence[Mapping] = (),
        device: torch.device | str = "cpu",
        acceptance: str = "segmenter",
        reconstruction_quantile: float = 0.9,
        calibration_items: Sequence[Mapping] = (),
        new_layouts: int = 0,
        truth: Callable[[Mapping, Sequence[int]], torch.Tensor | None] | None = None,
        seed: int = 0,
        generator_ckpt_dir: str | None = None,
    ) -> None:
        dataset = segmenter_trainer.data_loader.dataset
        if not isinstance(dataset, CacheDataset):
            raise TypeError(f"the segmenter trainer must iterate a monai CacheDataset, got {type(dataset).__name__}.")
        if num_rounds < 0:
            raise ValueError(f"num_rounds must be >= 0, got {num_rounds}.")
        self.segmenter_trainer = segmenter_trainer
        self.dataset = dataset
        self.segmenter = segmenter
        self.optimizer = segmenter_optimizer
        self.lr_scheduler = lr_scheduler
        self.generator_trainer = generator_trainer
        self.generator = generator
        self.unlabelled_items = list(unlabelled_items)
        self.load = load
        self.clean = clean
        self.work_dir = Path(work_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.num_rounds = num_rounds
        self.num_classes = num_classes
        self.acceptance_dice = acceptance_dice
        self.acceptance = acceptance
        self.reconstruction_quantile = reconstruction_quantile
        self.calibration_items = list(calibration_items)
        self.new_layouts = new_layouts
        self.truth = truth
        self.seed = seed
        self.generator_ckpt_dir = None if generator_ckpt_dir is None else Path(generator_ckpt_dir)
        self.panel_items = list(panel_items)
        self.device = torch.device(device)
        # the states every round starts from: S is retrained from scratch on each round's data
        self._initial_states = {
            "segmenter": copy.deepcopy(segmenter.state_dict()),
            "optimizer": copy.deepcopy(segmenter_optimizer.state_dict()),
            "lr_scheduler": None if lr_scheduler is None else copy.deepcopy(lr_scheduler.state_dict()),
        }

    def round_model(self, k: int) -> Path:
        """Path of ``S_k``'s final weights."""
        return self.ckpt_dir / f"round{k}" / "model.pt"

    @property
    def generator_checkpoint(self) -> Path:
        return self.ckpt_dir / "generator.pt"

    @property
    def inputs_file(self) -> Path:
        return self.ckpt_dir / "mipr_inputs.json"

    def inputs_fingerprint(self, labelled: Sequence[Mapping]) -> dict:
        """What a saved round depends on: the labelled, unlabelled and calibration items (their paths) and the
        annotation settings, with a SHA-256 over all of it (``"sha256"``)."""
        inputs = {
            "labelled": sorted([str(i.get("image")), str(i.get("label"))] for i in labelled),
            "unlabelled": sorted(str(i.get("image")) for i in self.unlabelled_items),
            "calibration": sorted([str(i.get("image")), str(i.get("label"))] for i in self.calibration_items),
            "settings": {
                "num_classes": self.num_classes,
                "acceptance": self.acceptance,
                "acceptance_dice": self.acceptance_dice,
                "reconstruction_quantile": self.reconstruction_quantile,
                "new_layouts": self.new_layouts,
                "seed": self.seed,
            },
        }
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()
        return {"sha256": digest, "num_labelled": len(inputs["labelled"]), "num_unlabelled": len(inputs["unlabelled"])}

    def _saved_rounds(self) -> list[Path]:
        """The files and folders a resumed loop would reuse."""
        found = [self.generator_checkpoint, self.ckpt_dir / "model.pt", self.work_dir / "rounds.json"]
        if self.generator_ckpt_dir is not None:  # G's epoch checkpoints: a new G would resume from them
            found.append(self.generator_ckpt_dir)
        found += sorted(self.ckpt_dir.glob("round[0-9]*")) + sorted(self.work_dir.glob("round[0-9]*"))
        return [p for p in dict.fromkeys(found) if p.exists()]

    def _start_or_resume(self, labelled: Sequence[Mapping]) -> None:
        """Keep the saved rounds when they were made from the same inputs (a killed loop resumes); otherwise remove
        them, logged, so that every round is made anew from these inputs (``ckpt_dir/model.pt``, the served model,
        stays until the new loop replaces it); then record the inputs' fingerprint."""
        if _is_main_process():
            current = self.inputs_fingerprint(labelled)
            saved = read_json(self.inputs_file) if self.inputs_file.is_file() else None
            if saved is None or saved.get("sha256") != current["sha256"]:
                stale = [p for p in self._saved_rounds() if p != self.ckpt_dir / "model.pt"]
                if stale:
                    before = f"{saved['num_labelled']} labelled, {saved['num_unlabelled']} unlabelled" if saved else "?"
                    logger.warning(
                        f"MIPR's inputs changed since its saved rounds (then: {before}; now: "
                        f"{current['num_labelled']} labelled, {current['num_unlabelled']} unlabelled): removing "
                        f"{len(stale)} saved round file(s) and folder(s), starting the loop afresh"
                    )
                for path in stale:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            write_json_atomic(self.inputs_file, current)
        _barrier()

    def run(self) -> list[dict]:
        """Run (or resume) every round; return one record per round (also written to ``work_dir/rounds.json``)."""
        labelled = list(self.dataset.data)
        if not labelled:
            raise ValueError("MIPR needs labelled images: the segmenter's training data (train#dataset#data) is empty.")
        if self.num_rounds > 0 and not self.unlabelled_items:
            raise ValueError(
                "MIPR needs unlabelled images for its annotation rounds: the unlabelled list is empty "
                "(set labelled_fraction < 1, or unlabeled_dir)."
            )
        self._start_or_resume(labelled)
        records = [self._train_segmenter(0, labelled, counts=None)]
        max_error = None
        if self.num_rounds > 0:
            self._train_generator()
            if self.acceptance != "segmenter" or self.calibration_items:  # logged whatever the rule
                max_error = reconstruction_threshold(
                    _unwrapped(self.generator),
                    self.calibration_items,
                    self.load,
                    self.num_classes,
                    self.reconstruction_quantile,
                    self.device,
                )
                logger.info(
                    f"reconstruction acceptance: mean |G(x, t) - x| <= {max_error:.4f} (quantile "
                    f"{self.reconstruction_quantile} on {len(self.calibration_items)} held-out labelled pairs)"
                )
        for k in range(1, self.num_rounds + 1):
            round_dir = self.work_dir / f"round{k}"
            if _is_main_process():
                annotate_round(
                    _unwrapped(self.segmenter),
                    _unwrapped(self.generator),
                    self.unlabelled_items,
                    self.load,
                    self.clean,
                    round_dir,
                    self.num_classes,
                    self.acceptance_dice,
                    self.device,
                    acceptance=self.acceptance,
                    max_reconstruction_error=max_error,
                    new_layouts=self.new_layouts,
                    seed=self.seed + k,
                    truth=self.truth,
                )
                self._save_panel(k)
            _barrier()
            pairs = read_json(round_dir / "datalist.json")
            record = self._train_segmenter(k, labelled + pairs["training"], counts=pairs["counts"])
            record["max_reconstruction_error"] = max_error
            records.append(record)
        if _is_main_process():
            save_state_atomic(self.segmenter, self.ckpt_dir / "model.pt")
            logger.info(
                f"{self.ckpt_dir / 'model.pt'} is the last network of round {self.num_rounds} (MIPR keeps each "
                "round's last model; its validation only monitors)"
            )
            write_json_atomic(self.work_dir / "rounds.json", records)
        _barrier()
        return records

    def _train_segmenter(self, k: int, items: list[dict], counts: Mapping | None) -> dict:
        record = {
            "round": k,
            "train_items": len(items),
            "pairs": 0 if counts is None else counts["accepted"] + counts.get("new_layouts", 0),
            "counts": counts,
        }
        path = self.round_model(k)
        if path.is_file():
            logger.info(f"round {k}: {path} exists, skipping its training")
            _unwrapped(self.segmenter).load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
            return record
        logger.info(f"round {k}: training S on {len(items)} items ({record['pairs']} MIPR pairs)")
        self.segmenter.load_state_dict(self._initial_states["segmenter"])
        self.optimizer.load_state_dict(self._initial_states["optimizer"])
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(self._initial_states["lr_scheduler"])
        self.dataset.set_data([{"image": item["image"], "label": item["label"]} for item in items])  # same keys
        _fit_distributed_sampler(self.segmenter_trainer.data_loader.sampler, len(items))
        start = time.perf_counter()
        self.segmenter_trainer.run()
        record["seconds"] = round(time.perf_counter() - start, 1)
        if _is_main_process():
            save_state_atomic(self.segmenter, path)
        _barrier()
        return record

    def _train_generator(self) -> None:
        if self.generator_checkpoint.is_file():
            logger.info(f"{self.generator_checkpoint} exists, skipping the generator training")
            state = torch.load(self.generator_checkpoint, map_location=self.device, weights_only=True)
            _unwrapped(self.generator).load_state_dict(state)
            return
        logger.info("training the pixel-rearrangement generator G on the labelled pairs")
        self.generator_trainer.run()
        if _is_main_process():
            save_state_atomic(self.generator, self.generator_checkpoint)
        _barrier()

    @torch.no_grad()
    def _save_panel(self, k: int) -> None:
        if not self.panel_items:
            return
        segmenter, generator = _unwrapped(self.segmenter), _unwrapped(self.generator)
        segmenter.eval()
        generator.eval()
        rows = []
        for item in self.panel_items:
            data = self.load(item)
            image = torch.as_tensor(data["image"]).float()[None].to(self.device)
            raw = pseudo_label(segmenter, image)[0].cpu()
            cleaned = self.clean(raw).long()[None].to(self.device)
            rows.append(
                {
                    "image": image[0].cpu().numpy(),
                    "pseudo-label": raw.numpy(),
                    "rearranged": rearrange(generator, image, cleaned, self.num_classes)[0].cpu().numpy(),
                    "its label": cleaned[0].cpu().numpy(),
                    "truth": torch.as_tensor(data["label"]).cpu().numpy(),
                }
            )
        save_panel(
            rows,
            self.work_dir / f"panel_round{k}.png",
            label_keys=("pseudo-label", "its label", "truth"),
            num_classes=self.num_classes,
            title=f"MIPR round {k}",
        )
