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


def _release(folder: Path, items: dict[str, tuple[tuple[int, ...], bool]], seed: int = 0) -> dict[str, list[Path]]:
    """A release folder as the gate writes it: DICOM per item and audit.csv saying which are released."""
    rng = np.random.default_rng(seed)
    written = {
        item: write_dicom(rng.random(shape, dtype=np.float32), folder / item, modality="ct", spacing=None, certificate=CERTIFICATE)
        for item, (shape, _) in items.items()
    }
    with (folder / "audit.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["item", "nn_distance", "threshold", "released", "nearest_patient_hash"])
        writer.writeheader()
        for item, (_, released) in items.items():
            writer.writerow({"item": item, "nn_distance": 0.35, "threshold": 0.2, "released": str(released).lower(), "nearest_patient_hash": "h"})
    return written


def _cli(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


def _pacs_args(server: OrthancServer, called_aet: str | None = None) -> list[str]:
    return ["--pacs", server.address, "--aet", server.client_aet, "--called-aet", called_aet or server.aet, "--no-progress"]


def _in_pacs(server: OrthancServer, sop_instance_uid: str) -> bool:
    node = PacsNode(server.host, server.port, server.client_aet, server.aet)
    with associate(node, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        return bool(find(assoc, "IMAGE", {"SOPInstanceUID": sop_instance_uid}))


def test_round_trip_export_verify_fetch(orthanc, tmp_path):
    written = _release(tmp_path / "release", {"vol-1": ((1, 3, 16, 12), True), "img-2": ((1, 16, 12), True)})
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
        assert PrivacyCertificate.read_from(ds) == PrivacyCertificate.from_mapping(CERTIFICATE)


def test_fetched_folder_is_a_source(orthanc, tmp_path):
    from monai_pso.data import load_source

    written = _release(tmp_path / "release", {"vol": ((1, 4, 8, 8), True)}, seed=1)
    assert _cli("export", tmp_path / "release", *_pacs_args(orthanc)).exit_code == 0
    study = pydicom.dcmread(written["vol"][0]).StudyInstanceUID
    assert _cli("fetch", *_pacs_args(orthanc), "--query", f"StudyInstanceUID={study}", "--out", tmp_path / "fetched").exit_code == 0
    (record,) = load_source(str(tmp_path / "fetched")).records
    assert record.modality == "ct" and len(record.image) == 4


def test_only_released_synthetic_files_leave(orthanc, tmp_path):
    release = tmp_path / "release"
    written = _release(release, {"passed": ((1, 8, 8), True), "too-close": ((1, 2, 8, 8), False), "patient": ((1, 8, 8), True)})
    stray = write_dicom(np.zeros((1, 8, 8)), release / "not-audited", modality="ct", spacing=None, certificate=CERTIFICATE)
    patient = pydicom.dcmread(written["patient"][0])  # a released name, but no monai-pso certificate in it
    del patient[PRIVATE_GROUP, 0x0010]
    for element in [e.tag for e in patient if e.tag.group == PRIVATE_GROUP]:
        del patient[element]
    patient.save_as(written["patient"][0])

    result = _cli("export", release, *_pacs_args(orthanc))
    assert result.exit_code == 0, result.output
    assert "verified by C-FIND: 1" in result.output and "refused (not sent): 4" in result.output
    assert "released=false" in result.output and "no entry in audit.csv" in result.output and "not a monai-pso synthetic" in result.output
    assert _in_pacs(orthanc, pydicom.dcmread(written["passed"][0]).SOPInstanceUID)
    for path in [*written["too-close"], *written["patient"], *stray]:
        assert not _in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID), path.name


def test_release_plan_matches_files_to_audit_items(tmp_path):
    from monai_pso.pacs import plan_release

    def write(stem: str, shape=(1, 4, 4), **certificate) -> list[Path]:
        return write_dicom(np.zeros(shape), tmp_path / stem, modality="mri", spacing=None, certificate={**CERTIFICATE, **certificate})

    nested, series, twice = write("images/flat"), write("vol", shape=(1, 2, 4, 4)), write("twice")
    failing = write("close", nn_distance=0.1)  # the header certificate says it is below tau
    (tmp_path / "audit.csv").write_text("item,released\nflat,true\nvol,TRUE\nclose,true\ntwice,true\ntwice,false\nabsent,true\n")
    plan = plan_release(tmp_path)
    assert sorted(plan.to_send) == sorted([("flat", nested[0]), *(("vol", path) for path in series)])
    refused = dict(plan.refused)
    assert "nn_distance=0.1 < tau=0.2" in refused[failing[0]] and refused[twice[0]] == "audit: released=false"
    assert sorted(plan.missing) == ["absent", "close"]


def test_release_without_audit_sends_nothing(orthanc, tmp_path):
    (tmp_path / "release").mkdir()
    write_dicom(np.zeros((1, 8, 8)), tmp_path / "release" / "a", modality="ct", spacing=None, certificate=CERTIFICATE)
    result = _cli("export", tmp_path / "release", *_pacs_args(orthanc))
    assert result.exit_code == 2 and "audit.csv: missing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreachable_pacs_is_one_clear_line(tmp_path):
    _release(tmp_path / "release", {"a": ((1, 8, 8), True)})
    result = _cli("export", tmp_path / "release", "--pacs", f"127.0.0.1:{free_port()}", "--aet", "ME", "--no-progress")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "unreachable" in result.output and "refused" in result.output.lower()


def test_wrong_called_aet_is_rejected(orthanc, tmp_path):
    _release(tmp_path / "release", {"a": ((1, 8, 8), True)})
    for command in (["export", tmp_path / "release"], ["fetch", "--query", "PatientID=x", "--out", tmp_path / "out"]):
        result = _cli(*command, *_pacs_args(orthanc, called_aet="NOT-ORTHANC"))
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "rejected the association" in result.output and "NOT-ORTHANC" in result.output


@pytest.mark.parametrize("query, message", [("Nonsense=1", "not a DICOM keyword"), ("PatientID", "KEY=VALUE")])
def test_fetch_refuses_bad_queries(tmp_path, query, message):
    result = _cli("fetch", "--pacs", "127.0.0.1:1", "--aet", "ME", "--query", query, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.output


def test_calling_aet_unknown_to_the_pacs(orthanc, tmp_path):
    """Orthanc stores from anyone but answers C-FIND / C-GET only to registered AE titles."""
    _release(tmp_path / "release", {"a": ((1, 8, 8), True)})
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
        files = sorted((tmp_path / "release").glob(f"{item}.dcm"))
        assert bool(files) == released
        for path in files:
            assert _in_pacs(orthanc, pydicom.dcmread(path).SOPInstanceUID)
