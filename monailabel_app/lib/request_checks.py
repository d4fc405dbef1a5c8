"""Checks of what a request may hand the bundles: no request value reaches a bundle config as code.

MONAI Label copies request fields into a bundle's ``ConfigParser``: a train request's ``max_epochs`` becomes
``train#trainer#max_epochs``, ``device`` the config's ``device``, ``tracking_uri`` / ``tracking_experiment_name`` /
``tracking_run_name`` the tracking ids, ``tracking`` a settings name or file, each displayable config a config
value, ``run_id`` the id that is run, ``model_filename`` the checkpoint path, and this app adds the request's
``overrides``; an infer (or batch infer) request's ``device`` and displayable configs go into the inference config.
MONAI's config parser (1.6) evaluates every string that starts with ``$`` (Python), replaces a string that is
exactly ``@id`` by that item, loads ``%file::id`` macros and instantiates every object with a ``_target_`` key,
at any depth of lists and objects (``"a@b"`` and ``"@a b"`` stay strings). :func:`check_request` refuses, for
every field of a request (known or not, nested or not), a string that starts with ``$``, ``@`` or ``%`` and an
object with a ``_target_`` key, and checks the type of each field MONAI Label reads, raising
:class:`RequestRejected` (HTTP 400, naming the field). The app runs it in the server before a task starts
(``LabelEfficientApp.check_request``), so the answer to the request is the 400.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException

EXPRESSION_PREFIXES = ("$", "@", "%")  # monai.bundle: EXPR_KEY, ID_REF_KEY, MACRO_KEY
COMPONENT_KEY = "_target_"  # monai.bundle: an object with this key is instantiated
TRACKING_NAMES = ("", "none", "None", "mlflow")  # MONAI's predefined tracking settings, or none
CONFIG_ID = re.compile(r"^[A-Za-z_]\w*(?:(?:#|::)\w+)*$")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
GPUS = re.compile(r"^(?:all|\d+(?:,\d+)*)$")
KINDS = ("train", "infer", "batch_infer", "scoring")
NULLABLE = ("device", "gpus", "tracking", "tracking_uri", "tracking_experiment_name", "tracking_run_name", "overrides")


class RequestRejected(HTTPException):
    """A request the app refuses; MONAI Label's FastAPI endpoints answer it with ``status_code`` and ``detail``.

    Args:
        detail: what is wrong, naming the field.
        status_code: the HTTP status (400: a wrong value; 409: the app is not ready for it, e.g. no weights yet).
    """

    def __init__(self, detail: str, status_code: int = 400) -> None:
        super().__init__(status_code=status_code, detail=detail)


def check_config_value(value: Any, field: str) -> None:
    """Raise :class:`RequestRejected` if ``value`` (at any depth of lists and objects, keys included) holds a string
    that MONAI's config parser would evaluate, reference or load (``$...``, ``@...``, ``%...``) or an object it
    would instantiate (a ``_target_`` key). ``field`` names the value in the message (``overrides#lr#0``)."""
    if isinstance(value, str):
        if value.startswith(EXPRESSION_PREFIXES):
            raise RequestRejected(
                f"{field}: {value[:40]!r} is a config expression, reference or macro ({'/'.join(EXPRESSION_PREFIXES)}"
                " prefix); the app accepts plain values only."
            )
    elif isinstance(value, Mapping):
        if COMPONENT_KEY in value:
            raise RequestRejected(f"{field}: an object with {COMPONENT_KEY!r} would be instantiated; not accepted.")
        for key, item in value.items():
            check_config_value(key, f"{field} (key)")
            check_config_value(item, f"{field}#{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_config_value(item, f"{field}#{i}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _str_or_list(value: Any, ok: Callable[[str], bool]) -> bool:
    """A string accepted by ``ok``, or a non-empty list of such (MONAI Label takes the first of a list)."""
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, str) and ok(v) for v in items)


def _file_name(value: str) -> bool:
    return value == os.path.basename(value) and value not in ("", ".", "..") and "\\" not in value


# field -> (accepts the value?, what it must be); the fields MONAI Label 0.8.5 and this app read
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "device": (lambda v: _str_or_list(v, lambda s: True), "a device name (cpu, cuda, cuda:0) or a list of them"),
    "gpus": (lambda v: isinstance(v, str) and bool(GPUS.match(v)), "'all' or comma-separated GPU indices"),
    "multi_gpu": (lambda v: isinstance(v, bool), "true or false"),
    "force_multi_gpu": (lambda v: isinstance(v, bool), "true or false"),
    "pretrained": (lambda v: isinstance(v, bool), "true or false"),
    "use_unlabeled": (lambda v: isinstance(v, bool), "true or false"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "val_split": (lambda v: _is_number(v) and -1 <= v < 1, "a number in [-1, 1) (-1: the bundle's own split)"),
    "max_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "max_batch_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "max_samples": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "simulation_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "run_id": (lambda v: isinstance(v, str) and bool(CONFIG_ID.match(v)), "a config id such as 'run'"),
    "tracking": (lambda v: _str_or_list(v, lambda s: s in TRACKING_NAMES), f"one of {TRACKING_NAMES}"),
    "tracking_uri": (lambda v: isinstance(v, str), "a string"),
    "tracking_experiment_name": (lambda v: isinstance(v, str), "a string"),
    "tracking_run_name": (lambda v: isinstance(v, str), "a string"),
    "model_filename": (lambda v: _str_or_list(v, _file_name), "a file name in the bundle's models/ folder"),
    "label_tag": (lambda v: isinstance(v, str) and bool(NAME.match(v)), "a tag name (letters, digits, _ . -)"),
    "images": (lambda v: _str_or_list(v, bool), "'all', 'labeled', 'unlabeled' or a list of image ids"),
    "overrides": (lambda v: isinstance(v, Mapping), "an object of config id -> plain JSON value"),
}


def check_request(kind: str, request: Mapping[str, Any]) -> None:
    """Check every field of a ``kind`` request (``train``, ``infer``, ``batch_infer``, ``scoring``): the known fields
    of :data:`FIELDS` for their type, every field for config expressions, references, macros and components
    (:func:`check_config_value`). Raises :class:`RequestRejected` (HTTP 400) naming the first wrong field."""
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}; one of {KINDS}")
    if not isinstance(request, Mapping):
        raise RequestRejected(f"a {kind} request must be a JSON object, got {type(request).__name__}.")
    for field, value in request.items():
        check_config_value(field, f"{kind} request field name {field!r}")
        check_config_value(value, field)
        accepts, expected = FIELDS.get(field, (None, ""))
        if accepts is not None and not (value is None and field in NULLABLE) and not accepts(value):
            raise RequestRejected(f"{field}: must be {expected}, got {value!r:.60}.")


def install_task_check(check: Callable[[str, dict], None]) -> None:
    """Have ``check(kind, request)`` run in the server before MONAI Label starts a background task (a train, batch
    infer or scoring request without ``run_sync``; ``monailabel.utils.async_tasks.task.run_background_task``), so that
    its :class:`RequestRejected` becomes the HTTP answer instead of an ``ERROR`` status of a task process. Installed
    once per process; a later call replaces ``check`` (the app that is current)."""
    from monailabel.utils.async_tasks import task as async_task

    start = async_task.run_background_task
    original = getattr(start, "__wrapped__", start)

    def run_background_task(request: dict, method: str, callback: Callable | None = None, debug: bool = False) -> dict:
        check(method, request)
        return original(request, method, callback=callback, debug=debug)

    run_background_task.__wrapped__ = original  # type: ignore[attr-defined]
    async_task.run_background_task = run_background_task
