"""How good are the adversarial method's pseudo-labels? Scored per epoch against labels the method never sees.

In Hung et al. (BMVC 2018) and Tan et al. (J. New Media 2022) the discriminator's confidence map
``sigmoid(D(softmax S(x_u)))`` makes the pseudo-labels: a pixel of an unlabelled image takes the segmenter's argmax
class where the confidence exceeds ``T_semi`` and is ignored elsewhere
(:func:`common.engines.adversarial_semi.confident_pseudo_labels`). How many pixels that selects (coverage) and how
often the selected ones are right (precision) decide whether the pseudo-label loss can help, and training shows
neither. A benchmark that holds the unlabelled images' labels hands them over as a :class:`common.data.HiddenTruth`;
:class:`PseudoLabelQualityHandler` then scores the current S and D after every epoch. Nothing it computes reaches
training.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer, SimpleInferer
from torch.nn.parallel import DistributedDataParallel

from common.atomic_write import write_json_atomic
from common.engines.adversarial_semi import confident_pseudo_labels

__all__ = ["QUALITY_KEYS", "PseudoLabelQualityHandler", "pseudo_label_counts", "pseudo_label_quality"]

QUALITY_KEYS = ("coverage", "precision", "accuracy_unconfident", "dice", "foreground_coverage", "foreground_precision")

logger = logging.getLogger(__name__)


def pseudo_label_counts(
    probs: torch.Tensor, confidence: torch.Tensor, truth: torch.Tensor, threshold: float
) -> dict[str, torch.Tensor]:
    """Pixel counts of one batch, to be summed over batches and turned into rates by :func:`pseudo_label_quality`.

    Args:
        probs: ``(B, C, H, W)`` segmenter softmax on unlabelled images.
        confidence: ``(B, 1, H, W)`` discriminator confidence ``sigmoid(D(probs))``.
        truth: ``(B, H, W)`` class indices in ``[0, C)``, the hidden labels.
        threshold: T_semi; a pixel is confident (gets a pseudo-label) where the confidence is above it.

    Returns:
        int64 tensors: scalars ``pixels``, ``confident``, ``confident_correct`` and ``unconfident_correct`` (pixels
        whose argmax equals the truth), and ``(C,)`` per-class ``predicted``, ``true`` and ``overlap`` pixel counts.
    """
    num_classes = probs.shape[1]
    if truth.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(f"truth must be (B, H, W) = {(probs.shape[0], *probs.shape[2:])}, got {tuple(truth.shape)}.")
    if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= num_classes):
        raise ValueError(f"truth values must lie in [0, {num_classes}), got [{int(truth.min())}, {int(truth.max())}].")
    _, mask = confident_pseudo_labels(probs, confidence, threshold)
    pred = probs.argmax(dim=1)
    truth = truth.to(pred.device)
    correct = pred == truth
    return {
        "pixels": torch.tensor(pred.numel()),
        "confident": mask.sum(),
        "confident_correct": (correct & mask).sum(),
        "unconfident_correct": (correct & ~mask).sum(),
        "confident_foreground": (mask & (pred > 0)).sum(),
        "confident_foreground_correct": (mask & (pred > 0) & correct).sum(),
        "predicted": torch.bincount(pred.flatten(), minlength=num_classes),
        "true": torch.bincount(truth.flatten(), minlength=num_classes),
        "overlap": torch.bincount(pred[correct], minlength=num_classes),
    }


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def pseudo_label_quality(counts: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Rates over all pixels counted by :func:`pseudo_label_counts` (``nan`` where a rate has no pixel).

    Returns:
        ``coverage``: share of the pixels that are confident; ``precision``: share of the confident pixels whose
        pseudo-label (argmax) is right; ``accuracy_unconfident``: the same share among the other pixels;
        ``dice``: Dice of the argmax against the truth, pooled over all pixels per foreground class, then averaged
        over the foreground classes present in prediction or truth; ``foreground_coverage``: confident pixels
        pseudo-labelled as a foreground class, per true foreground pixel (what the pseudo-label loss can teach of
        the object: the background dominates ``coverage`` and ``precision``); ``foreground_precision``: share of
        those that are right.
    """
    pixels, confident = int(counts["pixels"]), int(counts["confident"])
    predicted, true, overlap = (counts[k][1:].double() for k in ("predicted", "true", "overlap"))
    present = (predicted + true) > 0
    dice = (2 * overlap[present] / (predicted + true)[present]).mean().item() if bool(present.any()) else math.nan
    return {
        "coverage": _ratio(confident, pixels),
        "precision": _ratio(int(counts["confident_correct"]), confident),
        "accuracy_unconfident": _ratio(int(counts["unconfident_correct"]), pixels - confident),
        "dice": dice,
        "foreground_coverage": _ratio(int(counts.get("confident_foreground", 0)), float(true.sum())),
        "foreground_precision": _ratio(
            int(counts.get("confident_foreground_correct", 0)), int(counts.get("confident_foreground", 0))
        ),
    }


def _module(network: torch.nn.Module) -> torch.nn.Module:
    """The network itself, not its DDP wrapper: a forward of rank 0 alone must not enter a collective."""
    return network.module if isinstance(network, DistributedDataParallel) else network


class PseudoLabelQualityHandler:
    """After every epoch, the pseudo-labels of the trainer's S and D on unlabelled images against their hidden truth.

    Attached to a :class:`common.engines.adversarial_semi.AdversarialSemiTrainer` (any engine with ``network``,
    ``d_network`` and ``semi_threshold``), at EPOCH_COMPLETED it runs S and D in eval mode under ``no_grad`` on the
    first ``max_items`` items of ``data`` that have a truth (loaded once by ``transform``), restores every
    submodule's train/eval mode, and computes over all their pixels the rates of :func:`pseudo_label_quality`: the
    pseudo-label of a pixel is ``argmax S(x_u)`` where ``sigmoid(D(softmax S(x_u))) > T_semi``, as in training
    (Hung et al., BMVC 2018; Tan et al., J. New Media 2022: the confidence map makes the pseudo-labels). The
    training iterations compute theirs in train mode (batch-norm statistics of the batch) on random crops, so
    these are the pseudo-labels of the same networks, not the exact ones of the last iteration.

    Per epoch it logs one line, sets ``engine.state.metrics[prefix + key]`` for the keys of :data:`QUALITY_KEYS`,
    and rewrites ``output_file`` (atomically) with the list of every epoch's record ``{"epoch", "items", "pixels",
    "threshold", "coverage", "precision", "accuracy_unconfident", "dice", "seconds"}``: undefined rates as
    ``null``; ``seconds`` the wall time of the scoring (and of loading the items, at the first call), which a timed
    run spends on top of training. The records of earlier epochs in an existing file are kept, so a resumed run
    continues its list. Under ``torch.distributed`` only rank 0 computes and writes.

    Args:
        truth: item -> ``(1, H, W)`` label or ``None`` (:class:`common.data.HiddenTruth`); ``None``: the handler
            does nothing at all (the bundle default: no label of an unlabelled image is known).
        data: the unlabelled datalist items (prepared 2D samples).
        transform: deterministic loading of one item to ``{image_key: (Cin, H, W)}`` (no crop, no padding, so that
            the image keeps the shape of its truth).
        output_file: the JSON file of the per-epoch records; ``None``: none written.
        max_items: items scored per epoch.
        inferer: how S is run on a ``(B, Cin, H, W)`` batch (``SimpleInferer`` by default; a sliding window for
            images of any size).
        batch_size: items per forward pass (consecutive items of one shape).
        prefix: of the keys in ``engine.state.metrics``.
        image_key: image key of the transformed items.
    """

    def __init__(
        self,
        truth: Callable[..., torch.Tensor | None] | None,
        data: Sequence[Mapping],
        transform: Callable[[dict], Mapping],
        output_file: str | os.PathLike | None = None,
        max_items: int = 200,
        inferer: Inferer | None = None,
        batch_size: int = 16,
        prefix: str = "pseudo_",
        image_key: str = "image",
    ) -> None:
        if max_items < 1 or batch_size < 1:
            raise ValueError(f"max_items and batch_size must be >= 1, got {max_items} and {batch_size}.")
        self.truth = truth
        self.data = data
        self.transform = transform
        self.output_file = None if output_file is None else Path(output_file)
        self.max_items = max_items
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.batch_size = batch_size
        self.prefix = prefix
        self.image_key = image_key
        self.history: list[dict[str, Any]] | None = None
        self._batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._items = 0
        self._off = False  # no discriminator, or no item with a truth: said once, then nothing more

    def attach(self, engine: Engine) -> None:
        """Score at every EPOCH_COMPLETED; nothing is attached without a truth."""
        if self.truth is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _load(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(B, Cin, H, W)`` images and ``(B, H, W)`` truths of the scored items, consecutive same-shape items
        batched."""
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        skipped = 0
        for item in self.data:
            if len(pairs) >= self.max_items:
                break
            if self.truth(item) is None:
                skipped += 1
                continue
            image = self.transform(dict(item))[self.image_key]
            image = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image).float()
            pairs.append((image, self.truth(item, image.shape[1:])[0]))
        if skipped:
            logger.info(f"pseudo-label quality: {skipped} unlabelled items have no hidden truth and are not scored")
        self._items = len(pairs)
        batches = []
        for _, same_shape in itertools.groupby(pairs, key=lambda pair: tuple(pair[0].shape)):
            group = list(same_shape)
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                batches.append((torch.stack([p[0] for p in chunk]), torch.stack([p[1] for p in chunk])))
        return batches

    def _previous(self, epoch: int) -> list[dict[str, Any]]:
        """Records of the epochs before ``epoch`` in an existing ``output_file`` (a resumed run)."""
        if self.output_file is None or not self.output_file.is_file():
            return []
        try:
            records = json.loads(self.output_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [r for r in records if isinstance(r, dict) and r.get("epoch", epoch) < epoch]

    def score(self, engine: Engine) -> dict[str, float]:
        """The rates of the engine's current S and D over the scored items (eval mode, ``no_grad``)."""
        if self._batches is None:
            self._batches = self._load()
        if not self._batches:
            raise ValueError("no unlabelled item with a hidden truth to score")
        segmenter, discriminator = _module(engine.network), _module(engine.d_network)
        modes = [(m, m.training) for net in (segmenter, discriminator) for m in net.modules()]
        parameter = next(segmenter.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        totals: dict[str, torch.Tensor] = {}
        segmenter.eval()
        discriminator.eval()
        try:
            with torch.no_grad():
                for images, truths in self._batches:
                    probs = torch.softmax(self.inferer(images.to(device), segmenter).float(), dim=1)
                    confidence = torch.sigmoid(discriminator(probs).float())
                    counts = pseudo_label_counts(probs, confidence, truths, engine.semi_threshold)
                    for key, value in counts.items():
                        totals[key] = totals[key] + value.cpu() if key in totals else value.cpu()
        finally:
            for module, training in modes:
                module.train(training)
        return pseudo_label_quality(totals)

    def __call__(self, engine: Engine) -> None:
        if self.truth is None or self._off or idist.get_rank() != 0:
            return
        if getattr(engine, "d_network", None) is None:
            logger.warning("pseudo-label quality: the trainer has no discriminator, so no pseudo-labels to score")
            self._off = True
            return
        start = time.perf_counter()
        if self._batches is None:
            self._batches = self._load()
        if not self._batches:
            logger.warning("pseudo-label quality: no unlabelled item has a hidden truth; nothing is scored")
            self._off = True
            return
        epoch = engine.state.epoch
        if self.history is None:
            self.history = self._previous(epoch)
        quality = self.score(engine)
        pixels = sum(int(t.numel()) for _, t in self._batches)
        record = {"epoch": epoch, "items": self._items, "pixels": pixels, "threshold": float(engine.semi_threshold)}
        record.update({k: None if math.isnan(v) else v for k, v in quality.items()})
        record["seconds"] = round(time.perf_counter() - start, 3)
        self.history = [r for r in self.history if r.get("epoch") != epoch] + [record]
        engine.state.metrics.update({self.prefix + k: quality[k] for k in QUALITY_KEYS})
        logger.info(
            f"epoch {epoch} pseudo-labels on {self._items} unlabelled images (T_semi {engine.semi_threshold}): "
            + ", ".join(f"{k.replace('_', ' ')} {quality[k]:.4f}" for k in QUALITY_KEYS)
        )
        if self.output_file is not None:
            write_json_atomic(self.output_file, self.history)
