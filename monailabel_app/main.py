"""A MONAI Label app for this collection: every bundle serves masks, and every bundle trains through the server on
what its method needs, the final labels and the images nobody has labelled yet (``lib/train.py``).

Start it from the repository root, in the server's environment (docs/monailabel.md)::

    monailabel start_server --app monailabel_app --studies /data/images --conf models af_seg,adversarial_semi_seg

Settings (``--conf key value``):

- ``models``: the bundles to serve, comma-separated folder names (default ``all``);
- ``bundles_dir``: where they are (default: the repository's ``bundles/`` next to this app), used in place, so
  training writes ``models/model.pt`` into the served bundle and the next inference uses it;
- ``skip_trainers``: ``true`` serves inference only;
- ``dicom_series``: ``false`` leaves DICOM series under ``--studies`` alone; by default each series folder is served
  as one image, converted once to ``<studies>/<id>.nii.gz`` with the series' geometry (``lib/dicom_studies.py``),
  so its masks are stored in that geometry: at start, and for series added later before each next-sample, train,
  batch-infer and scoring request;
- ``epistemic_model``: a served bundle whose network takes ``dropout`` (the U-Net bundles): MC-dropout scoring of the
  unlabelled images (``POST /scoring/epistemic``) and the strategy ``epistemic``, most uncertain image first
  (``lib/scoring.py``; ``epistemic_dropout`` 0.2, ``epistemic_simulation_size`` 5, ``epistemic_max_samples`` 0: all).

A bundle without ``models/model.pt`` (a fresh checkout: weights are not in git) is trainable, and is served for
inference, and scores for the ``epistemic`` strategy, as soon as a training has written its ``models/model.pt``
(before that, scoring and the strategy answer HTTP 409 saying so; the strategy also answers 409 while an unlabelled
image has no score from the current weights). Batch pre-annotation of the unlabelled images is MONAI Label's own
batch inference (``POST /batch/infer/<model>?images=unlabeled``), which stores each mask as a non-final label (tag
``original``). Every train, infer, batch infer and scoring request is checked before it runs
(``lib/request_checks.py``): a value that a bundle config would evaluate, reference or instantiate, or one of the
wrong type, is refused with HTTP 400 naming the field.
"""

from __future__ import annotations

import logging
import os
import threading

import monailabel
from lib.bundles import bundle_folders
from lib.dicom_studies import convert_series
from lib.request_checks import RequestRejected, check_request, install_task_check
from lib.scoring import EpistemicWhenTrained, RankedEpistemic, dropout_error
from lib.train import LabelEfficientTrainTask
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
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
        self.epistemic = self._epistemic_scoring(conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"Label-efficient segmentation bundles (MONAI Label {monailabel.__version__})",
            description="Label-free and semi-supervised segmentation bundles: pre-annotate, correct, retrain",
            version=monailabel.__version__,
        )
        install_task_check(self.check_request)

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

    def check_request(self, kind: str, request: dict) -> None:
        """Refuse a ``kind`` request (``train``, ``infer``, ``batch_infer``, ``scoring``) before it runs, with
        ``RequestRejected`` (its HTTP status and message): a value the bundle config would evaluate or the wrong type
        (``lib/request_checks.py``), a train ``overrides`` id the bundle does not have, a scoring method without
        weights yet (409). Runs in the server for every such request (``install_task_check`` for the background
        ones) and again in the task's process."""
        check_request(kind, request)
        if kind == "train":
            task = self._trainers.get(request.get("model"))
            if isinstance(task, LabelEfficientTrainTask) and request.get("overrides") is not None:
                task.check_overrides(request["overrides"])
        elif kind == "scoring":
            method = self._scoring_methods.get(request.get("method"))
            reason = method.not_ready() if isinstance(method, EpistemicWhenTrained) else None
            if reason:
                raise RequestRejected(reason, status_code=409)

    _dicom_lock = threading.Lock()  # one conversion at a time in this process (requests run in threads)

    def sync_dicom_series(self) -> None:
        """Serve the DICOM series under ``--studies`` as images (``lib/dicom_studies.py``; off with ``--conf
        dicom_series false``): convert the new or changed ones (the manifest skips the others) and refresh the
        datastore when one was written. At start and before each request that lists the datastore's images, so a
        series copied in while the server runs is served without a restart."""
        datastore = self.datastore()
        if not isinstance(datastore, LocalDatastore) or not strtobool(self.conf.get("dicom_series", "true")):
            return
        with self._dicom_lock:
            if convert_series(self.studies, labels_dir=datastore._datastore.labels_dir):
                datastore.refresh()

    def infer(self, request: dict, datastore: Datastore | None = None) -> dict:
        self.check_request("infer", request)
        if request.get("model") not in self._infers:
            self._add_trained_infers(self._infers)
        return super().infer(request, datastore)

    def batch_infer(self, request: dict, datastore: Datastore | None = None) -> dict:
        self.check_request("batch_infer", request)
        self.sync_dicom_series()
        if request.get("model") not in self._infers:
            self._add_trained_infers(self._infers)
        return super().batch_infer(request, datastore)

    def train(self, request: dict) -> dict:
        self.check_request("train", request)
        self.sync_dicom_series()
        return super().train(request)

    def scoring(self, request: dict, datastore: Datastore | None = None) -> dict:
        self.check_request("scoring", request)
        self.sync_dicom_series()
        return super().scoring(request, datastore)

    def next_sample(self, request: dict) -> dict:
        """MONAI Label's next sample; when the strategy refuses because images are not scored yet (``epistemic``,
        HTTP 409), the automatic rescoring (``MONAI_LABEL_AUTO_UPDATE_SCORING``) is started before the refusal is
        answered, so that a later request is served."""
        self.sync_dicom_series()
        try:
            return super().next_sample(request)
        except RequestRejected:
            if self._auto_update_scoring:
                self.async_scoring(None)
            raise

    def async_scoring(self, method: str | None, params: dict | None = None) -> dict:
        """MONAI Label's automatic rescoring (at start, after a training, after a next sample), for the methods that
        can run now: a bundle without weights yet is skipped (logged) instead of failing."""
        methods = [method] if method else list(self._scoring_methods)
        ready = []
        for name in methods:
            task = self._scoring_methods.get(name)
            reason = task.not_ready() if isinstance(task, EpistemicWhenTrained) else None
            if reason:
                logger.info(f"Automatic scoring skipped: {reason}")
            else:
                ready.append(name)
        result = {name: super(LabelEfficientApp, self).async_scoring(name, params) for name in ready}
        return result.get(method, {}) if method else result

    def on_init_complete(self) -> None:
        """At server start: serve the DICOM series under ``--studies`` as images (:meth:`sync_dicom_series`), then
        MONAI Label's own start (automatic scoring, session cleanup)."""
        self.sync_dicom_series()
        super().on_init_complete()

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
        if self.epistemic is not None:
            strategies["epistemic"] = RankedEpistemic(self.epistemic)
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"epistemic": self.epistemic} if self.epistemic is not None else {}

    def _epistemic_scoring(self, conf: dict[str, str]) -> EpistemicWhenTrained | None:
        """The MC-dropout scoring of ``--conf epistemic_model`` (``None`` without it, or, logged, when its network
        cannot take ``dropout``); it follows the bundle's weights, so it is registered with or without them."""
        name = conf.get("epistemic_model")
        if not name:
            return None
        if name not in self.bundles:
            raise ValueError(f"epistemic_model {name} is not one of the served bundles {list(self.bundles)}")
        error = dropout_error(self.bundles[name], float(conf.get("epistemic_dropout", "0.2")))
        if error:
            logger.warning(f"{name}: no MC-dropout scoring and no epistemic strategy ({error})")
            return None
        scoring = EpistemicWhenTrained(self.bundles[name], conf)
        reason = scoring.not_ready()
        if reason:
            logger.warning(f"{reason} Until then scoring and the epistemic strategy answer 409.")
        return scoring
