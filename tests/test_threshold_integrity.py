"""The threshold file and the guard folder's guard.json carry an integrity hash: an edited value, rule, view list
or guard entry is refused on load with a one-line error naming the file, and so is a file without the hash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monai_pso.calibrate import Threshold
from monai_pso.calibrate.threshold import INTEGRITY_KEY, ThresholdPart, content_sha256
from monai_pso.embed.views import QueryViews
from monai_pso.errors import IntegrityError, MonaiPsoError
from monai_pso.guard import GUARD_FILE, build_guard, load_checker, read_guard

pytestmark = pytest.mark.usefixtures("one_thread")


def a_threshold() -> Threshold:
    part = ThresholdPart("holdout", 2.0, 5.0, (1.5, 2.5), 40, 20, ("phantom:2d [split=val]",))
    same = ThresholdPart("same", 1.5, 95.0, (1.2, 1.8), 30, 10)
    views = QueryViews(max_shift=1, rotations=(-2.5, 2.5), intensity=((0.9, 0.05),)).to_dict()
    return Threshold(
        2.0, "max", "holdout", part, same, (1.5, 2.5), n_bootstrap=100, utility_cost=0.05, holdout_value_all=1.9, embedder_fingerprint="e" * 64,
        embedder_name="pixel", index_fingerprint="i" * 64, query_views=views, notes=("a note",),
    )


def edited(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Apply ``edit`` to the JSON document at ``path`` and write it back as a text editor would."""
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document, indent=2))
    return path


def assert_refused(load: Callable[[], Any], path: Path, problem: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        load()
    message = str(caught.value)
    assert isinstance(caught.value, MonaiPsoError) and "\n" not in message
    assert message.startswith(f"{path}: ") and problem in message, message


# -- the threshold file -----------------------------------------------------------------------------------


def test_an_untouched_threshold_loads_and_records_its_hash(tmp_path):
    threshold = a_threshold()
    path = threshold.save(tmp_path / "tau.json")
    document = json.loads(path.read_text())
    assert document[INTEGRITY_KEY] == content_sha256(document)
    assert Threshold.load(path) == threshold
    edited(path, lambda d: None)  # re-serialised with other whitespace and key order: the same content
    assert Threshold.load(path) == threshold


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "tau": lambda d: d.update(value=d["value"] * 0.5),
    "tau by one ulp": lambda d: d.update(value=float(np.nextafter(d["value"], 0.0))),
    "rule": lambda d: d.update(rule="holdout"),
    "query views removed": lambda d: d.update(query_views=QueryViews().to_dict()),
    "one rotation removed": lambda d: d["query_views"]["rotations"].pop(),
    "max shift": lambda d: d["query_views"].update(max_shift=0),
    "holdout part": lambda d: d["holdout"].update(value=0.1),
    "index fingerprint": lambda d: d.update(index_fingerprint="j" * 64),
    "a field added": lambda d: d.update(comment="looks fine"),
    "the hash itself": lambda d: d.update({INTEGRITY_KEY: "0" * 64}),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_an_edited_threshold_is_refused(tmp_path, what):
    path = edited(a_threshold().save(tmp_path / "tau.json"), EDITS[what])
    assert_refused(lambda: Threshold.load(path), path, "threshold file was edited after it was written")


def test_an_edit_with_a_recomputed_hash_is_what_the_hash_cannot_stop(tmp_path):
    """The hash detects edits, not a forger who recomputes it (documented): such a file is a threshold of its own."""
    path = edited(a_threshold().save(tmp_path / "tau.json"), lambda d: (d.update(value=1.0), d.update({INTEGRITY_KEY: content_sha256(d)})))
    assert Threshold.load(path).value == 1.0


def test_a_threshold_without_a_hash_is_refused_saying_to_recalibrate(tmp_path):
    path = edited(a_threshold().save(tmp_path / "tau.json"), lambda d: d.pop(INTEGRITY_KEY))
    assert_refused(lambda: Threshold.load(path), path, "carries no integrity hash")
    with pytest.raises(IntegrityError, match="calibrate again"):
        Threshold.load(path)


# -- the guard folder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory, one_thread) -> Path:
    folder = tmp_path_factory.mktemp("guard") / "guard"
    build_guard("phantom:2d?patients=10&acquisitions=2&size=16&seed=1", folder, n_bootstrap=20, progress=False)
    return folder


@pytest.fixture
def guard_copy(guard_dir, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(guard_dir, tmp_path / "guard"))


def test_an_untouched_guard_loads(guard_copy):
    document = read_guard(guard_copy)
    assert document[INTEGRITY_KEY] == content_sha256(document)
    assert load_checker(guard_copy).names == ["pixel", "pixel-tiles", "copy", "copy-regions"]


GUARD_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "a tau": lambda d: d["checks"][0].update(tau=d["checks"][0]["tau"] / 10),
    "a check removed": lambda d: d["checks"].pop(),
    "a threshold path": lambda d: d["checks"][1].update(threshold=d["checks"][0]["threshold"]),
    "the ledger": lambda d: d.update(ledger="pixel-tiles/index"),
}


@pytest.mark.parametrize("what", list(GUARD_EDITS))
def test_an_edited_guard_description_is_refused(guard_copy, what):
    path = edited(guard_copy / GUARD_FILE, GUARD_EDITS[what])
    assert_refused(lambda: read_guard(guard_copy), path, "guard description was edited after it was written")
    assert_refused(lambda: load_checker(guard_copy), path, "build the guard again")


def test_a_guard_description_without_a_hash_is_refused(guard_copy):
    path = edited(guard_copy / GUARD_FILE, lambda d: d.pop(INTEGRITY_KEY))
    assert_refused(lambda: load_checker(guard_copy), path, "carries no integrity hash")


def test_an_edited_threshold_inside_a_guard_is_refused(guard_copy):
    path = edited(guard_copy / "pixel" / "threshold.json", EDITS["tau"])
    assert_refused(lambda: load_checker(guard_copy), path, "threshold file was edited")
    assert_refused(lambda: load_checker(index=guard_copy / "pixel" / "index", threshold=path), path, "threshold file was edited")
    path = edited(guard_copy / "pixel-tiles" / "threshold.json", EDITS["query views removed"])
    assert_refused(lambda: load_checker(index=guard_copy / "pixel-tiles" / "index", threshold=path), path, "threshold file was edited")
