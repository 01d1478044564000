"""``MemorizationMonitor``: watch a generative model drift towards its training images while it trains.

Every ``interval`` epochs it calls ``sample_fn(n_samples)`` for fresh samples ``(M, 1, *spatial)`` in
``[0, 1]``, measures each one's distance to the training set with a
:class:`~monai_pso.guard.checker.PrivacyChecker`, and writes into ``engine.state.metrics`` (per check;
``<prefix><stat>`` for the first check, ``<prefix><check>_<stat>`` for the others):

- ``nn_min``, ``nn_p5``, ``nn_median``: the smallest, 5th percentile and median distance;
- ``rejection_rate``: the share of samples the guard would reject;
- ``implausible_rate`` (when the guard has a plausibility check): the share beyond its radius, far
  from every training image (the model's failures; it falls as the model learns).

Stock handlers log ``engine.state.metrics``, so ``StatsHandler``, ``TensorBoardStatsHandler`` or
``MLFlowHandler`` attached *after* the monitor report them with the epoch's other metrics.

Examples
--------
>>> monitor = MemorizationMonitor("GUARD_DIR", sample_fn=lambda m: sampler.sample(m), n_samples=32, interval=5)  # doctest: +SKIP
>>> monitor.attach(trainer)  # doctest: +SKIP
>>> StatsHandler(name="train").attach(trainer)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_pso.errors import MonaiPsoError
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.guard.folder import load_checker


class MemorizationMonitor:
    """Nearest-training-image distance statistics of fresh samples, every ``interval`` epochs.

    Parameters
    ----------
    guard
        A guard folder (``monai-pso guard build``) or a ready checker.
    sample_fn
        ``sample_fn(n) -> (n, 1, *spatial)`` tensor or array of new samples in ``[0, 1]``.
    n_samples
        Samples drawn per measurement.
    interval
        Measure every this many epochs.
    prefix
        Metric name prefix.
    index, threshold, embedder
        Instead of ``guard``: paired index folders and threshold files (:func:`~monai_pso.guard.folder.load_checker`).
    """

    def __init__(
        self,
        guard: str | Path | PrivacyChecker | None = None,
        sample_fn: Callable[[int], torch.Tensor | np.ndarray] | None = None,
        n_samples: int = 16,
        interval: int = 1,
        prefix: str = "memorization_",
        *,
        index: Any = None,
        threshold: Any = None,
        embedder: Any = None,
    ) -> None:
        if sample_fn is None:
            raise MonaiPsoError("MemorizationMonitor needs a sample_fn")
        if n_samples < 1 or interval < 1:
            raise MonaiPsoError(f"n_samples and interval must be >= 1, got {n_samples}, {interval}")
        self.checker = load_checker(guard, index=index, threshold=threshold, embedder=embedder)
        self.sample_fn, self.n_samples, self.interval, self.prefix = sample_fn, n_samples, interval, prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def measure(self) -> dict[str, float]:
        """Draw ``n_samples`` samples and return the metrics (see the module docstring)."""
        with torch.no_grad():
            samples = self.sample_fn(self.n_samples)
        decisions = self.checker.decide(samples)
        metrics = {}
        for k, check in enumerate(self.checker.checks):
            distances = decisions.distances[check.name]
            name = self.prefix if k == 0 else f"{self.prefix}{check.name}_"
            metrics[f"{name}nn_min"] = float(distances.min())
            metrics[f"{name}nn_p5"] = float(np.percentile(distances, 5))
            metrics[f"{name}nn_median"] = float(np.median(distances))
            metrics[f"{name}rejection_rate"] = float(np.mean(distances < check.tau))
        metrics[f"{self.prefix}guard_rejection_rate"] = float(np.mean(~decisions.released))
        if self.checker.plausibility is not None:
            metrics[f"{self.prefix}implausible_rate"] = float(np.mean(decisions.implausible))
        return metrics

    def __call__(self, engine: Engine) -> None:
        engine.state.metrics.update(self.measure())
