"""write_dicom: valid IODs (dciodvfy), synthetic markings, certificate, geometry, pixel values, atomicity."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_pso.data.dicom_certificate import PrivacyCertificate, is_synthetic
from monai_pso.data.dicom_iod import modality_profile
from monai_pso.data.dicom_writer import write_dicom
from monai_pso.errors import DicomWriteError, ImageValueError

CERTIFICATE = {
    "tau": 0.25,
    "nn_distance": 0.4,
    "index_fingerprint": "index-fp-1234",
    "embedder_fingerprint": "embedder-fp-5678",
    "release_id": "release-42",
    "nearest_patient_hash": "hash-of-a-training-patient",
}
#: (modality, image shape, spacing in array order)
CASES = [
    ("ct", (1, 12, 10), (0.7, 0.8)),
    ("ct", (1, 3, 12, 10), (2.5, 0.7, 0.8)),
    ("mri", (1, 12, 10), (1.0, 1.2)),
    ("mri", (1, 3, 12, 10), (3.0, 1.0, 1.2)),
    ("pet", (1, 12, 10), (4.0, 4.0)),
    ("pet", (1, 3, 12, 10), (3.27, 4.0, 4.0)),
    ("xray", (1, 12, 10), (0.14, 0.15)),
    ("other", (1, 12, 10), (1.0, 1.0)),
    ("us", (1, 3, 12, 10), (1.0, 0.3, 0.3)),
]
IDS = [f"{modality}-{len(shape) - 1}d" for modality, shape, _ in CASES]


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    image.flat[0], image.flat[1] = 0.0, 1.0  # both ends of the range
    return image


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def written(request, tmp_path_factory) -> tuple[str, np.ndarray, tuple[float, ...], list[Path]]:
    modality, shape, spacing = request.param
    image = _image(shape)
    paths = write_dicom(image, tmp_path_factory.mktemp(modality) / "synthetic-0001", modality=modality, spacing=spacing, certificate=CERTIFICATE)
    return modality, image, spacing, paths


def test_dciodvfy_reports_no_error(written):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) not installed; run .ci/install-system-deps")
    for path in written[3]:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def test_files_are_marked_synthetic_and_carry_the_certificate(written):
    modality, _, _, paths = written
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.ImageType[0] == "DERIVED" and ds.ImageType[1] in ("SECONDARY", "PRIMARY")
        assert ds.SeriesDescription.startswith("SYNTHETIC")
        assert ds.PatientIdentityRemoved == "YES" and "monai-pso" in ds.DeidentificationMethod
        assert str(ds.PatientName).startswith("SYNTHETIC^") and ds.PatientID.startswith("SYNTHETIC")
        assert ds.BurnedInAnnotation == "NO"
        assert ds.Modality == modality_profile(modality).dicom_modality
        assert ds.SOPClassUID == modality_profile(modality).sop_class_uid == ds.file_meta.MediaStorageSOPClassUID
        assert is_synthetic(ds)
        certificate = PrivacyCertificate.read_from(ds)
        assert (certificate.tau, certificate.nn_distance, certificate.release_id) == (0.25, 0.4, "release-42")
        assert certificate.index_fingerprint == "index-fp-1234" and certificate.embedder_fingerprint == "embedder-fp-5678"
        assert "nn_distance=0.4 >= tau=0.25" in ds.ImageComments
        assert b"hash-of-a-training-patient" not in path.read_bytes()


def test_series_shares_uids_and_steps_through_space(written):
    modality, image, spacing, paths = written
    datasets = [pydicom.dcmread(path) for path in paths]
    assert len(datasets) == (image.shape[1] if image.ndim == 4 else 1)
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID"):
        assert len({str(ds.get(uid)) for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(datasets) + 1))
    first = datasets[0]
    spacing_tag = "ImagerPixelSpacing" if modality == "xray" else "PixelSpacing"
    assert [float(v) for v in first[spacing_tag].value] == pytest.approx(spacing[-2:])
    assert (first.Rows, first.Columns) == image.shape[-2:]
    if image.ndim == 4:
        assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
        z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
        assert np.diff(z) == pytest.approx([spacing[0]] * (len(z) - 1))
        assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]


def test_pixels_map_back_to_modality_units(written):
    modality, image, _, paths = written
    profile = modality_profile(modality)
    stack = image[0] if image.ndim == 4 else image
    for path, expected in zip(paths, stack):
        ds = pydicom.dcmread(path)
        real = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        assert np.abs(real - profile.to_real(np.rint(expected.astype(np.float64) * profile.max_stored))).max() == 0
        assert np.abs(ds.pixel_array / profile.max_stored - expected).max() <= 0.5 / profile.max_stored + 1e-7
    if modality == "ct":  # the ct preset window: 0 -> -1000 HU, 1 -> 1000 HU
        ds = pydicom.dcmread(paths[0])
        real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert (real.flat[0], real.flat[1]) == (-1000, 1000) and ds.RescaleType == "HU"


def test_certificate_survives_implicit_vr_re_encoding(tmp_path):
    """A PACS may store or send Implicit VR: the private elements come back as raw bytes (UN)."""
    ds = pydicom.dcmread(write_dicom(_image((1, 8, 8)), tmp_path / "a", modality="pet", spacing=None, certificate=CERTIFICATE)[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True)
    again = pydicom.dcmread(tmp_path / "implicit.dcm")
    assert again[0x0011, 0x1003].VR == "UN" and is_synthetic(again)
    assert PrivacyCertificate.read_from(again) == PrivacyCertificate.from_mapping(CERTIFICATE)


def test_every_write_gets_new_uids(tmp_path):
    first, second = (pydicom.dcmread(write_dicom(_image((1, 8, 8)), tmp_path / name, modality="mri", spacing=None, certificate=CERTIFICATE)[0])
                     for name in ("a", "b"))
    for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert first.get(uid) != second.get(uid)


def test_rewriting_a_series_replaces_it_without_leftovers(tmp_path):
    write_dicom(_image((1, 4, 8, 8)), tmp_path / "vol", modality="ct", spacing=None, certificate=CERTIFICATE)
    paths = write_dicom(_image((1, 2, 8, 8), seed=1), tmp_path / "vol", modality="ct", spacing=None, certificate=CERTIFICATE)
    assert sorted((tmp_path / "vol").iterdir()) == paths
    assert [p.name for p in tmp_path.iterdir()] == ["vol"]  # no temporary folders left


@pytest.mark.parametrize("modality, normalize", [("ct", "ct"), ("other", "none")])
def test_round_trip_through_the_dicom_folder_reader(tmp_path, modality, normalize):
    from monai_pso.data import load_image, load_source

    image = _image((1, 4, 12, 10))
    write_dicom(image, tmp_path / "vol", modality=modality, spacing=(2.0, 0.5, 0.6), certificate=CERTIFICATE)
    (record,) = load_source(f"{tmp_path}?normalize={normalize}").records
    assert record.modality == modality and record.spacing == pytest.approx((2.0, 0.5, 0.6))
    assert np.abs(load_image(record) - image).max() <= 0.5 / modality_profile(modality).max_stored + 1e-6


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"image": np.zeros((1, 2, 8, 8)), "modality": "xray"}, DicomWriteError, "2D projection"),
        ({"modality": "ultrasound"}, DicomWriteError, "modality=ultrasound"),
        ({"image": np.full((1, 8, 8), np.nan)}, ImageValueError, "NaN"),
        ({"image": np.zeros((8, 8))}, ImageValueError, "shaped"),
        ({"spacing": (1.0, -1.0)}, DicomWriteError, "spacing"),
        ({"spacing": (1.0, 1.0, 1.0)}, DicomWriteError, "spacing"),
        ({"certificate": {"nn_distance": 0.5}}, DicomWriteError, "tau"),
        ({"modality": "ct", "preset": "mri"}, DicomWriteError, "HU presets"),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path, kwargs, error, message):
    arguments = {"image": np.zeros((1, 8, 8)), "modality": "mri", "spacing": None, "certificate": CERTIFICATE, **kwargs}
    with pytest.raises(error, match=message):
        write_dicom(arguments.pop("image"), tmp_path / "out", **arguments)
    assert list(tmp_path.iterdir()) == []
