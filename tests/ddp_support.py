"""Two-process ``torch.distributed`` runs on CPU (gloo) for the tests: a free loopback port and a bundle worker."""

from __future__ import annotations

import os
import socket

import torch
from monai.bundle import run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bundle_worker(rank: int, world: int, port: int, files: list[str], overrides: dict) -> None:
    """Run bundle ``files`` as rank ``rank`` of ``world`` (``torch.multiprocessing.spawn`` target), one thread each."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run(config_file=files, **overrides)
