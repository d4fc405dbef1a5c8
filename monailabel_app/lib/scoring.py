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

``EpistemicWhenTrained`` is the scoring the app registers: built as soon as the bundle has weights, whether they
existed at start or a training through the app wrote them, and refused with HTTP 409 before. ``RankedEpistemic`` is
the ``epistemic`` strategy: it serves the highest ``epistemic_entropy`` first, and only once every unlabelled image
has a score from the current weights (HTTP 409 until then: it never ranks unscored images).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np
import torch
from lib.request_checks import RequestRejected
from monai.bundle import ConfigParser
from monai.transforms import Activationsd
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks.activelearning.epistemic import Epistemic
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
    (5) and ``epistemic_max_samples`` (0: all) of ``conf``; ``None`` (with a warning) if its network cannot sample or
    it has no weights yet."""
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


def dropout_error(path: str, dropout: float) -> str | None:
    """Why the network of the bundle at ``path`` (its ``inference.json``'s ``network_def`` with ``dropout``) cannot
    be sampled by MC dropout, or ``None`` if it can; needs no weights."""
    try:
        parser = ConfigParser()
        parser.read_config(os.path.join(path, "configs", "inference.json"))
        parser["bundle_root"] = path
        parser["network_def"]["dropout"] = dropout
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as error:  # a network_def without a dropout argument, or one that fails to build
        return f"its network_def with dropout={dropout} cannot be built: {type(error).__name__}: {error}"
    if not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in network.modules()):
        return f"its network_def with dropout={dropout} has no dropout layer to sample with"
    return None


class EpistemicWhenTrained(ScoringMethod):
    """The MC-dropout scoring of one bundle that follows its weights: built from ``models/model.pt`` as soon as the
    bundle has them (at start, or after the first training through the app), without a restart; before that, a
    request for it is refused (HTTP 409, :meth:`not_ready`). Once built, each run scores with the current weights
    (MONAI Label reloads a changed ``model.pt``) and an image's ``epistemic_ts`` says which weights scored it.

    Args:
        path: the bundle folder (its network must take ``dropout``: :func:`dropout_error`).
        conf: the app's ``--conf`` settings (:func:`scoring_method`).
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        self.path, self.conf = path, conf
        self.name = os.path.basename(path)
        super().__init__(f"MC-dropout uncertainty of the unlabelled images by {self.name} (its current weights)")
        self._method: MCDropoutScoring | None = None
        self._lock = threading.Lock()

    def model_file(self) -> str | None:
        """The bundle's weights (``models/model.pt``, else ``models/model.ts``), as MONAI Label loads them."""
        for name in ("model.pt", "model.ts"):
            path = os.path.join(self.path, "models", name)
            if os.path.isfile(path):
                return path
        return None

    def model_ts(self) -> int | None:
        """The ``epistemic_ts`` a scoring with the current weights writes (their file's time), ``None`` without."""
        path = self.model_file()
        return int(os.stat(path).st_mtime) if path else None

    def not_ready(self) -> str | None:
        """Why the scoring cannot run now (no weights yet), or ``None``."""
        if self.model_file() is None:
            return (
                f"epistemic scoring: {self.name} has no weights yet (no models/model.pt); train it first "
                f"(POST /train/{self.name}), then score."
            )
        return None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "bundle": self.name, "ready": self.not_ready() is None}

    def method(self) -> MCDropoutScoring:
        """The scoring, built on first use once the weights exist (:class:`RequestRejected` 409 before)."""
        with self._lock:
            if self._method is None:
                reason = self.not_ready()
                if reason:
                    raise RequestRejected(reason, status_code=409)
                method = scoring_method(self.path, self.conf)
                if method is None:
                    raise RequestRejected(f"epistemic scoring: {self.name} cannot be scored (see the server log).")
                self._method = method
                logger.info(f"+++ Epistemic scoring by {self.name} from {self.model_file()}")
            return self._method

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        return self.method()(request, datastore)


class RankedEpistemic(Epistemic):
    """MONAI Label's ``Epistemic`` strategy (highest ``epistemic_entropy`` first, an image served recently last) that
    serves only ranked images: it refuses (HTTP 409, naming what is missing) while the bundle has no weights or while
    an unlabelled image has no score from the current weights (its ``epistemic_ts`` is not their file's time), instead
    of ranking unscored images as 0 in datastore order.

    Args:
        scoring: the scoring whose scores it ranks by.
    """

    def __init__(self, scoring: EpistemicWhenTrained) -> None:
        super().__init__(key="epistemic_entropy", desc=f"Most uncertain unlabelled image first ({scoring.name})")
        self.scoring = scoring

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        reason = self.scoring.not_ready()
        if reason:
            raise RequestRejected(f"epistemic strategy: nothing is ranked yet; {reason}", status_code=409)
        model_ts = self.scoring.model_ts()
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        unscored = sorted(i for i in images if datastore.get_image_info(i).get("epistemic_ts") != model_ts)
        if unscored:
            raise RequestRejected(
                f"epistemic strategy: {len(unscored)} of {len(images)} unlabelled images have no score from the "
                f"current {self.scoring.name} weights ({', '.join(unscored[:5])}{', ...' if len(unscored) > 5 else ''}"
                "); score them first (POST /scoring/epistemic; started now if MONAI_LABEL_AUTO_UPDATE_SCORING is "
                "on), or use the strategy 'random'.",
                status_code=409,
            )
        return super().__call__(request, datastore)
