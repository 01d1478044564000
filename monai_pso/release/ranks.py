"""The few collective steps a release written by several ranks (``torchrun``) needs.

Without an initialised ``torch.distributed`` process group every function is the single-process case:
rank 0 of 1, :func:`share` returns its argument, :func:`gather` a one-element list.

Examples
--------
>>> rank_and_world()
(0, 1)
>>> share("staging"), gather({"rows": 3})
('staging', [{'rows': 3}])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _group_ready() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # torch built without distributed support
        return False
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (``(0, 1)`` without a process group)."""
    if not _group_ready():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def share(value: Any) -> Any:
    """Rank 0's ``value``, on every rank (the other ranks' arguments are ignored)."""
    if not _group_ready():
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not _group_ready():
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


@contextmanager
def process_group_from_env() -> Iterator[None]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), a process group for the block; else nothing.

    The backend is ``nccl`` when CUDA is available, else ``gloo``. A group initialised by the caller is used as is.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _group_ready():
        yield
        return
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()
