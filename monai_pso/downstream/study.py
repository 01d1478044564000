"""The real-versus-synthetic study: does a network trained on the guarded synthetic release do as well?

Steps (:func:`run_study`): split the SOURCE by patient into train / holdout (the source's ``val``) /
test; obtain a guarded synthetic set the size of train from a :class:`~monai_pso.downstream.synthetic.SyntheticProvider`
(which trains the generator on train and calibrates tau on the holdout, or reads a finished release);
verify by brute force that no synthetic image lies within tau of a training image; train the task's
network on (a) real, (b) synthetic, (c) real+synthetic with the same number of optimisation steps;
evaluate all three on the same real test cases; compare with paired statistics; write the report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import set_determinism

from monai_pso.data import DataSource, load_image, load_source
from monai_pso.downstream.guard_check import recheck_with_guard, verify_no_image_within
from monai_pso.downstream.synthetic import SyntheticProvider, SyntheticSet
from monai_pso.downstream.tasks import DownstreamTask, make_task
from monai_pso.downstream.training import evaluate, make_dataset, make_trainer, materialize
from monai_pso.errors import MonaiPsoError

#: Training sets compared; the first is the reference.
ARMS = ("real", "synthetic", "real+synthetic")


@dataclass
class StudyConfig:
    """Settings of one study.

    Parameters
    ----------
    data
        SOURCE string (or a :class:`~monai_pso.data.DataSource`) of the real dataset (its ``val`` split is the holdout used to calibrate tau).
    task
        ``classification``, ``denoising`` or ``super_resolution``.
    task_options
        Passed to :func:`monai_pso.downstream.tasks.make_task` (``spatial_dims``, ``num_classes``, ``mode``,
        ``dose``, ``factor``, ``image_size``, ...).
    steps, batch_size, learning_rate
        The budget, identical for every arm.
    """

    data: str | DataSource
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    max_examples: int = 4


def _verify(task: DownstreamTask, synthetic: SyntheticSet, synthetic_list: list[dict[str, Any]], train: DataSource, embedder: Any | None) -> dict[str, Any]:
    """Brute-force re-check of the synthetic set against every training image.

    When the provider says which checks certified the set, each is re-run on the images as stored, as
    the guard measures it (its embedder, its threshold's query views and tau, the training images
    re-embedded; :func:`~monai_pso.downstream.guard_check.recheck_with_guard`); ``violations`` counts
    the images within tau in any check. Otherwise the images as the task loads them are compared with
    ``embedder`` (or RMS pixel difference), without query views.
    """
    item_ids = [entry["item_id"] for entry in synthetic_list]
    if not synthetic.checks:
        return verify_no_image_within(task.load_images(synthetic_list), task.load_images(train.datalist()), synthetic.tau, embedder, item_ids)
    synthetic_images = np.stack([load_image(record) for record in synthetic.records])
    training_images = np.stack([load_image(record) for record in train])
    return recheck_with_guard(synthetic_images, training_images, synthetic.checks, item_ids)


def _train_arm(task: DownstreamTask, datalist: list[dict[str, Any]], config: StudyConfig) -> torch.nn.Module:
    set_determinism(seed=config.seed)
    network = task.network()
    trainer = make_trainer(task, network, make_dataset(task, datalist), config.steps, config.batch_size, config.learning_rate, config.device, config.seed)
    trainer.run()
    return network


def run_study(config: StudyConfig, provider: SyntheticProvider, out_dir: str | Path, embedder: Any | None = None) -> dict[str, Any]:
    """Run the study and write ``report.json``, ``report.md`` and figures into ``out_dir``.

    Examples
    --------
    >>> from monai_pso.downstream.synthetic import StandInSynthetic
    >>> cfg = StudyConfig("phantom:2d?patients=12&size=16", steps=2, batch_size=4)
    >>> report = run_study(cfg, StandInSynthetic("phantom:2d?patients=12&size=16&seed=9"), tempfile.mkdtemp())  # doctest: +SKIP
    """
    from monai_pso.downstream.report import write_report

    started = time.time()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(config.task, **config.task_options)
    source = load_source(config.data)
    train, holdout, test = source.split("train"), source.split("val"), source.split("test")
    for name, part in (("train", train), ("holdout (val)", holdout), ("test", test)):
        if len(part) == 0:
            raise MonaiPsoError(f"{config.data}: the {name} split is empty; the study needs train, val and test patients")
    synthetic: SyntheticSet = provider(train, holdout, len(train), out)
    if not synthetic.records:
        raise MonaiPsoError(f"{synthetic.description}: the synthetic set is empty")
    if synthetic.tau is None:
        raise MonaiPsoError(f"{synthetic.description}: the guard's threshold tau is unknown; pass --tau")
    synthetic_list = DataSource(synthetic.records, synthetic.description).datalist()
    verification = _verify(task, synthetic, synthetic_list, train, embedder)

    training_sets = {"real": train.datalist(), "synthetic": synthetic_list, "real+synthetic": train.datalist() + synthetic_list}
    test_cases = materialize(task, test.datalist(), seed=config.seed)
    task.check_test_cases(test_cases, f"{config.data}: test split")
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm in ARMS:
        network = _train_arm(task, training_sets[arm], config)
        results[arm] = evaluate(task, network, test_cases, batch_size=max(config.batch_size, 32), device=config.device)

    report = {
        "config": asdict(config) | {"data": source.description},
        "task": task.name,
        "data": {split: {"images": len(part), "patients": len(part.patients())} for split, part in (("train", train), ("holdout", holdout), ("test", test))},
        "synthetic": {"description": synthetic.description, "images": len(synthetic.records), "is_stand_in": synthetic.is_stand_in},
        "guard": {"tau": synthetic.tau, **synthetic.guard, "verification": verification, "violations": verification["violations"]},
        "budget": {"steps": config.steps, "batch_size": config.batch_size, "same_for_all_arms": True},
        "arms": {arm: {"training_images": len(training_sets[arm]), **task.summarize(*results[arm])} for arm in ARMS},
        "comparisons": {f"{arm} vs real": task.compare(results[arm], results["real"]) for arm in ARMS[1:]},
        "seconds": None,
    }
    report["seconds"] = round(time.time() - started, 1)
    write_report(report, task, results, test_cases, synthetic_list, out, config.max_examples)
    return report
