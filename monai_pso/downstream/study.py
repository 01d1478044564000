"""The real-versus-synthetic study: does a network trained on the guarded synthetic release do as well?

Steps (:func:`run_study`): split the SOURCE by patient into train / holdout (the source's ``val``) /
test; train the task's network on real train once; then for every generator seed obtain a guarded
synthetic set the size of train from a :class:`~monai_pso.downstream.synthetic.SyntheticProvider`
(which trains the generator on train and calibrates tau on the holdout, or reads a finished release),
verify by brute force that no synthetic image lies within tau of a training image, and train the same
network on synthetic and on real+synthetic with the same number of optimisation steps; evaluate every
network on the same real test cases; compare with paired statistics and non-inferiority tests
(per seed and across seeds); write the report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import set_determinism

from monai_pso.data import DataSource, load_image, load_source
from monai_pso.downstream.guard_check import recheck_with_guard, verify_no_image_within
from monai_pso.downstream.statistics import NONINFERIORITY_MARGINS, across_seeds, add_noninferiority
from monai_pso.downstream.synthetic import SyntheticProvider, SyntheticSet
from monai_pso.downstream.tasks import DownstreamTask, make_task
from monai_pso.downstream.training import evaluate, make_dataset, make_trainer, materialize
from monai_pso.errors import ConfigurationError, MonaiPsoError

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
    seed
        Seed of the downstream training and of the test degradations (the same for every arm).
    generator_seeds
        The synthetic provider runs once per seed (``seeded(seed)``: a generator's training and draws); the
        synthetic arms are trained once per seed, the real arm once. The first seed's comparison is the headline.
    margins, alpha
        Non-inferiority margins per metric (``auroc``, ``psnr``, ``ssim``) and the one-sided level.
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
    generator_seeds: list[int] = field(default_factory=lambda: [0])
    margins: dict[str, float] = field(default_factory=lambda: dict(NONINFERIORITY_MARGINS))
    alpha: float = 0.05

    def __post_init__(self) -> None:
        self.generator_seeds = [int(seed) for seed in self.generator_seeds]
        if not self.generator_seeds or len(set(self.generator_seeds)) != len(self.generator_seeds):
            raise ConfigurationError(f"generator_seeds={self.generator_seeds}: give one or more distinct seeds")


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


def _evaluate_arm(task: DownstreamTask, datalist: list[dict[str, Any]], config: StudyConfig, test_cases: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Train the task's network on ``datalist`` (the study's seed and budget) and return its ``(outputs, targets)`` on the test cases."""
    set_determinism(seed=config.seed)
    network = task.network()
    trainer = make_trainer(task, network, make_dataset(task, datalist), config.steps, config.batch_size, config.learning_rate, config.device, config.seed)
    trainer.run()
    return evaluate(task, network, test_cases, batch_size=max(config.batch_size, 32), device=config.device)


@dataclass
class SeedRun:
    """What one generator seed gave: its guarded synthetic set, its brute-force re-check, and the test
    outputs of the networks trained on it (``synthetic`` and ``real+synthetic``)."""

    seed: int
    synthetic: SyntheticSet
    verification: dict[str, Any]
    training_sets: dict[str, list[dict[str, Any]]]
    results: dict[str, tuple[np.ndarray, np.ndarray]]

    def guard_summary(self) -> dict[str, Any]:
        """The seed's line of ``guard.per_seed``: tau, images released, counts, violations."""
        guard = self.synthetic.guard
        return {
            "generator_seed": self.seed,
            "tau": self.synthetic.tau,
            "images": len(self.synthetic.records),
            "counts": guard.get("counts"),
            "rejection_rate": guard.get("rejection_rate"),
            "violations": self.verification["violations"],
            "min_distance": self.verification["min_distance"],
        }


def _seeded(provider: SyntheticProvider, seed: int, n_seeds: int) -> SyntheticProvider:
    """``provider.seeded(seed)``; a provider without seeds (a finished release) serves a single seed only."""
    seeded = getattr(provider, "seeded", None)
    if seeded is not None:
        return seeded(seed)
    if n_seeds > 1:
        raise ConfigurationError(f"{type(provider).__name__}: a fixed synthetic set has no generator seed; give one generator seed")
    return provider


def _seed_run(task: DownstreamTask, config: StudyConfig, provider: SyntheticProvider, seed: int, train: DataSource, holdout: DataSource,
              work_dir: Path, embedder: Any | None, test_cases: list[dict[str, Any]]) -> SeedRun:
    """One generator seed: the guarded synthetic set, its re-check, and the two arms trained on it."""
    synthetic = provider(train, holdout, len(train), work_dir)
    if not synthetic.records:
        raise MonaiPsoError(f"{synthetic.description}: the synthetic set is empty")
    if synthetic.tau is None:
        raise MonaiPsoError(f"{synthetic.description}: the guard's threshold tau is unknown; pass --tau")
    synthetic_list = DataSource(synthetic.records, synthetic.description).datalist()
    verification = _verify(task, synthetic, synthetic_list, train, embedder)
    training_sets = {"synthetic": synthetic_list, "real+synthetic": train.datalist() + synthetic_list}
    results = {arm: _evaluate_arm(task, datalist, config, test_cases) for arm, datalist in training_sets.items()}
    return SeedRun(seed, synthetic, verification, training_sets, results)


def _comparison(task: DownstreamTask, config: StudyConfig, runs: list[SeedRun], arm: str, real: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """``<arm> vs real``: the first seed's comparison (with non-inferiority), ``per_seed`` and ``across_seeds``."""
    per_seed = [add_noninferiority(task.compare(run.results[arm], real), config.margins, config.alpha) | {"generator_seed": run.seed} for run in runs]
    return per_seed[0] | {"per_seed": per_seed, "across_seeds": across_seeds(per_seed)}


def run_study(config: StudyConfig, provider: SyntheticProvider, out_dir: str | Path, embedder: Any | None = None) -> dict[str, Any]:
    """Run the study and write ``report.json``, ``report.md`` and figures into ``out_dir``.

    The first generator seed works in ``out_dir`` (``generator/``, ``synthetic-release/``), each other seed
    in ``out_dir/seed-<seed>``. ``arms``, ``synthetic`` and ``guard.verification`` describe the first seed;
    ``guard.violations`` counts over every seed, ``guard.per_seed`` and ``arms_per_seed`` give each seed's.

    Examples
    --------
    >>> from monai_pso.downstream.synthetic import StandInSynthetic
    >>> cfg = StudyConfig("phantom:2d?patients=12&size=16", steps=2, batch_size=4, generator_seeds=[0, 1])
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
    providers = [_seeded(provider, seed, len(config.generator_seeds)) for seed in config.generator_seeds]
    test_cases = materialize(task, test.datalist(), seed=config.seed)
    task.check_test_cases(test_cases, f"{config.data}: test split")
    real = _evaluate_arm(task, train.datalist(), config, test_cases)
    runs = [
        _seed_run(task, config, seeded, seed, train, holdout, out if index == 0 else out / f"seed-{seed}", embedder, test_cases)
        for index, (seed, seeded) in enumerate(zip(config.generator_seeds, providers))
    ]
    first = runs[0]
    results = {"real": real} | first.results
    training_images = {"real": len(train)} | {arm: len(datalist) for arm, datalist in first.training_sets.items()}
    report = {
        "config": asdict(config) | {"data": source.description},
        "task": task.name,
        "data": {split: {"images": len(part), "patients": len(part.patients())} for split, part in (("train", train), ("holdout", holdout), ("test", test))},
        "synthetic": {"description": first.synthetic.description, "images": len(first.synthetic.records), "is_stand_in": first.synthetic.is_stand_in, "generator_seeds": config.generator_seeds},
        "guard": {
            "tau": first.synthetic.tau,
            **first.synthetic.guard,
            "verification": first.verification,
            "violations": sum(run.verification["violations"] for run in runs),
            "per_seed": [run.guard_summary() for run in runs],
        },
        "budget": {"steps": config.steps, "batch_size": config.batch_size, "same_for_all_arms": True},
        "arms": {arm: {"training_images": training_images[arm], **task.summarize(*results[arm])} for arm in ARMS},
        "arms_per_seed": [
            {"generator_seed": run.seed} | {arm: {"training_images": len(run.training_sets[arm]), **task.summarize(*run.results[arm])} for arm in ARMS[1:]} for run in runs
        ],
        "comparisons": {f"{arm} vs real": _comparison(task, config, runs, arm, real) for arm in ARMS[1:]},
        "seconds": None,
    }
    report["seconds"] = round(time.time() - started, 1)
    write_report(report, task, results, test_cases, first.training_sets["synthetic"], out, config.max_examples)
    return report
