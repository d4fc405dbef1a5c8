"""A MONAI Label app for this collection: every bundle serves masks, and every bundle trains through the server on
what its method needs, the final labels and the images nobody has labelled yet (``lib/train.py``).

Start it from the repository root, in the server's environment (docs/monailabel.md)::

    monailabel start_server --app monailabel_app --studies /data/images --conf models af_seg,adversarial_semi_seg

Settings (``--conf key value``):

- ``models``: the bundles to serve, comma-separated folder names (default ``all``);
- ``bundles_dir``: where they are (default: the repository's ``bundles/`` next to this app), used in place, so
  training writes ``models/model.pt`` into the served bundle and the next inference uses it;
- ``skip_trainers``: ``true`` serves inference only;
- ``epistemic_model``: a served bundle whose network takes ``dropout`` (the U-Net bundles): MC-dropout scoring of the
  unlabelled images (``POST /scoring/epistemic``) and the strategy ``epistemic``, most uncertain image first
  (``lib/scoring.py``; ``epistemic_dropout`` 0.2, ``epistemic_simulation_size`` 5, ``epistemic_max_samples`` 0: all).

A bundle without ``models/model.pt`` (a fresh checkout: weights are not in git) is trainable, and is served for
inference as soon as a training has written its ``models/model.pt``. Batch pre-annotation of the unlabelled images
is MONAI Label's own batch inference (``POST /batch/infer/<model>?images=unlabeled``), which stores each mask as a
non-final label (tag ``original``).
"""

from __future__ import annotations

import logging
import os

import monailabel
from lib.bundles import bundle_folders
from lib.scoring import scoring_method
from lib.train import LabelEfficientTrainTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)


class LabelEfficientApp(MONAILabelApp):
    """Serves the bundles of ``bundles_dir`` (see the module docs) for inference, training and pre-annotation.

    Args:
        app_dir: this folder.
        studies: the image folder (MONAI Label's datastore).
        conf: the ``--conf`` settings.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = bundle_folders(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"Label-efficient segmentation bundles (MONAI Label {monailabel.__version__})",
            description="Label-free and semi-supervised segmentation bundles: pre-annotate, correct, retrain",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        self._add_trained_infers(infers)
        for name in self.bundles:
            if name not in infers:
                logger.warning(f"{name}: no models/model.pt yet; served for inference once a training has written it")
        return infers

    def _add_trained_infers(self, infers: dict[str, InferTask]) -> None:
        """Add an inference task for every bundle that has an inference config and ``models/model.pt`` but no task
        yet (so a bundle trained through the server for the first time serves masks without a restart)."""
        for name, path in self.bundles.items():
            ready = os.path.isfile(os.path.join(path, "configs", "inference.json")) and os.path.isfile(
                os.path.join(path, "models", "model.pt")
            )
            if name in infers or not ready:
                continue
            task = BundleInferTask(path, self.conf)
            if task.is_valid():
                infers[name] = task
                logger.info(f"+++ Serving {name} for inference")

    def info(self) -> dict:
        self._add_trained_infers(self._infers)
        return super().info()

    def infer(self, request: dict, datastore=None) -> dict:
        if request.get("model") not in self._infers:
            self._add_trained_infers(self._infers)
        return super().infer(request, datastore)

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.bundles.items():
            task = LabelEfficientTrainTask(path, self.conf)
            if not task.is_valid():
                continue
            if "datalist_file" not in task.bundle_config:  # its train.json does not read a datalist (own data only)
                logger.warning(f"{name}: its train.json has no datalist_file; trained from the command line only")
                continue
            trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        if self.conf.get("epistemic_model"):
            strategies["epistemic"] = Epistemic()
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        name = self.conf.get("epistemic_model")
        if not name:
            return {}
        if name not in self.bundles:
            raise ValueError(f"epistemic_model {name} is not one of the served bundles {list(self.bundles)}")
        method = scoring_method(self.bundles[name], self.conf)
        return {"epistemic": method} if method is not None else {}
