"""Exponential moving average of a network's weights, on ``torch.optim.swa_utils.AveragedModel``."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_of(model: torch.nn.Module, decay: float = 0.999) -> AveragedModel:
    """An EMA copy of ``model`` (unwrapping DDP); update it with ``ema.update_parameters(model)``.

    Its ``state_dict()`` holds tensors only, so checkpoints load with ``torch.load(..., weights_only=True)``;
    the averaged network is ``ema.module``.

    Examples
    --------
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = ema_of(net, 0.5)
    >>> ema.update_parameters(net); int(ema.n_averaged)
    1
    """
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
