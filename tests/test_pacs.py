"""export / fetch against a real Orthanc on loopback (skipped when the Debian ``orthanc`` package is absent)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from monai_pso.cli.main import main
from monai_pso.data.dicom_certificate import PRIVATE_GROUP, PrivacyCertificate
from monai_pso.data.dicom_writer import write_dicom
from monai_pso.pacs.connection import PacsNode, associate
from monai_pso.pacs.query import find
from orthanc_server import OrthancServer, free_port, running_orthanc

CERTIFICATE = {"tau": 0.2, "nn_distance": 0.35, "index_fingerprint": "idx", "embedder_fingerprint": "emb", "release_id": "test"}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> OrthancServer:
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc (Debian package orthanc) not installed; run .ci/install-system-deps")
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    """A small real guard (phantom CT at 8 x 8 pixels): the release builder needs one."""
    from monai_pso.guard import build_guard

    return build_guard("phantom:2d?patients=8&acquisitions=2&size=8&modality=ct", tmp_path_factory.mktemp("guard"), n_bootstrap=20, progress=False)


def _release(checker, folder: Path, items: dict[str, tuple[tuple[int, ...], bool]], seed: int = 0) -> dict[str, list[Path]]:
    """A release written by the release builder: noise images (far from the phantom) decided by the guard,
    the decision forced to ``released`` as asked; refused items' files are then written into the folder by
    hand (as a mistaken copy would), so that export must refuse them."""
    from monai_pso.release import ReleaseBuilder

    rng = np.random.default_rng(seed)
    images = {item: rng.random(shape, dtype=np.float32) for item, (shape, _) in items.items()}
    with ReleaseBuilder(folder, checker, "dicom", modality="ct", record=False, disclose_ids=True) as builder:  # test names, not patients
        decided = builder.checker.decide(rng.random((1, 1, 8, 8), dtype=np.float32)).row(0)  # noise: far from the phantom
        assert decided["released"]
        for item, (_, released) in items.items():
            builder.add(item, {**decided, "released": released, "outcome": "released" if released else "too_close"}, images[item])
        builder.finish()
    written = {}
    for item, (_, released) in items.items():
        stem = folder / "images" / item
        written[item] = sorted(stem.parent.glob(f"{item}.dcm")) + sorted(stem.glob("*.dcm")) if released else write_dicom(images[item], stem, modality="ct", spacing=None, certificate=CERTIFICATE)
    return written


def _cli(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


def _pacs_args(server: OrthancServer, called_aet: str | None = None) -> list[str]:
    return ["--pacs", server.address, "--aet", server.client_aet, "--called-aet", called_aet or server.aet, "--no-progress"]


def _in_pacs(server: OrthancServer, sop_instance_uid: str) -> bool:
    node = PacsNode(server.host, server.port, server.client_aet, server.aet)
    with associate(node, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        return bool(find(assoc, "IMAGE", {"SOPInstanceUID": sop_instance_uid}))


def test_round_trip_export_verify_fetch(orthanc, tmp_path, checker):
    written = _release(checker, tmp_path / "release", {"vol-1": ((1, 3, 16, 12), True), "img-2": ((1, 16, 12), True)})
    result = _cli("export", tmp_path / "release", *_pacs_args(orthanc))
    assert result.exit_code == 0, result.output
    assert "verified by C-FIND: 4" in result.output and "refused (not sent): 0" in result.output

    sent = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(path) for paths in written.values() for path in paths}
    patient_id = next(iter(sent.values())).PatientID
    result = _cli("fetch", *_pacs_args(orthanc), "--query", f"PatientID={patient_id}", "--out", tmp_path / "fetched")
    assert result.exit_code == 0, result.output
    fetched = sorted((tmp_path / "fetched").rglob("*.dcm"))
    volume_uids = {pydicom.dcmread(p).SOPInstanceUID for p in written["vol-1"]}
    assert {p.stem for p in fetched} == volume_uids  # only the queried patient's study came back
    for path in fetched:
        ds = pydicom.dcmread(path)
        assert path.relative_to(tmp_path / "fetched").parts[:2] == (ds.PatientID, ds.StudyInstanceUID)
        np.testing.assert_array_equal(ds.pixel_array, sent[ds.SOPInstanceUID].pixel_array)
        assert ds.ImageComments == sent[ds.SOPInstanceUID].ImageComments
        assert PrivacyCertificate.read_from(ds) == PrivacyCertificate.read_from(sent[ds.SOPInstanceUID]) and PrivacyCertificate.read_from(ds).passed


def test_fetched_folder_is_a_source(orthanc, tmp_path, checker):
    from monai_pso.data import load_source

    written = _release(checker, tmp_path / "release", {"vol": ((1, 4, 8, 8), True)}, seed=1)
    assert _cli("export", tmp_path / "release", *_pacs_args(orthanc)).exit_code == 0
    study = pydicom.dcmread(written["vol"][0]).StudyInstanceUID
    assert _cli("fetch", *_pacs_args(orthanc), "--query", f"StudyInstanceUID={study}", "--out", tmp_path / "fetched").exit_code == 0
    (record,) = load_source(str(tmp_path / "fetched")).records
    assert record.modality == "ct" and len(record.image) == 4


def test_only_released_synthetic_files_leave(orthanc, tmp_path, checker):
    release = tmp_path / "release"
    written = _release(checker, release, {"passed": ((1, 8, 8), True), "too-close": ((1, 2, 8, 8), False), "patient": ((1, 8, 8), True)})
    stray = write_dicom(np.zeros((1, 8, 8)), release / "images" / "not-audited", modality="ct", spacing=None, certificate=CERTIFICATE)
    patient = pydicom.dcmread(written["patient"][0])  # a released name, but no monai-pso certificate in it
    for element in [e.tag for e in patient if e.tag.group == PRIVATE_GROUP]:
        del patient[element]
    patient.save_as(written["patient"][0])

    result = _cli("export", release, *_pacs_args(orthanc))
    assert result.exit_code == 0, result.output
    assert "verified by C-FIND: 1" in result.output and "refused (not sent): 4" in result.output
    assert "released=false" not in result.output  # a refused item has no file in the manifest: its planted files are strays
    assert "not in manifest.json" in result.output and "sha256 differs" in result.output
    assert _in_pacs(orthanc, pydicom.dcmread(written["passed"][0]).SOPInstanceUID)
    for path in [*written["too-close"], *written["patient"], *stray]:
        assert not _in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID), path.name


def test_release_plan_refuses_changed_and_uncertified_files(tmp_path, checker):
    from monai_pso.pacs import plan_release

    written = _release(checker, tmp_path / "release", {"ok": ((1, 8, 8), True), "vol": ((1, 2, 8, 8), True), "bad": ((1, 8, 8), True)})
    replaced = write_dicom(np.zeros((1, 8, 8)), tmp_path / "other", modality="ct", spacing=None, certificate={**CERTIFICATE, "nn_distance": 0.1})
    written["bad"][0].write_bytes(replaced[0].read_bytes())  # same name, other content: a failing certificate
    plan = plan_release(tmp_path / "release")
    assert sorted(plan.to_send) == sorted([("ok", written["ok"][0]), *(("vol", path) for path in written["vol"])])
    assert dict(plan.refused)[written["bad"][0]].startswith("changed since it was released") and plan.missing == ["bad"]


def test_a_generated_dicom_release_reaches_the_pacs_redrawn_images_included(orthanc, tmp_path):
    """``monai-pso generate --format dicom`` (a redraw planted) then ``monai-pso export``: C-FIND finds every released image."""
    import csv as csv_module

    from monai_pso.engines import GenerationWorkflow, GuidanceSchedule, generation_requests
    from monai_pso.guard import build_guard
    from monai_pso.release import GuardedRelease, read_item_map
    from test_generate import PlantingSampler, tiny_sampler

    source = "phantom:2d?patients=8&acquisitions=2&size=16&modality=ct&seed=5"
    guard = build_guard(source, tmp_path / "guard", n_bootstrap=20, progress=False)
    from monai_pso.data import load_image, load_source

    training = load_image(load_source(source).split("train").records[0])
    plant = lambda seed, _: training if seed == 2 else None  # noqa: E731  (request 2's first draw: a training image)
    workflow = GenerationWorkflow(PlantingSampler(tiny_sampler(), plant), generation_requests(4), batch_size=2, schedule=GuidanceSchedule(attempts_per_level=3))
    GuardedRelease(tmp_path / "guard", workflow, tmp_path / "release", "dicom", modality="ct").attach(workflow)
    workflow.run()
    draws = list(csv_module.DictReader((tmp_path / "release" / "draws.csv").open()))
    original = read_item_map(tmp_path / "release")
    redrawn = {original[row["item"]] for row in draws if row["outcome"] == "redrawn"}
    items = {original[row["item"]]: row for row in csv_module.DictReader((tmp_path / "release" / "audit.csv").open())}
    assert "synthetic-00002" in redrawn and items["synthetic-00002"]["released"] == "true"  # redrawn, then released
    assert guard.names == ["pixel", "pixel-tiles", "copy", "copy-regions"]

    result = _cli("export", tmp_path / "release", *_pacs_args(orthanc))
    assert result.exit_code == 0, result.output
    released = [p for p in sorted((tmp_path / "release" / "images").rglob("*.dcm"))]
    assert len(released) == sum(r["released"] == "true" for r in items.values()) and f"verified by C-FIND: {len(released)}" in result.output
    assert all(_in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID) for path in released)


def test_monai_pso_generate_dicom_release_is_exported(orthanc, tmp_path):
    """``monai-pso generate --format dicom`` on a trained bundle, then ``monai-pso export``: every released image is in the PACS."""
    from monai_pso.guard import build_guard
    from monai_pso.release import open_release
    from test_generate import SOURCE
    from test_release import trained_tiny_bundle

    build_guard(SOURCE, tmp_path / "guard", n_bootstrap=20, progress=False)
    bundle = trained_tiny_bundle(tmp_path / "ldm_2d", tmp_path / "guard")
    result = _cli("generate", "--bundle", bundle, "--n", 3, "--format", "dicom", "--steps", 2, "--out", tmp_path / "release")
    assert result.exit_code == 0, result.output
    release = open_release(tmp_path / "release")
    assert release.released_items, release.counts
    result = _cli("export", tmp_path / "release", *_pacs_args(orthanc))
    assert result.exit_code == 0, result.output
    files = [tmp_path / "release" / f["path"] for f in release.manifest["files"]]
    assert f"verified by C-FIND: {len(files)}" in result.output and "refused (not sent): 0" in result.output
    assert all(_in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID) for path in files)


def test_release_without_audit_sends_nothing(orthanc, tmp_path, checker):
    _release(checker, tmp_path / "release", {"a": ((1, 8, 8), True)})
    (tmp_path / "release" / "audit.csv").unlink()
    result = _cli("export", tmp_path / "release", *_pacs_args(orthanc))
    assert result.exit_code == 2 and "audit.csv: missing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreachable_pacs_is_one_clear_line(tmp_path, checker):
    _release(checker, tmp_path / "release", {"a": ((1, 8, 8), True)})
    result = _cli("export", tmp_path / "release", "--pacs", f"127.0.0.1:{free_port()}", "--aet", "ME", "--no-progress")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "unreachable" in result.output and "refused" in result.output.lower()


def test_wrong_called_aet_is_rejected(orthanc, tmp_path, checker):
    _release(checker, tmp_path / "release", {"a": ((1, 8, 8), True)})
    for command in (["export", tmp_path / "release"], ["fetch", "--query", "PatientID=x", "--out", tmp_path / "out"]):
        result = _cli(*command, *_pacs_args(orthanc, called_aet="NOT-ORTHANC"))
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "rejected the association" in result.output and "NOT-ORTHANC" in result.output


@pytest.mark.parametrize("query, message", [("Nonsense=1", "not a DICOM keyword"), ("PatientID", "KEY=VALUE")])
def test_fetch_refuses_bad_queries(tmp_path, query, message):
    result = _cli("fetch", "--pacs", "127.0.0.1:1", "--aet", "ME", "--query", query, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.output


def test_calling_aet_unknown_to_the_pacs(orthanc, tmp_path, checker):
    """Orthanc stores from anyone but answers C-FIND / C-GET only to registered AE titles."""
    _release(checker, tmp_path / "release", {"a": ((1, 8, 8), True)})
    args = ["--pacs", orthanc.address, "--aet", "STRANGER", "--called-aet", orthanc.aet, "--no-progress"]
    result = _cli("export", tmp_path / "release", *args)
    assert result.exit_code == 1 and "sent but NOT VERIFIED" in result.output and "'STRANGER'" in result.output
    result = _cli("fetch", *args, "--query", "PatientID=x", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "calling AE title 'STRANGER'" in result.output


def test_pacs_pipeline_example(orthanc, tmp_path):
    """docs/examples/pacs_pipeline.py end to end: DICOM in, gate, DICOM out, export to Orthanc."""
    try:
        from monai_pso.transforms import PrivacyGated  # noqa: F401
    except ImportError:
        pytest.skip("guard not available: monai_pso.transforms.PrivacyGated does not exist yet")
    import importlib.util

    from monai_pso.calibrate.calibration import calibrate_threshold
    from monai_pso.data import load_image, load_source
    from monai_pso.embed.registry import create_embedder
    from monai_pso.index.build import build_index

    source = "phantom:2d?patients=10&acquisitions=2&size=32&seed=0"
    index = build_index(source, create_embedder("pixel", grid=16), progress=False)
    index.save(tmp_path / "index")
    calibrate_threshold(index, None, source, split="val", n_bootstrap=50, progress=False).save(tmp_path / "tau.json")
    # input DICOM: two training images (must be refused) and three images of patients the index never saw
    training = load_source(source).split("train").records[:2]
    unseen = load_source("phantom:2d?patients=3&acquisitions=1&size=32&seed=99").records
    for number, record in enumerate([*training, *unseen]):
        write_dicom(load_image(record), tmp_path / "input" / f"{number}", modality="other", spacing=None, certificate={"tau": 0, "nn_distance": 0})

    script = Path(__file__).resolve().parents[1] / "docs" / "examples" / "pacs_pipeline.py"
    spec = importlib.util.spec_from_file_location("pacs_pipeline", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    arguments = [f"{tmp_path / 'input'}?normalize=none", "--index", tmp_path / "index", "--threshold", tmp_path / "tau.json",
                 "--out", tmp_path / "release", "--noise", "0.005",
                 "--pacs", orthanc.address, "--aet", orthanc.client_aet, "--called-aet", orthanc.aet]
    assert example.main([str(a) for a in arguments]) == 0

    with (tmp_path / "release" / "audit.csv").open() as handle:
        decisions = {row["item"]: row["released"] == "true" for row in csv.DictReader(handle)}
    assert len(decisions) == 5 and 1 <= sum(decisions.values()) <= 3  # the training copies never pass
    for item, released in decisions.items():
        files = sorted((tmp_path / "release" / "images").glob(f"{item}.dcm"))
        assert bool(files) == released
        for path in files:
            assert _in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID)
