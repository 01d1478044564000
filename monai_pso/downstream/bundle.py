"""Helpers the classification, denoising and super-resolution bundles reference from their configs.

Examples
--------
>>> len(training_datalist("phantom:2d?patients=6&size=16", None, "real")) > 0
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from monai_pso.data import load_source
from monai_pso.downstream.training import CollectPredictions
from monai_pso.errors import ConfigurationError
from monai_pso.io import write_json_atomically

#: What a bundle trains on (its ``training_data`` setting).
TRAINING_DATA = ("real", "synthetic", "real+synthetic")


def training_datalist(dataset_source: str, synthetic_source: str | None = None, training_data: str = "real") -> list[dict[str, Any]]:
    """The training datalist of a bundle: real train split, a synthetic release, or both.

    Parameters
    ----------
    dataset_source
        SOURCE of the real data (its ``train`` split is used).
    synthetic_source
        A guarded release folder (``manifest.json``) or any SOURCE; needed unless ``training_data="real"``.
    training_data
        ``"real"``, ``"synthetic"`` or ``"real+synthetic"``.
    """
    from monai_pso.downstream.synthetic import ReleaseSynthetic

    if training_data not in TRAINING_DATA:
        raise ConfigurationError(f"training_data={training_data!r}: must be one of {', '.join(TRAINING_DATA)}")
    real = load_source(dataset_source).datalist("train") if "real" in training_data else []
    if training_data == "real":
        return real
    if not synthetic_source:
        raise ConfigurationError(f"training_data={training_data!r}: needs synthetic_source (a guarded release folder)")
    synthetic = ReleaseSynthetic(synthetic_source, tau=0.0)(None, None, 0, Path("."))  # type: ignore[arg-type]
    return real + [r.to_dict() for r in synthetic.records]


class MetricsWriter(CollectPredictions):
    """Evaluator handler: collects outputs and writes the task's summary (AUROC with DeLong CIs, or PSNR/SSIM/RMSE) as JSON.

    Parameters
    ----------
    task
        The bundle's :class:`~monai_pso.downstream.tasks.DownstreamTask`.
    output_file
        JSON file written when the evaluator completes (atomically).
    """

    def __init__(self, task, output_file: str | os.PathLike) -> None:
        super().__init__(task)
        self.output_file = Path(output_file)
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def write(self, engine: Engine) -> None:
        self.summary = self.task.summarize(self.outputs, self.targets)
        write_json_atomically(self.output_file, self.summary, default=float, allow_nan=True, sort_keys=False)
        engine.logger.info(f"metrics written to {self.output_file}")


class PredictionWriter:
    """Inference handler: stacks every batch's ``pred`` and writes ``predictions.npz`` (``pred``, ``item_id``)."""

    def __init__(self, output_file: str | os.PathLike) -> None:
        self.output_file = Path(output_file)
        self.preds: list[np.ndarray] = []
        self.ids: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        pred = engine.state.output["pred"].detach().cpu().numpy()
        self.preds.append(pred)
        self.ids += [str(i) for i in engine.state.batch.get("item_id", range(len(self.ids), len(self.ids) + len(pred)))]

    def write(self, engine: Engine) -> None:
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(self.output_file, pred=np.concatenate(self.preds), item_id=np.array(self.ids))
