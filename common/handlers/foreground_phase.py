"""Which phase of a label-free two-phase segmentation is the object: decided once, from unlabelled images.

The Chan-Vese energy that :mod:`common.losses.acwe` minimises (Chen & Frey, MIDL 2020, eq. 2) gives a partition
and its inverse the same value up to ``nu`` x area, so which of the two an untrained network falls into depends on
its seed (on the ``cells`` demo: Dice 0.04 with the background taken as the object, 0.84 flipped). The classical
rule (:func:`common.classical.coarse_masks.coarse_mask`: the brighter phase is the object) is applied here to the
network: after ``decide_epoch`` epochs, the images the trainer has just seen vote, and the network's output is
complemented if the vote goes against the rule. No label is read.
"""

from __future__ import annotations

import logging

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

__all__ = ["PHASE_RULES", "ForegroundPhaseHandler", "phase_statistics", "should_flip"]

PHASE_RULES = ("bright", "dark", "auto", "none")

logger = logging.getLogger(__name__)


def phase_statistics(pred: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: mean intensity inside minus outside the predicted foreground, its area share, and validity.

    pred: ``(B, 1, H, W)`` network output (foreground: ``> 0``); image: ``(B, C, H, W)`` (channels averaged).
    Returns three ``(B,)`` tensors: contrast, area fraction, and ``valid`` (both phases non-empty).
    """
    fg = (pred.detach() > 0).flatten(1).float()
    grey = image.detach().float().mean(dim=1).flatten(1)
    inside, area = fg.sum(1), fg.shape[1]
    valid = (inside > 0) & (inside < area)
    mean_in = (fg * grey).sum(1) / inside.clamp_min(1)
    mean_out = ((1 - fg) * grey).sum(1) / (area - inside).clamp_min(1)
    return mean_in - mean_out, inside / area, valid


def should_flip(contrast: np.ndarray, area_fraction: np.ndarray, rule: str) -> bool:
    """Whether the predicted phase must be complemented to follow ``rule``, from per-image statistics.

    ``"bright"``: the object is the brighter phase (median contrast must be > 0); ``"dark"``: the darker one;
    ``"auto"``: the phase covering less of the image (median area share must be < 0.5); ``"none"``: never (the
    paper's behaviour: whichever phase training falls into).
    """
    if rule not in PHASE_RULES:
        raise ValueError(f"foreground_phase must be one of {PHASE_RULES}, got {rule!r}.")
    if rule == "none":
        return False
    if rule == "auto":
        return bool(np.median(area_fraction) > 0.5)
    median = float(np.median(contrast))
    return median < 0 if rule == "bright" else median > 0


class ForegroundPhaseHandler:
    """Decide a network's foreground phase once, from the training images of epoch ``decide_epoch``.

    During that epoch the trainer's outputs (``pred`` ``(B, 1, H, W)`` and ``image``) are summarised per image by
    :func:`phase_statistics`; at its end the median over images decides (:func:`should_flip`) and
    ``network.set_foreground_phase(flip)`` records it in the network's buffers, before any checkpoint of that epoch
    is written (attach this handler before the checkpoint handlers). If no image of the epoch has both phases the
    decision waits for the next epoch, and is taken at the last epoch in any case. A network whose buffer says the
    phase is decided (a resumed run, a fine-tuned model) is left alone.

    Args:
        network: the module with ``phase_decided`` and ``set_foreground_phase`` (e.g.
            :class:`common.networks.rcnn.RecurrentConvNet`; not its DDP wrapper).
        rule: ``"bright"``, ``"dark"``, ``"auto"`` or ``"none"`` (see :func:`should_flip`).
        decide_epoch: the epoch whose images vote.
        per_volume: the slices of one volume (the batch's ``"source"`` entries) vote together, as one volume:
            their inside/outside sums are pooled before the contrast and area share are taken, so object-free
            slices (often most of a volume) do not outvote the slices that hold the object. Slices without a
            source vote alone. Default ``False``: one vote per image.
    """

    def __init__(
        self, network: torch.nn.Module, rule: str = "bright", decide_epoch: int = 1, per_volume: bool = False
    ) -> None:
        if rule not in PHASE_RULES:
            raise ValueError(f"foreground_phase must be one of {PHASE_RULES}, got {rule!r}.")
        if decide_epoch < 1:
            raise ValueError(f"phase_decide_epoch must be >= 1, got {decide_epoch}.")
        self.network = network
        self.rule = rule
        self.decide_epoch = decide_epoch
        self.per_volume = per_volume
        self._stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._volume_sums: dict[str, np.ndarray] = {}  # volume -> [sum fg*g, sum fg, sum g, pixels, images]

    def _clear(self) -> None:
        self._stats.clear()
        self._volume_sums.clear()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._decide)

    def _pending(self, engine: Engine) -> bool:
        return not bool(self.network.phase_decided) and engine.state.epoch >= self.decide_epoch

    def _collect(self, engine: Engine) -> None:
        if self._pending(engine):
            output = engine.state.output  # a dict, or a list of per-image dicts when the trainer decollates
            if isinstance(output, dict):
                pred, image = output[Keys.PRED], output[Keys.IMAGE]
            else:
                pred, image = (torch.stack([item[key] for item in output]) for key in (Keys.PRED, Keys.IMAGE))
            self._stats.append(tuple(t.cpu() for t in phase_statistics(pred, image)))
            if self.per_volume:
                batch = engine.state.batch  # a dict, or a list of per-image dicts once MONAI has decollated it
                if isinstance(batch, dict):
                    sources = batch.get("source")
                else:
                    sources = [item.get("source") if isinstance(item, dict) else None for item in batch or ()]
                    sources = sources if len(sources) == len(pred) else None
                self._collect_volumes(pred, image, sources, len(self._stats))

    def _collect_volumes(self, pred: torch.Tensor, image: torch.Tensor, sources: list | None, step: int) -> None:
        """Pool per volume: pred ``(B, 1, H, W)``, image ``(B, C, H, W)``, sources ``B`` ids (or ``None``)."""
        fg = (pred.detach() > 0).flatten(1).float().cpu()
        grey = image.detach().float().mean(dim=1).flatten(1).cpu()
        sums = torch.stack([(fg * grey).sum(1), fg.sum(1), grey.sum(1), torch.full_like(fg[:, 0], fg.shape[1])], 1)
        for index, row in enumerate(sums.double().numpy()):
            source = sources[index] if sources is not None and sources[index] else f"#{step}.{index}"
            self._volume_sums[str(source)] = self._volume_sums.get(str(source), 0.0) + np.append(row, 1.0)

    def _decide(self, engine: Engine) -> None:
        if not self._pending(engine):
            return
        last_epoch = engine.state.epoch >= engine.state.max_epochs
        decision = self._vote(engine.state.epoch, last_epoch)  # None: wait for the next epoch
        if idist.get_world_size() > 1:  # rank 0's vote holds for every rank (on the network's device, for NCCL)
            code = torch.tensor(-1 if decision is None else int(decision), device=self.network.phase_sign.device)
            decision = {-1: None, 0: False, 1: True}[int(idist.broadcast(code, src=0))]
        if decision is not None:
            self.network.set_foreground_phase(decision)

    def _vote(self, epoch: int, last_epoch: bool) -> bool | None:
        """Whether to complement the output, from this epoch's images; ``None`` to wait for the next epoch."""
        none = (torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool))
        contrast, area, valid = (torch.cat(parts) for parts in zip(*self._stats)) if self._stats else none
        what = "training images"
        volumes = np.stack(list(self._volume_sums.values())) if self._volume_sums else np.zeros((0, 5))
        if self.per_volume and len(volumes) and volumes[:, 4].max() > 1:  # else 2D images: one vote each, as before
            sums = torch.as_tensor(volumes[:, :4])  # (V, 4)
            inside, total = sums[:, 1], sums[:, 3]
            valid = (inside > 0) & (inside < total)
            contrast = sums[:, 0] / inside.clamp_min(1) - (sums[:, 2] - sums[:, 0]) / (total - inside).clamp_min(1)
            contrast, area, what = contrast.float(), (inside / total).float(), "training volumes"
        if not bool(valid.any()):
            if last_epoch:
                logger.warning("foreground phase: no training image has both phases; the output is kept as it is.")
                return False
            return None
        contrast, area = contrast[valid].numpy(), area[valid].numpy()
        flip = should_flip(contrast, area, self.rule)
        logger.info(
            f"foreground phase ({self.rule!r}, from {len(contrast)} {what} of epoch {epoch}): "
            f"median contrast inside - outside {np.median(contrast):+.3f}, median area share {np.median(area):.3f}; "
            f"{'output complemented' if flip else 'output kept'}."
        )
        return flip
