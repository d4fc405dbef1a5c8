"""Uncertainty of the unlabelled images by Monte Carlo dropout (MONAI Label's epistemic scoring, made exact here).

``MCDropoutInferTask`` runs a bundle's inference with a dropout rate set on its ``network_def`` (MONAI's ``UNet``
takes ``dropout``; the weights are unchanged, dropout has no parameters), with only the dropout layers in training
mode (batch norm keeps its running statistics, unlike MONAI Label's ``train_mode``, which would normalise each image
by its own batch statistics), and returns the class probabilities: of the bundle's ``postprocessing`` only its
``Activationsd`` (softmax or sigmoid) is kept. ``MCDropoutScoring`` averages ``simulation_size`` such passes per
unlabelled image and stores, in the datastore's image info,

- ``epistemic_entropy``: the mean over pixels of the entropy of the mean probabilities (what MONAI Label's
  ``Epistemic`` strategy ranks by, most uncertain first);
- ``epistemic_mutual_information``: that entropy minus the mean entropy of the single passes (the part due to the
  model's uncertainty alone, BALD);
- ``epistemic_ts``: the model file's time, so that a rerun scores only images not yet scored with this model.

A one-channel (sigmoid) output is read as the foreground probability of two classes. Scoring works for 2D images and
3D volumes alike (the bundle's inferer segments volumes slice by slice).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from monai.transforms import Activationsd
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.scoring.epistemic_v2 import EpistemicScoring

logger = logging.getLogger(__name__)

KEY_MUTUAL_INFORMATION = "epistemic_mutual_information"


def entropy(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Entropy (nats) of the class probabilities along ``dim``."""
    return -(probs * probs.clamp_min(1e-8).log()).sum(dim)


def mc_dropout_scores(samples: list[torch.Tensor]) -> tuple[float, float]:
    """``(mean entropy of the mean probabilities, mean mutual information)`` of ``samples``: the probabilities
    ``(C, *spatial)`` of the dropout passes (``C == 1``: foreground probability of two classes)."""
    probs = torch.stack([torch.as_tensor(np.asarray(s), dtype=torch.float32) for s in samples])  # (N, C, *spatial)
    if probs.shape[1] == 1:
        probs = torch.cat([1.0 - probs, probs], dim=1)
    total = entropy(probs.mean(0), dim=0)
    expected = entropy(probs, dim=1).mean(0)
    return float(total.mean()), float((total - expected).mean())


class MCDropoutInferTask(BundleInferTask):
    """A bundle's inference with active dropout layers that returns class probabilities (see the module docs).

    Args:
        path: the bundle folder.
        conf: the app's ``--conf`` settings.
        dropout: dropout rate set on the bundle's ``network_def`` (its network must take ``dropout``).
    """

    def __init__(self, path: str, conf: dict[str, str], dropout: float) -> None:
        super().__init__(path, conf, dropout=dropout, skip_writer=True, add_post_restore=False)
        if self.is_valid() and not any(
            isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in self.network.modules()
        ):
            raise ValueError(f"{path}: network_def with dropout={dropout} has no dropout layer to sample with.")

    def post_transforms(self, data: Any = None) -> list:
        return [t for t in super().post_transforms(data) if isinstance(t, Activationsd)]

    def _get_network(self, device: str, data: Any) -> torch.nn.Module | None:
        network = super()._get_network(device, data)
        if network is not None:
            network.eval()
            for module in network.modules():
                if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                    module.train()
        return network


class MCDropoutScoring(EpistemicScoring):
    """MONAI Label's ``EpistemicScoring`` with the scores of :func:`mc_dropout_scores` (see the module docs)."""

    def run_scoring(self, image_id: str, simulation_size: int, model_ts: int, datastore: Datastore) -> None:
        start = time.time()
        request = {"image": datastore.get_image_uri(image_id), "logging": "error", "cache_transforms": False}
        samples = []
        for _ in range(simulation_size):
            _, data = self.infer_task(request=request)
            samples.append(data[self.infer_task.output_label_key])
        score, mutual_information = mc_dropout_scores(samples)
        logger.info(
            f"EPISTEMIC:: {image_id} => {simulation_size} passes; entropy {score:.5f}; mutual information "
            f"{mutual_information:.5f}; {time.time() - start:.2f} s"
        )
        datastore.update_image_info(
            image_id,
            {self.key_output_entropy: score, KEY_MUTUAL_INFORMATION: mutual_information, self.key_output_ts: model_ts},
        )


def scoring_method(path: str, conf: dict[str, str]) -> MCDropoutScoring | None:
    """The MC-dropout scoring of the bundle at ``path`` from ``epistemic_dropout`` (0.2), ``epistemic_simulation_size``
    (5) and ``epistemic_max_samples`` (0: all) of ``conf``; ``None`` (with a warning) if its network cannot sample."""
    try:
        task = MCDropoutInferTask(path, conf, dropout=float(conf.get("epistemic_dropout", "0.2")))
    except (TypeError, ValueError, RuntimeError) as error:
        logger.warning(f"{os.path.basename(path)}: no MC-dropout scoring ({error})")
        return None
    if not task.is_valid():
        logger.warning(f"{os.path.basename(path)}: no models/model.pt; no MC-dropout scoring")
        return None
    return MCDropoutScoring(
        task,
        max_samples=int(conf.get("epistemic_max_samples", "0")),
        simulation_size=int(conf.get("epistemic_simulation_size", "5")),
    )
