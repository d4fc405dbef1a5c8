"""A ``SupervisedTrainer`` whose loss also sees the input image, for image-driven losses such as the ACWE energy.

``SupervisedTrainer`` calls ``loss_function(pred, label)``; the unsupervised Chan-Vese loss of Chen & Frey
(MIDL 2020) needs the image instead, and their mode 4 needs both. :class:`ActiveContourTrainer` calls
``loss_function(pred, image, label)`` with ``label=None`` when the batch has none (label-free training), and keeps
every MONAI iteration event (``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``,
``MODEL_COMPLETED``) so MONAI handlers work unchanged.
"""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

__all__ = ["ActiveContourTrainer"]


class ActiveContourTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` with ``loss_function(pred, image, label)``; takes the same arguments.

    ``loss_function``: e.g. :class:`common.losses.acwe.ActiveContourCombinedLoss`; ``pred`` is the inferer's
    output ``(B, 1, H, W)``, ``image`` the network input ``(B, C, H, W)``, ``label`` ``(B, 1, H, W)`` or ``None``.
    Gradient accumulation and ``compile`` are not supported (``accumulation_steps`` must be 1). A loss whose
    ``uses_volumes`` is true (the ACWE energy with volume statistics) also gets ``sources=`` and ``slices=``, the
    batch's ``"source"`` (volume path) and ``"slice"`` (index) entries written by :mod:`common.data.slices`.
    """

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One optimisation step; returns ``{"image", "label", "pred", "loss"}`` (``label`` may be ``None``)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if engine.accumulation_steps != 1 or engine.compile:
            raise ValueError("ActiveContourTrainer supports neither gradient accumulation nor compile.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}

        def _compute_pred_loss() -> None:
            engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.network)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            volumes = {}
            if getattr(engine.loss_function, "uses_volumes", False) and isinstance(batchdata, dict):
                volumes = {"sources": batchdata.get("source"), "slices": batchdata.get("slice")}
            loss = engine.loss_function(engine.state.output[Keys.PRED], inputs, targets, **volumes)
            engine.state.output[Keys.LOSS] = loss.mean()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                _compute_pred_loss()
            engine.scaler.scale(engine.state.output[Keys.LOSS]).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            _compute_pred_loss()
            engine.state.output[Keys.LOSS].backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
