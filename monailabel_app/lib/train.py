"""Training through MONAI Label with what each method needs: the final labels *and* the unlabelled images.

MONAI Label's ``BundleTrainTask`` hands a bundle only the images with a final label (``train#dataset#data``,
``validate#dataset#data``), so label-free bundles cannot train and semi-supervised ones train without their
unlabelled data. This task keeps its split of the labelled images (``val_split``) and writes them, with every image
of the datastore that has no final label, into a datalist file in the bundle's own layout, which the bundle reads
exactly as a command-line run does (``datalist_file``; ``common.data.prepare_datalists``):

- ``training``: the labelled images (or, when none has a final label, the unlabelled images: the label-free path of
  ``af_seg`` and ``acwe_unsup_seg``);
- ``validation``: the labelled images held out by ``val_split``;
- ``unlabeled``: the images without a final label (pre-annotations, tag ``original``, do not count as labels).

The bundle's own splits are switched off (``val_fraction``, ``test_fraction`` 0, ``labelled_fraction`` 1), so every
final label trains or validates. With labelled images but none held out for validation (``val_split`` 0), the
bundle is set to keep its last network instead of the best validation one and never to validate (an empty
validation list would fail): ``select_by_key_metric`` false and ``val_interval`` ``max_epochs + 1``, each where the
bundle's config has that key (the label-free path is left alone: ``af_seg`` and ``acwe_unsup_seg`` validate on their
own monitor images). Every training is a new run (``resume`` false: MONAI Label starts it from ``models/model.pt``),
and ``unlabeled_batch_size`` is lowered to the number of unlabelled images when there are fewer. A request may also
carry ``"overrides": {config id: value}`` (plain JSON values: ``lib/request_checks.py``), which win,
e.g. ``{"overrides": {"unlabeled_batch_size": 2}}`` or ``{"overrides": {"resume": true}}`` to continue a stopped run.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from lib.request_checks import RequestRejected, check_config_value
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from common.atomic_write import write_json_atomic

logger = logging.getLogger(__name__)

DATALIST_NAME = "monailabel_datalist.json"


def build_datalist(
    labelled_train: list[dict], labelled_val: list[dict] | None, unlabelled: list[dict]
) -> dict[str, list[dict]]:
    """The datalist handed to the bundle: labelled training and validation items, and the unlabelled images (as the
    training list when no image has a final label, the label-free layout of ``common.data.prepare_datalists``)."""
    if not labelled_train and not labelled_val:
        return {"training": list(unlabelled), "validation": [], "unlabeled": []}
    return {"training": list(labelled_train), "validation": list(labelled_val or []), "unlabeled": list(unlabelled)}


class TrainingFailed(RuntimeError):
    """A training through the app that raised (its message is the innermost cause, see ``run_single_gpu``), or a
    multi-GPU training whose ``torchrun`` failed (its return code and last lines, see ``run_multi_gpu``)."""


class LabelEfficientTrainTask(BundleTrainTask):
    """``BundleTrainTask`` that also passes the datastore's unlabelled images to the bundle (see the module docs).

    Args:
        path: the bundle folder.
        conf: the app's ``--conf`` settings.
        kwargs: passed to ``BundleTrainTask``.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, **kwargs)
        self._datastore: Datastore | None = None
        self._request: dict = {}

    def config(self) -> dict[str, Any]:
        options = super().config()
        options["use_unlabeled"] = True
        return options

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        self._datastore, self._request = datastore, request
        try:
            return super().__call__(request, datastore)
        finally:
            self._datastore, self._request = None, {}

    def run_single_gpu(self, request: dict, overrides: dict) -> None:
        """MONAI Label's training run, with a failure's root cause as the last line of the task's output.

        A bundle's data errors (a label with 3 channels, an unreadable file) are raised while its config is parsed, and
        MONAI's parser wraps them in ``RuntimeError: Failed to evaluate ConfigExpression``, so the traceback's last
        lines, all that ``GET /train/`` shows (its ``details`` keep 20 lines), never named the file. The whole
        traceback goes to the log first; then one short error whose message is the innermost cause ends the output.
        """
        try:
            super().run_single_gpu(request, overrides)
        except Exception as error:
            cause: BaseException = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
            logger.exception(f"{os.path.basename(self.bundle_path)}: training failed")
            raise TrainingFailed(
                f"{os.path.basename(self.bundle_path)}: training failed: {type(cause).__name__}: {cause}"
            ) from None

    def run_multi_gpu(self, request: dict, cmd: Sequence[str], env: Mapping[str, str]) -> None:
        """MONAI Label's ``torchrun`` training, its output streamed to the log as there, but failing when ``torchrun``
        fails: MONAI Label's ``BundleTrainTask`` logs the return code and reports the training finished, so a
        multi-GPU run that crashed (out of memory, a data error on one rank) looked like a success over HTTP."""
        logger.info(f"RUNNING COMMAND:: {list(cmd)}")
        last: deque[str] = deque(maxlen=10)
        with subprocess.Popen(
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(env)
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    print(line, flush=True)
                    last.append(line)
        logger.info(f"Return code: {process.returncode}")
        if process.returncode != 0:
            lines = "\n".join(last)
            raise TrainingFailed(
                f"{os.path.basename(self.bundle_path)}: multi-GPU training failed (torchrun return code "
                f"{process.returncode}); its last lines:\n{lines}"
            )

    def unlabelled_items(self) -> list[dict]:
        """``{"image": path}`` for every image of the datastore without a final label, sorted by image id."""
        if self._datastore is None or not self._request.get("use_unlabeled", True):
            return []
        ids = sorted(self._datastore.get_unlabeled_images())
        return [{"image": self._datastore.get_image_uri(i)} for i in ids]

    def _no_validation_overrides(self, overrides: dict) -> dict[str, Any]:
        """The overrides for labelled training without a validation image: keep the last network
        (``select_by_key_metric`` false) and validate after no epoch (``val_interval`` ``max_epochs + 1``), each only
        where the bundle's config has that key."""
        changes: dict[str, Any] = {}
        if "select_by_key_metric" in self.bundle_config:
            changes["select_by_key_metric"] = False
        max_epochs = overrides.get(self.const.key_train_trainer_max_epochs())
        if "val_interval" in self.bundle_config and max_epochs is not None:
            changes["val_interval"] = int(max_epochs) + 1
        if changes:
            logger.info(
                f"{os.path.basename(self.bundle_path)}: no labelled image held out for validation, so the bundle does "
                f"not validate and keeps its last network: {changes}"
            )
        return changes

    def _new_run_overrides(self, num_unlabelled: int) -> dict[str, Any]:
        """Every training through the app is a new run on the datastore's current labels: ``resume`` false (MONAI
        Label starts it from ``models/model.pt``, its ``pretrained``; an older run's ``checkpoint_epoch=N.pt`` would
        otherwise make it resume at epoch N and, with the same ``max_epochs``, train nothing), and an
        ``unlabeled_batch_size`` above the number of unlabelled images lowered to that number (the semi-supervised
        bundles draw full unlabelled batches only). Each only where the bundle's config has the key."""
        changes: dict[str, Any] = {}
        if "resume" in self.bundle_config:
            changes["resume"] = False
            logger.info(f"{os.path.basename(self.bundle_path)}: a new run (resume false), not a resumed one")
        batch = self.bundle_config.get("unlabeled_batch_size")
        if isinstance(batch, int) and 0 < num_unlabelled < batch:
            changes["unlabeled_batch_size"] = num_unlabelled
            logger.info(
                f"{os.path.basename(self.bundle_path)}: {num_unlabelled} unlabelled images, fewer than its "
                f"unlabeled_batch_size {batch}: batches of {num_unlabelled}"
            )
        return changes

    def _update_overrides(self, overrides: dict) -> dict:
        train = overrides.pop(self.const.key_train_dataset_data(), [])
        val = overrides.pop(self.const.key_validate_dataset_data(), None)
        unlabelled = self.unlabelled_items()
        datalist = build_datalist(train, val, unlabelled)
        folder = os.path.join(self.bundle_path, "outputs")
        path = os.path.join(folder, DATALIST_NAME)
        write_json_atomic(path, datalist)
        logger.info(
            f"Datalist for {os.path.basename(self.bundle_path)}: {len(train)} labelled for training, "
            f"{len(val or [])} for validation, {len(unlabelled)} unlabelled images -> {path}"
        )
        overrides.update(
            {
                "dataset_dir": folder,
                "datalist_file": path,
                "val_fraction": 0.0,
                "test_fraction": 0.0,
                "labelled_fraction": 1.0,
            }
        )
        if train and not val:
            overrides.update(self._no_validation_overrides(overrides))
        overrides.update(self._new_run_overrides(len(unlabelled)))
        extra = self._request.get("overrides") or {}
        self.check_overrides(extra)
        overrides.update(extra)
        return overrides

    def check_overrides(self, extra: Any) -> None:
        """Raise ``RequestRejected`` (HTTP 400) unless ``extra`` (a request's ``overrides``) maps config ids of the
        bundle's train config to plain JSON values (``lib/request_checks.py``)."""
        if not isinstance(extra, Mapping):
            raise RequestRejected(f"overrides: must be an object of config id -> value, got {type(extra).__name__}.")
        for key, value in extra.items():
            check_config_value(key, "overrides (key)")
            check_config_value(value, f"overrides#{key}")
            if key not in self.bundle_config:
                raise RequestRejected(
                    f"overrides#{key}: no such config id in {os.path.basename(self.bundle_path)}'s "
                    f"{os.path.basename(self.bundle_config_path)}."
                )
