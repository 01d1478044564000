"""The guard's third outcome, ``implausible``: draws farther from the real data than held-out real images are.

A phantom with 200 single-image patients (80 train, 60 val, 60 test): the radius is calibrated on val
and tested on the unseen test patients; failures of a generator (heavy blur, smooth random blobs,
noise, flat images, real images under strong noise) are drawn with random magnitudes and must all be
refused as implausible, while copies of training images stay ``too_close``.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ignite.engine import Engine
from PIL import Image
from scipy.stats import beta

from guard_support import generator_failures, small_guard
from monai_pso.calibrate.plausibility import calibrate_plausibility, conformal_radius, kth_nearest_distances, min_holdout_images
from monai_pso.calibrate.radius import PlausibilityRadius
from monai_pso.calibrate.threshold import seal
from monai_pso.cli.main import main
from monai_pso.data import load_image, load_source
from monai_pso.embed.registry import create_embedder
from monai_pso.errors import DataSourceError, IntegrityError, PrivacyViolationError
from monai_pso.guard import audit_columns, build_guard, load_checker
from monai_pso.guard.plausibility import PlausibilityCheck
from monai_pso.handlers import MemorizationMonitor, PrivacyGuard
from monai_pso.release import ReleaseBuilder, open_release
from monai_pso.release.generation import ReleaseWriter
from monai_pso.release.layout import COUNT_KEYS
from monai_pso.transforms import PrivacyGate

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = "phantom:2d?patients=200&acquisitions=1&size=24&seed=5&ratios=0.4,0.3,0.3"
#: A smaller phantom for the guard-folder tests: 20 held-out images, just enough for the radius at 5%.
FOLDER_SOURCE = "phantom:2d?patients=50&acquisitions=1&size=24&seed=6&ratios=0.4,0.4,0.2"
#: The guard-folder tests are about the plausibility check: the learned copy and identity checks are left out.
ONLY_PIXEL_CHECKS = {"copy_check": False, "identity": None}


def _stack(records) -> np.ndarray:
    return np.stack([load_image(r) for r in records]).astype(np.float32)


@pytest.fixture(scope="module")
def setting():
    """(source, checker with a pixel copy check and the plausibility check, the radius's max_refused)."""
    source = load_source(SOURCE)
    embedder = create_embedder("fidelity", spatial_dims=2)
    from monai_pso.index import build_index

    index = build_index(source, embedder, progress=False)
    max_refused = float(np.random.default_rng(11).uniform(0.05, 0.2))
    radius = calibrate_plausibility(index, embedder, source, max_refused=max_refused, n_bootstrap=200, progress=False)
    checker = small_guard(source).with_plausibility(PlausibilityCheck.create(index, radius, embedder))
    return source, checker, max_refused


def test_conformal_rank_and_the_fewest_held_out_images():
    rng = np.random.default_rng(0)
    for max_refused in rng.uniform(0.01, 0.3, 5):
        n = min_holdout_images(max_refused)
        values = rng.random(n + int(rng.integers(0, 50)))
        radius = conformal_radius(values, max_refused)
        assert np.mean(values > radius) <= max_refused  # in-sample refusal never above the target
        assert conformal_radius(values[: n - 1], max_refused) == np.inf and np.isfinite(conformal_radius(values[:n], max_refused))


def test_held_out_real_images_are_refused_at_about_the_calibrated_rate(setting):
    source, checker, max_refused = setting
    radius = checker.plausibility.radius
    assert radius.refused_share <= max_refused and radius.refused_share_interval[0] <= radius.refused_share <= radius.refused_share_interval[1]
    assert radius.interval[0] <= radius.value <= radius.interval[1] and radius.n_images == 60 and radius.k == 5
    test = _stack(source.split("test"))  # patients neither indexed nor calibrated on
    refused = int(checker.decide(test).implausible.sum())
    n = len(test)
    low = beta.ppf(0.025, refused, n - refused + 1) if refused else 0.0  # Clopper-Pearson 95%
    high = beta.ppf(0.975, refused + 1, n - refused) if refused < n else 1.0
    print(f"\nmax_refused {max_refused:.3f}: unseen real images refused {refused}/{n} (95% CI [{low:.3f}, {high:.3f}]), radius {radius.value:.4g}")
    assert low <= max_refused and high >= max_refused - 1.0 / (radius.n_images + 1)  # conformal: at most max_refused, at least max_refused - 1/(n+1)


def test_generator_failures_are_implausible_and_copies_stay_too_close(setting):
    source, checker, _ = setting
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 31)))
    test = _stack(source.split("test"))
    for name, images in generator_failures(test, rng).items():
        decisions = checker.decide(images)
        outcomes = {decisions.outcome(i) for i in range(len(decisions))}
        assert not decisions.released.any() and decisions.implausible.all(), (name, outcomes)
        assert outcomes <= {"implausible", "too_close"} and "implausible" in outcomes, name
    copies = _stack(source.split("train"))[rng.choice(80, 10, replace=False)]
    decided = checker.decide(copies)
    assert [decided.outcome(i) for i in range(10)] == ["too_close"] * 10  # a copy is refused for privacy, whatever its plausibility
    rows = [decided.row(i) for i in range(10)]  # measured all the same, so the log shows both reasons where both hold
    assert all(r["plausibility_decision"] == ("pass" if r["plausibility_distance"] <= r["plausibility_radius"] else "fail") for r in rows)


def test_kth_nearest_distance_is_exact(setting):
    source, checker, _ = setting
    check = checker.plausibility
    queries = _stack(source.split("test"))[:8]
    train = check.embedder.embed(_stack(source.split("train"))).rows().astype(np.float64)
    query = check.embedder.embed(queries).rows().astype(np.float64)
    brute = np.sort(np.sqrt(((query[:, None, :] - train[None]) ** 2).sum(-1)), axis=1)[:, check.radius.k - 1]
    np.testing.assert_allclose(kth_nearest_distances(check.index, check.embedder, queries, check.radius.k), brute, rtol=1e-5, atol=1e-6)


def test_transform_reports_the_outcome(setting):
    source, checker, _ = setting
    noise = np.random.default_rng(3).random((1, 24, 24)).astype(np.float32)
    flagged = PrivacyGate(checker, mode="flag")(noise)
    assert flagged.meta["privacy_outcome"] == "implausible" and flagged.meta["privacy_released"] is False
    with pytest.raises(PrivacyViolationError, match="implausible"):
        PrivacyGate(checker, mode="raise")(noise)
    unseen = load_image(source.split("test")[0])
    assert PrivacyGate(checker, mode="flag")(unseen).meta["privacy_outcome"] == checker.decide(unseen[None]).outcome(0)


def test_monitor_reports_the_implausible_share(setting):
    source, checker, _ = setting
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 31)))
    test = _stack(source.split("test"))
    failures = generator_failures(test[:4], rng)["uniform_noise"]
    samples = np.concatenate([failures, test[4:8]])
    metrics = MemorizationMonitor(checker, sample_fn=lambda m: torch.as_tensor(samples[:m]), n_samples=8).measure()
    assert metrics["memorization_implausible_rate"] == pytest.approx(np.mean(checker.decide(samples).implausible)) and metrics["memorization_implausible_rate"] >= 0.5


class FailingGenerator:
    """First draws of some requests are noise (a failing generator); redraws are real unseen images."""

    def __init__(self, fresh: np.ndarray, failing: set[str], rng: np.random.Generator):
        self.fresh, self.failing, self.rng = fresh, failing, rng

    def _real(self) -> torch.Tensor:
        return torch.as_tensor(self.fresh[self.rng.integers(len(self.fresh))])

    def step(self, engine: Engine, batch: list[dict]) -> list[dict]:
        return [dict(r, pred=torch.as_tensor(self.rng.random((1, 24, 24)).astype(np.float32)) if r["item_id"] in self.failing else self._real()) for r in batch]

    def regenerate(self, item: dict, attempt: int) -> dict:
        stubborn = item["item_id"].endswith("x")  # always fails: dropped after the last redraw
        return dict(item, pred=torch.as_tensor(self.rng.random((1, 24, 24)).astype(np.float32)) if stubborn else self._real())


def test_generation_redraws_implausible_draws_and_counts_add_up(setting, tmp_path):
    source, checker, _ = setting
    fresh = _stack(source.split("test"))
    ids = [f"s{i:02d}" + ("x" if i == 7 else "") for i in range(12)]
    generator = FailingGenerator(fresh, {ids[i] for i in (1, 4, 7, 9)}, np.random.default_rng(5))
    engine = Engine(generator.step)
    builder = ReleaseBuilder(tmp_path / "release", checker, "png", command="generate")
    guard = PrivacyGuard(builder.checker, regenerate=generator.regenerate, max_attempts=2, draw_log=builder.draw_log, alarm_min_checks=1000)
    guard.attach(engine)
    ReleaseWriter(builder).attach(engine)
    engine.run([[{"item_id": i} for i in ids[j : j + 4]] for j in range(0, 12, 4)])

    release = open_release(tmp_path / "release")
    counts, generation = release.counts, release.summary["generation"]
    assert set(COUNT_KEYS) == set(counts) and counts["requested"] == 12
    assert counts["released"] + counts["too_close"] + counts["implausible"] == counts["requested"]
    assert counts["dropped"] == counts["too_close"] + counts["implausible"] and counts["implausible"] >= 1  # the stubborn one at least
    assert counts["draws"] == generation["counts"]["checks"] == sum(int(r["draws"]) for r in release.rows)
    draws = generation["counts"]
    assert draws["implausible"] >= 4 and draws["rejected"] == draws["too_close"] + draws["implausible"] and draws["regenerated"] >= 4
    assert generation["implausible_rate"] == pytest.approx(draws["implausible"] / draws["checks"])
    with (tmp_path / "release" / "draws.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == audit_columns(checker.names, per_draw=True)
    for row in rows:  # every decision re-checkable from the log alone
        plausible = float(row["plausibility_distance"]) <= float(row["plausibility_radius"])
        assert (row["released"] == "true") == (float(row["nn_distance"]) >= float(row["threshold"]) and plausible)
        assert row["plausibility_decision"] == ("pass" if plausible else "fail")
    redrawn = [r for r in rows if r["outcome"] == "redrawn" and r["plausibility_decision"] == "fail"]
    assert len(redrawn) >= 3  # the failing first draws were redrawn
    audit = {r["item"]: r for r in release.rows}
    assert sum(r["outcome"] == "implausible" for r in audit.values()) == counts["implausible"]
    assert release.summary["plausibility"]["radius"] == checker.plausibility.radius.value and "plausibility radius" in release.summary["decision"]


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plausible") / "guard"
    build_guard(FOLDER_SOURCE, folder, n_bootstrap=50, progress=False, **ONLY_PIXEL_CHECKS)
    return folder


def test_guard_folder_holds_the_check_and_refuses_a_tampered_radius(guard_dir, tmp_path):
    document = json.loads((guard_dir / "guard.json").read_text())
    assert document["plausibility"]["checked"] is True and load_checker(guard_dir).plausibility is not None
    assert load_checker(guard_dir, plausibility=False).plausibility is None
    radius_file = guard_dir / "plausibility" / "radius.json"
    original = radius_file.read_text()
    content = json.loads(original)
    content["value"] *= float(np.random.default_rng().uniform(1.5, 10.0))  # a wider radius would pass failures
    radius_file.write_text(json.dumps(content))
    try:
        with pytest.raises(IntegrityError, match="radius.json"):
            load_checker(guard_dir)
    finally:
        radius_file.write_text(original)
    assert PlausibilityRadius.load(radius_file).value == pytest.approx(document["plausibility"]["radius"])


def test_guard_without_plausibility_loads_and_says_so(guard_dir, tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    for path in guard_dir.iterdir():
        (older / path.name).symlink_to(path)
    document = json.loads((guard_dir / "guard.json").read_text())
    (older / "guard.json").unlink()
    (older / "guard.json").write_text(json.dumps(seal({k: v for k, v in document.items() if k not in ("plausibility", "content_sha256")})))
    assert load_checker(older).plausibility is None  # a guard folder built before the check existed
    with pytest.raises(DataSourceError, match="no plausibility check"):
        load_checker(older, plausibility=True)
    small = build_guard("phantom:2d?patients=12&acquisitions=2&size=24", tmp_path / "small", n_bootstrap=20, progress=False, **ONLY_PIXEL_CHECKS)
    reason = json.loads((tmp_path / "small" / "guard.json").read_text())["plausibility"]
    assert small.plausibility is None and reason["checked"] is False and "needs at least 19" in reason["reason"]


def test_gate_offers_the_check_as_an_option(guard_dir, tmp_path):
    folder = tmp_path / "candidates"
    folder.mkdir()
    unseen = load_source("phantom:2d?patients=50&acquisitions=1&size=24&seed=6&ratios=0.4,0.4,0.2").split("test")
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 31)))
    images = {**{f"real-{i}": load_image(r)[0] for i, r in enumerate(unseen)}}
    images.update({f"fail-{name}": batch[0, 0] for name, batch in generator_failures(_stack(list(unseen)[:1]), rng).items()})
    for name, image in images.items():
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"{name}.png")
    runner = CliRunner()
    checked = runner.invoke(main, ["gate", str(folder), "--guard", str(guard_dir), "--out", str(tmp_path / "on")], catch_exceptions=False)
    assert checked.exit_code == 0, checked.output
    unchecked = runner.invoke(main, ["gate", str(folder), "--guard", str(guard_dir), "--out", str(tmp_path / "off"), "--no-plausibility"], catch_exceptions=False)
    assert unchecked.exit_code == 0 and "plausibility not checked" in unchecked.output
    on, off = open_release(tmp_path / "on"), open_release(tmp_path / "off")
    assert on.counts["implausible"] >= 5 and off.counts["implausible"] == 0 and "implausible" in checked.output
    for release in (on, off):
        counts = release.counts
        assert counts["released"] + counts["dropped"] == counts["requested"] == counts["draws"] == len(images)
        assert counts["dropped"] == counts["too_close"] + counts["implausible"]
    failures = {row["item"]: row for row in on.rows if row["outcome"] == "implausible"}
    assert all(row["plausibility_decision"] == "fail" for row in failures.values())
    assert all(row["plausibility_decision"] == "" for row in off.rows)  # not checked: empty cells


def test_volumes_too():
    source = load_source("phantom:3d?patients=40&acquisitions=1&size=16&seed=7&ratios=0.4,0.5,0.1")
    embedder = create_embedder("fidelity", spatial_dims=3)
    from monai_pso.index import build_index

    index = build_index(source, embedder, progress=False)
    radius = calibrate_plausibility(index, embedder, source, n_bootstrap=50, progress=False)
    check = PlausibilityCheck.create(index, radius, embedder)
    failures = generator_failures(_stack(source.split("test")), np.random.default_rng(int(np.random.default_rng().integers(1 << 31))))
    for name in ("heavy_blur", "uniform_noise", "flat"):
        assert (check.measure(failures[name]) > radius.value).all(), name
    assert radius.n_images == len(source.split("val")) >= min_holdout_images(radius.max_refused) and radius.refused_share <= radius.max_refused
