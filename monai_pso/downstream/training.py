"""Training with a fixed step budget and evaluation on a test set, on :mod:`monai.engines`.

The three arms of the study (real, synthetic, real+synthetic) must get the same budget: the same
number of optimisation steps at the same batch size, whatever the size of their training set. A
with-replacement sampler of ``steps * batch_size`` cases and one epoch gives exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import CacheDataset, DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import StatsHandler
from torch.utils.data import RandomSampler

from monai_pso.downstream.tasks import DownstreamTask


class CollectPredictions:
    """Ignite handler keeping every evaluated case's task output and target (NumPy, in order).

    Shaped like :class:`monai.handlers.MetricsSaver`: ``attach(engine)``; after the run, ``outputs``
    and ``targets`` hold the stacked arrays.

    Parameters
    ----------
    task
        Turns network output into what is evaluated (:meth:`DownstreamTask.outputs`).
    """

    def __init__(self, task: DownstreamTask) -> None:
        self.task = task
        self._outputs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, _: Engine) -> None:
        self._outputs, self._targets = [], []

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        self._outputs.append(self.task.outputs(output["pred"].detach().float()).cpu().numpy())
        self._targets.append(output["label"].detach().cpu().numpy())

    @property
    def outputs(self) -> np.ndarray:
        return np.concatenate(self._outputs)

    @property
    def targets(self) -> np.ndarray:
        return np.concatenate(self._targets)


def make_dataset(task: DownstreamTask, datalist: Sequence[dict[str, Any]], cache: bool = True) -> Dataset:
    """A MONAI dataset of ``datalist`` with the task's preprocessing (deterministic part cached)."""
    if cache:
        return CacheDataset(list(datalist), task.transforms(), progress=False, num_workers=0)
    return Dataset(list(datalist), task.transforms())


def materialize(task: DownstreamTask, datalist: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Preprocess every entry once with fixed random state (so that every network sees the same test inputs).

    Examples
    --------
    >>> from monai_pso.data import load_source
    >>> from monai_pso.downstream.tasks import make_task
    >>> cases = materialize(make_task("denoising"), load_source("phantom:2d?patients=3&size=16").datalist())
    >>> tuple(cases[0]["degraded"].shape)
    (1, 16, 16)
    """
    transform = task.transforms()
    transform.set_random_state(seed=seed)
    return [{k: v for k, v in transform(dict(entry)).items() if k in (task.input_key, task.target_key)} for entry in datalist]


def make_trainer(
    task: DownstreamTask,
    network: torch.nn.Module,
    dataset: Dataset,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    device: str | torch.device = "cpu",
    seed: int = 0,
    show_progress: bool = False,
) -> SupervisedTrainer:
    """A :class:`monai.engines.SupervisedTrainer` running exactly ``steps`` optimisation steps.

    Examples
    --------
    >>> from monai_pso.data import load_source
    >>> from monai_pso.downstream.tasks import make_task
    >>> task = make_task("classification")
    >>> net = task.network()
    >>> data = make_dataset(task, load_source("phantom:2d?patients=4&size=16").datalist("train"))
    >>> trainer = make_trainer(task, net, data, steps=2, batch_size=2)
    >>> trainer.run(); trainer.state.iteration
    2
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * batch_size, generator=generator)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=True)
    network = network.to(device)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=learning_rate),
        loss_function=task.loss(),
        prepare_batch=task.prepare_batch,
        decollate=False,
        amp=False,
        train_handlers=[StatsHandler(tag_name="train_loss", output_transform=lambda out: out["loss"].item(), iteration_log=max(1, steps // 10))]
        if show_progress
        else None,
    )
    return trainer


def evaluate(task: DownstreamTask, network: torch.nn.Module, cases: Sequence[dict[str, Any]], batch_size: int = 32, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Run a :class:`monai.engines.SupervisedEvaluator` on ``cases``; returns ``(outputs, targets)`` in case order."""
    loader = DataLoader(list(cases), batch_size=batch_size, shuffle=False, num_workers=0)
    evaluator = SupervisedEvaluator(device=torch.device(device), val_data_loader=loader, network=network.to(device), prepare_batch=task.prepare_batch, decollate=False)
    collector = CollectPredictions(task)
    collector.attach(evaluator)
    evaluator.run()
    return collector.outputs, collector.targets
