"""Starting and ending the process group of a ``torchrun`` rank (the bundles' ``multi_gpu_train.json``) so that the
rank exits cleanly.

Why ending needs care (issue 14): with the gloo backend, collectives run on the process group's worker threads.
A worker thread drops its reference to a finished collective *after* the caller has returned from it; if that was
the last reference to a tensor that Python had handed in (the metrics' ``all_gather`` at validation does this),
the worker takes the GIL to free the tensor's Python object. When that happens after the interpreter has begun to
shut down, Python ends the worker thread inside a C++ destructor and the rank dies of ``std::terminate``
("terminate called without an active exception", SIGABRT) after a run that trained and saved everything (see
pytorch/pytorch#190489). ``torch.distributed.destroy_process_group`` alone does not prevent it: the worker threads
are joined only when the last reference to the group goes, and two things keep it: every
``DistributedDataParallel`` wrapper (its ``process_group``, reducer and logger), and the default arguments of
``torch.distributed.nn.functional`` (``group=group.WORLD``, bound when that module is first imported: ``import
monai`` imports it before any group exists, but a program that imports it only after ``init_process_group`` pins
the group for good). :func:`init_process_group` imports that module first, while ``group.WORLD`` is still ``None``;
:func:`destroy_process_group` waits for every rank, releases the wrappers' references and destroys the group, so
its worker threads are joined while the interpreter is fully alive.

Measured (``tests/torchrun_stress.py``, one core, two busy loops beside): see ``docs/developing.md``.
"""

from __future__ import annotations

import logging
import weakref

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["destroy_process_group", "init_process_group"]

logger = logging.getLogger(__name__)


def init_process_group() -> None:
    """``init_process_group`` with NCCL when CUDA is available, else gloo; nothing if a group exists already.

    ``torch.distributed.nn`` is imported first: its functions take ``group=group.WORLD`` as a default argument,
    evaluated at import, which would otherwise hold the default group alive past :func:`destroy_process_group`.
    """
    import torch.distributed.nn  # noqa: F401  (see above: must come before the group exists)

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def destroy_process_group(*modules: torch.nn.Module) -> bool:
    """End the rank's distributed state so that the process can exit cleanly.

    Waits for every rank (``barrier``: no rank tears down while another is still in a collective), drops the
    references that each :class:`~torch.nn.parallel.DistributedDataParallel` in ``modules`` holds to the process
    group (its ``reducer``, ``logger`` and ``process_group``; the wrappers cannot train afterwards, but their
    ``module`` and ``state_dict`` stay usable), then destroys the group. Other modules are ignored.

    Args:
        modules: the bundle's DDP-wrapped networks (e.g. ``@network``, ``@generator``, ``@discriminator``).

    Returns:
        whether the default group was freed (its worker threads joined); if something still references it, a
        warning says so, since the rank may then abort at exit.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return True
    dist.barrier()
    world = weakref.ref(dist.group.WORLD)
    for module in modules:
        if isinstance(module, DistributedDataParallel):
            module.reducer = None
            module.logger = None
            module.process_group = None
    dist.destroy_process_group()
    freed = world() is None
    if freed:
        logger.info("process group destroyed; its worker threads are joined")
    else:
        logger.warning(
            "the process group is still referenced after destroy_process_group (a DistributedDataParallel not "
            "passed to common.distributed.destroy_process_group?); its worker threads can abort this rank at exit"
        )
    return freed
