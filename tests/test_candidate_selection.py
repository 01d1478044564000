"""Candidate selection on a real guarded release: a stand-in generator whose draws carry random label noise.

The class of an image is a bright marker band (class 1) or none (class 0), on phantom anatomies. The
stand-in "generator" answers a request for class ``c`` with a real image of another patient, of the wrong
class with a probability drawn at random, and with a copy of a training image for some seeds (the guard
refuses those). The release goes through the real guard and writer (:class:`GuardedRelease`); selection
must raise the share of kept images whose class is the conditioned one, and keep only released draws.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from monai_pso.data import DataSource, ImageRecord, load_image, load_source
from monai_pso.downstream.selection import LabelAgreement, best_per_group, candidate_group
from monai_pso.downstream.synthetic import GeneratedSynthetic, ReleaseSynthetic, keep_best_candidates
from monai_pso.engines import GenerationWorkflow, GuidanceSchedule, diversity_requests
from monai_pso.errors import DataSourceError
from monai_pso.guard import build_guard
from monai_pso.release import GuardedRelease, open_release, read_item_map

pytestmark = pytest.mark.usefixtures("one_thread")

CANDIDATES = 4


def marked(record: ImageRecord, label: int, split: str | None) -> ImageRecord:
    """``record``'s image with a bright band along the top (class 1) or without (class 0)."""
    image = np.array(load_image(record), dtype=np.float32)
    if label:
        image[:, :3, :] = 1.0
    return ImageRecord(record.item_id, record.patient_id, image, label, split, normalize="none")


def marked_source(source: str, seed: int) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [marked(r, int(rng.integers(2)), r.split) for r in load_source(source)]


class NoisyLabelGenerator:
    """A stand-in sampler: for class ``c`` a pool image of class ``c``, or of the other class with probability
    ``noise``; a training image (a copy) when ``seed % 7 == 3``. ``drawn[seed]`` records what each draw was."""

    def __init__(self, pool: list[ImageRecord], training: list[ImageRecord], noise: float) -> None:
        self.pool = {c: [load_image(r) for r in pool if r.label == c] for c in (0, 1)}
        self.training = [load_image(r) for r in training]
        self.noise, self.device, self.drawn = noise, torch.device("cpu"), {}

    def __call__(self, seeds, condition=None, guidance_scale=None) -> torch.Tensor:
        images = []
        for seed, wanted in zip(seeds, condition.tolist()):
            rng = np.random.default_rng(int(seed))
            if seed % 7 == 3:
                images.append(self.training[int(rng.integers(len(self.training)))])
                self.drawn[int(seed)] = ("copy", wanted)
                continue
            label = 1 - wanted if rng.random() < self.noise else wanted
            images.append(self.pool[label][int(rng.integers(len(self.pool[label])))])
            self.drawn[int(seed)] = (label, wanted)
        return torch.as_tensor(np.stack(images))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A guarded release of 4 candidates per training image from the noisy stand-in, with what each draw was."""
    root = tmp_path_factory.mktemp("selection")
    records = marked_source("phantom:2d?patients=24&acquisitions=2&size=16&seed=3", seed=0)
    source = DataSource(records, "marked phantom")
    train, holdout = source.split("train"), source.split("val")
    pool = marked_source("phantom:2d?patients=30&acquisitions=1&size=16&seed=11", seed=1)
    noise = float(np.random.default_rng(5).uniform(0.3, 0.6))
    generator = NoisyLabelGenerator(pool, list(train), noise)
    requests = diversity_requests([r.to_dict() for r in train], "label", seed=100, candidates=CANDIDATES)
    workflow = GenerationWorkflow(generator, requests, batch_size=8, schedule=GuidanceSchedule(attempts_per_level=1))
    build_guard(train, root / "guard", holdout=holdout, progress=False, n_bootstrap=50)
    GuardedRelease(root / "guard", workflow, root / "release", "nifti", record=False).attach(workflow)
    workflow.run()
    return root / "release", train, holdout, generator


def _true_labels(release, records, generator) -> list:
    """What each record's draw really was (``"copy"`` or its class), through the manifest's seed."""
    details = open_release(release).item_details()
    return [generator.drawn[int(details[r.item_id[len("synthetic-") :]]["seed"])][0] for r in records]


def test_selection_raises_label_agreement_and_keeps_only_released_draws(released, tmp_path):
    release, train, holdout, generator = released
    synthetic = ReleaseSynthetic(str(release))(train, holdout, len(train), tmp_path)
    counts = synthetic.guard["counts"]
    assert counts["requested"] == CANDIDATES * len(train) and 0 < counts["released"] < counts["requested"]
    scorer = LabelAgreement.trained_on(train, 2, steps=60, batch_size=8)
    selected = keep_best_candidates(synthetic, release, scorer, CANDIDATES)

    audit = {row["item"]: row for row in open_release(release).rows}
    kept_ids = [r.item_id[len("synthetic-") :] for r in selected.records]
    assert all(audit[item]["released"] == "true" for item in kept_ids)  # only what the guard certified
    truth_all = _true_labels(release, synthetic.records, generator)
    truth_kept = _true_labels(release, selected.records, generator)
    assert "copy" not in truth_all and "copy" not in truth_kept  # the planted copies were refused, never kept
    assert any(kind == "copy" for kind, _ in generator.drawn.values())

    requests = {candidate_group(v) for k, v in read_item_map(release).items() if audit[k]["released"] == "true"}
    assert len(selected.records) == len(requests)  # one kept per request with a released candidate
    agreement_all = np.mean([t == r.label for t, r in zip(truth_all, synthetic.records)])
    agreement_kept = np.mean([t == r.label for t, r in zip(truth_kept, selected.records)])
    assert agreement_kept > agreement_all + 0.1, (agreement_all, agreement_kept)
    selection = selected.guard["selection"]
    assert selection["released"] == counts["released"] and selection["kept"] == len(selected.records)
    assert selection["drawn"] == counts["draws"] >= counts["requested"]
    assert selection["label_probability_kept"] > selection["label_probability_released"]


def test_best_per_group_takes_each_groups_maximum():
    rng = np.random.default_rng(3)
    groups = [f"g{int(g)}" for g in rng.integers(0, 5, size=40)]
    scores = rng.random(40)
    best = best_per_group(groups, scores)
    assert sorted(groups[i] for i in best) == sorted(set(groups))
    for i in best:
        assert scores[i] == max(s for g, s in zip(groups, scores) if g == groups[i])


def test_candidates_need_class_conditioning():
    with pytest.raises(DataSourceError, match="candidates=3"):
        GeneratedSynthetic(candidates=3)
    assert replace(GeneratedSynthetic(class_conditional=True, candidates=3), num_inference_steps=5).candidates == 3
