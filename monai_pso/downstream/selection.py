"""Candidate selection, the PSO paper's sample evaluator: of several guarded draws per training image, keep the
one whose class a classifier trained on the real training split agrees with best.

Only released draws are candidates (the guard's privacy and plausibility checks run first, a refused draw
never counts), so the kept set is a subset of what the guard certified.

Examples
--------
>>> best_per_group(["a", "a", "b"], np.array([0.2, 0.9, 0.4]))
[1, 2]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_pso.data import DataSource, ImageRecord
from monai_pso.downstream.tasks import ClassificationTask
from monai_pso.downstream.training import evaluate, make_dataset, make_trainer, materialize

#: The suffix :func:`monai_pso.engines.diversity_requests` gives the ``K``-th candidate of an item.
CANDIDATE_SUFFIX = re.compile(r"-c\d+$")


def candidate_group(request_id: str) -> str:
    """The request a candidate belongs to: its request id without the ``-cK`` candidate suffix.

    Examples
    --------
    >>> candidate_group("synthetic-p3-a0-c2"), candidate_group("synthetic-p3-a0")
    ('synthetic-p3-a0', 'synthetic-p3-a0')
    """
    return CANDIDATE_SUFFIX.sub("", request_id)


def best_per_group(groups: Sequence[str], scores: np.ndarray) -> list[int]:
    """Index of the highest-scoring candidate of each group (ties: the first), in order of first appearance.

    Examples
    --------
    >>> best_per_group(["x", "y", "x", "y"], np.array([0.5, 0.1, 0.5, 0.3]))
    [0, 3]
    """
    best: dict[str, int] = {}
    for i, group in enumerate(groups):
        if group not in best or scores[i] > scores[best[group]]:
            best[group] = i
    return list(best.values())


@dataclass
class LabelAgreement:
    """A classifier trained on the real training split, scoring images by the probability of their own label.

    The classifier is the downstream classification task's own network and training
    (:class:`~monai_pso.downstream.tasks.ClassificationTask`, :func:`~monai_pso.downstream.training.make_trainer`)
    with a small budget of ``steps``.

    Examples
    --------
    >>> from dataclasses import replace
    >>> from monai_pso.data import load_source
    >>> train = [replace(r, label=i % 2) for i, r in enumerate(load_source("phantom:2d?patients=4&size=16").split("train"))]
    >>> LabelAgreement.trained_on(train, num_classes=2, steps=2, batch_size=2).scores(train[:3]).shape
    (3,)
    """

    task: ClassificationTask
    network: torch.nn.Module
    device: str = "cpu"

    @classmethod
    def trained_on(cls, train: DataSource | Sequence[ImageRecord], num_classes: int, steps: int = 200, batch_size: int = 16, seed: int = 0, device: str = "cpu") -> LabelAgreement:
        """The classifier trained on ``train``'s images and integer labels for ``steps`` steps."""
        records = list(train)
        task = ClassificationTask(spatial_dims=len(_spatial_shape(records[0])), num_classes=num_classes, mode="binary" if num_classes == 2 else "multiclass")
        torch.manual_seed(seed)
        network = task.network()
        make_trainer(task, network, make_dataset(task, [r.to_dict() for r in records]), steps, batch_size, device=device, seed=seed).run()
        return cls(task, network.eval(), device)

    def scores(self, records: Sequence[ImageRecord]) -> np.ndarray:
        """The predicted probability of each record's own label."""
        outputs, targets = evaluate(self.task, self.network, materialize(self.task, [r.to_dict() for r in records]), device=self.device)
        return outputs[np.arange(len(targets)), targets.astype(int)]


def _spatial_shape(record: ImageRecord) -> tuple[int, ...]:
    from monai_pso.data import load_image

    return tuple(load_image(record).shape[1:])


def select_candidates(records: Sequence[ImageRecord], request_ids: Sequence[str], scorer: LabelAgreement) -> tuple[list[ImageRecord], dict[str, float | int]]:
    """Keep, of each request's released candidates, the one ``scorer`` gives the highest probability of its label.

    Parameters
    ----------
    records
        The released candidates (with the conditioned class as ``label``); nothing else may be passed.
    request_ids
        Each record's request id (``synthetic-ITEM-cK``, from the owner's map of released ids).
    scorer
        The classifier trained on the real training split.

    Returns
    -------
    The kept records and what selection did: candidates released and kept, and the mean probability of the
    conditioned class over both.
    """
    scores = scorer.scores(records)
    keep = best_per_group([candidate_group(request) for request in request_ids], scores)
    summary = {
        "released": len(records),
        "kept": len(keep),
        "label_probability_released": float(scores.mean()) if len(scores) else float("nan"),
        "label_probability_kept": float(scores[keep].mean()) if keep else float("nan"),
    }
    return [records[i] for i in keep], summary
