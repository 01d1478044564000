"""PrivacyGuard on a small generation workflow, and MemorizationMonitor on a dummy trainer.

The "generator" returns, for each request, a copy of a training image with probability 0.4 and a fresh
phantom image (patients the index has never seen) otherwise; its ``regenerate`` draws again the same
way, except for requests marked ``stubborn``, which always come back as copies.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.handlers import StatsHandler

from guard_support import small_guard
from monai_pso.data import load_source
from monai_pso.errors import ImageValueError, PrivacyViolationError
from monai_pso.guard import audit_columns
from monai_pso.handlers import MemorizationMonitor, PrivacyEvents, PrivacyGuard

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "phantom:2d?patients=12&acquisitions=3&size=32&seed=2"


@pytest.fixture(scope="module")
def setting():
    source = load_source(SOURCE)
    checker = small_guard(source)
    training = np.stack([r.image for r in source.split("train")])
    fresh = np.stack([r.image for r in load_source("phantom:2d?patients=60&acquisitions=1&size=32&seed=99")])
    return checker, training, fresh


class Generator:
    """Draws images for requests: training copies with probability ``copy_rate``, fresh images otherwise."""

    def __init__(self, training: np.ndarray, fresh: np.ndarray, copy_rate: float, seed: int = 0):
        self.training, self.fresh, self.copy_rate = training, fresh, copy_rate
        self.rng = np.random.default_rng(seed)

    def draw(self, stubborn: bool = False) -> torch.Tensor:
        pool = self.training if stubborn or self.rng.random() < self.copy_rate else self.fresh
        return torch.as_tensor(pool[self.rng.integers(len(pool))])

    def step(self, engine: Engine, batch: list[dict]) -> list[dict]:
        return [dict(request, pred=self.draw(request.get("stubborn", False))) for request in batch]

    def regenerate(self, item: dict, attempt: int) -> dict:
        return dict(item, pred=self.draw(item.get("stubborn", False)), attempt=attempt)


def _requests(n: int, stubborn: set[int] = frozenset()) -> list[list[dict]]:
    requests = [{"item_id": f"s{i:03d}", "stubborn": i in stubborn} for i in range(n)]
    return [requests[i : i + 4] for i in range(0, n, 4)]


def _is_copy(image: torch.Tensor, training: np.ndarray) -> bool:
    return bool((np.abs(training - image.numpy()[None]).reshape(len(training), -1).max(axis=1) == 0).any())


def test_copies_are_never_released_and_rejections_are_redrawn(setting, tmp_path):
    checker, training, fresh = setting
    generator = Generator(training, fresh, copy_rate=0.4)
    engine = Engine(generator.step)
    guard = PrivacyGuard(checker, regenerate=generator.regenerate, max_attempts=3, alarm_rate=0.9, draw_log=tmp_path / "draws.csv")
    guard.attach(engine)
    released: list[dict] = []
    refused: list[dict] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: released.extend(e.state.output))  # attached after the guard
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: refused.extend(e.state.privacy_refused))
    engine.run(_requests(24, stubborn={5, 17}))

    assert released and not any(_is_copy(item["pred"], training) for item in released)
    recheck = checker.decide(torch.stack([item["pred"] for item in released]))
    assert recheck.released.all() and all(item["privacy_nn_distance"] >= item["privacy_threshold"] for item in released)
    for item in released:  # the decision a release builder certifies each file with
        decision, certificate = item["privacy_decision"], checker.certificate(item["privacy_decision"], "test")
        assert decision["released"] is True and decision["outcome"] == "released" and certificate["nn_distance"] >= certificate["tau"]
        assert all(decision[f"{name}_decision"] == "pass" for name in checker.names)

    with (tmp_path / "draws.csv").open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == audit_columns(checker.names, per_draw=True)
        rows = list(reader)
    summary = engine.state.privacy_summary
    counts = summary["counts"]
    by_sample: dict[str, list[dict]] = {}
    for row in rows:
        by_sample.setdefault(row["item"], []).append(row)
    assert len(by_sample) == counts["generated"] == 24 and len(rows) == counts["checks"]
    assert all(len(r) <= 1 + 3 and [int(x["draw"]) for x in r] == list(range(1, len(r) + 1)) for r in by_sample.values())  # bounded
    assert all(r[-1]["outcome"] in ("released", "dropped") and all(x["outcome"] == "redrawn" for x in r[:-1]) for r in by_sample.values())
    assert {s for s, r in by_sample.items() if r[-1]["outcome"] == "dropped"} == set(summary["dropped"]) >= {"s005", "s017"}
    assert len(by_sample["s005"]) == 4  # a stubborn sample: first draw and 3 redraws, then dropped
    assert sorted(r["item_id"] for r in refused) == sorted(summary["dropped"]) and all(r["draws"] == 4 and not r["decision"]["released"] for r in refused)
    assert all(item["privacy_draws"] == len(by_sample[item["item_id"]]) for item in released)
    assert counts["regenerated"] > 2 and counts["released"] == len(released) == 24 - counts["dropped"]
    assert counts["regenerated"] == sum(r["outcome"] == "redrawn" for r in rows)
    assert all((float(r["nn_distance"]) >= float(r["threshold"])) == (r["released"] == "true") for r in rows)
    assert summary["rejection_rate"] == pytest.approx(counts["rejected"] / counts["checks"]) and summary["draw_log"] == "draws.csv"
    print(f"\ngenerated 24, checks {counts['checks']}, redrawn {counts['regenerated']}, dropped {counts['dropped']}, rejection rate {summary['rejection_rate']:.0%}")


def test_dict_output_of_a_monai_evaluator(setting):
    checker, training, fresh = setting
    generator = Generator(training, fresh, copy_rate=0.5, seed=1)

    def iteration(engine, batch):
        images = torch.stack([generator.draw() for _ in batch])
        return {"pred": images, "label": torch.arange(len(batch)), "note": "generated"}

    evaluator = Evaluator(device="cpu", val_data_loader=[[0] * 6, [0] * 6], iteration_update=iteration, decollate=False)
    seen = []
    PrivacyGuard(checker, regenerate=None).attach(evaluator)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    evaluator.run()
    for output in seen:
        mask = output["privacy_released_mask"]
        assert output["pred"].shape[0] == int(mask.sum()) == len(output["label"]) == len(output["privacy_sample_ids"])
        assert not any(_is_copy(image, training) for image in output["pred"]) and output["note"] == "generated"
    summary = evaluator.state.privacy_summary
    assert summary["counts"]["dropped"] == summary["counts"]["rejected"] > 0  # no regenerate: rejected = dropped


def test_memorization_alarm(setting):
    checker, training, fresh = setting
    generator = Generator(training, fresh, copy_rate=0.8, seed=2)
    engine = Engine(generator.step)
    fired = []
    PrivacyGuard(checker, alarm_rate=0.3, alarm_min_checks=8).attach(engine)
    engine.add_event_handler(PrivacyEvents.MEMORIZATION_ALARM, lambda e: fired.append(e.state.iteration))
    engine.run(_requests(16))
    assert engine.state.privacy_alarm and len(fired) == 1
    assert engine.state.privacy_summary["alarm"]["raised"]

    engine = Engine(generator.step)
    PrivacyGuard(checker, alarm_rate=0.3, alarm_min_checks=8, raise_on_alarm=True).attach(engine)
    with pytest.raises(PrivacyViolationError, match="memorization alarm"):
        engine.run(_requests(16))
    assert engine.state.output == []


def test_fails_closed_on_a_bad_generated_image(setting):
    checker, training, fresh = setting

    def step(engine, batch):
        return [{"item_id": "ok", "pred": torch.as_tensor(fresh[0])}, {"item_id": "nan", "pred": torch.full((1, 32, 32), float("nan"))}]

    engine = Engine(step)
    later = []
    PrivacyGuard(checker).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: later.append(e.state.output))
    with pytest.raises(ImageValueError, match="NaN"):
        engine.run([[0]])
    assert later == [] and engine.state.output == []


def test_memorization_monitor_feeds_stats_handler(setting, capfd):
    checker, training, fresh = setting
    rng = np.random.default_rng(0)
    trainer = Engine(lambda engine, batch: 0.0)
    monitor = MemorizationMonitor(checker, sample_fn=lambda m: training[rng.integers(len(training), size=m)], n_samples=6, interval=2)
    monitor.attach(trainer)
    StatsHandler(name="monitor-test", iteration_log=False, tag_name="loss").attach(trainer)
    trainer.run([0, 1], max_epochs=4)
    metrics = trainer.state.metrics
    assert metrics["memorization_nn_min"] == 0.0 and metrics["memorization_rejection_rate"] == 1.0  # copies of training images
    assert metrics["memorization_nn_p5"] <= metrics["memorization_nn_median"]
    captured = capfd.readouterr()
    logged = [line for line in (captured.out + captured.err).splitlines() if "memorization_rejection_rate: 1.0000" in line]
    assert logged and logged[0].split("Epoch[")[1].startswith("2]")  # first measured after epoch 2, logged by the stock handler
