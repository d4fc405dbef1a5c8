"""A two-rank program (``torchrun --nproc_per_node=2 tests/gloo_teardown.py old|new``) that ends as the bundles'
``multi_gpu_train.json`` ended before issue 14 (``old``) or as they end now (``new``), with what makes the race
likely: the last collective, as at the end of a bundle's validation, is an ``all_gather`` into Python tensors.

``old``: ``torch.distributed.destroy_process_group()`` while a ``DistributedDataParallel`` still holds the group, so
its gloo worker threads live on into interpreter shutdown, where the one still releasing the ``all_gather``'s
tensors aborts the rank ("terminate called without an active exception"). ``new``:
``common.distributed.destroy_process_group(net)``, after which no worker thread is left.
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from common.distributed import destroy_process_group, init_process_group

init_process_group()
net = DistributedDataParallel(torch.nn.Linear(4, 2))
net(torch.ones(2, 4)).sum().backward()
gathered = [torch.empty(1000) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, torch.ones(1000))  # what the metrics' aggregation does at validation
del gathered
if sys.argv[1] == "old":
    dist.destroy_process_group()
else:
    destroy_process_group(net)
