"""The readers on real data: MedMNIST, IXI NIfTI, TCIA CT and PET DICOM, and pydicom-data's DICOM variants."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_pso.data import load_source, read_image
from monai_pso.data.files import read_image_header
from monai_pso.errors import DataSourceError

pytestmark = pytest.mark.shared_data

# (train, val, test) counts and image shape, as ../shared/data/README.md states them.
MEDMNIST = {
    "breastmnist.npz": ((546, 78, 156), (28, 28), "us"),
    "pneumoniamnist_balanced_subset.npz": ((2428, 270, 468), (28, 28), "xray"),
    "adrenalmnist3d.npz": ((1188, 98, 298), (28, 28, 28), "ct"),
    "adrenalmnist3d_64.npz": ((1188, 98, 298), (64, 64, 64), "ct"),
}


@pytest.mark.parametrize("name", sorted(MEDMNIST))
def test_medmnist_files(shared_data, name):
    counts, shape, modality = MEDMNIST[name]
    src = load_source(str(shared_data / "medmnist" / name))
    assert tuple(len(src.split(s)) for s in ("train", "val", "test")) == counts
    assert len(src.patients()) == sum(counts)
    first = src[0]
    assert first.image.shape == (1, *shape) and first.image.dtype == np.uint8
    assert first.modality == modality and first.normalize == "uint8" and first.label in (0, 1)
    assert first.item_id == f"{Path(name).stem}-train-00000"


@pytest.fixture(scope="module")
def ixi(shared_data):
    return load_source(f"{shared_data / 'ixi_t1_2mm'}?modality=mri")


def test_ixi_volumes(ixi, shared_data):
    assert len(ixi) == 185 and len(ixi.patients()) == 185
    assert all(r.spacing == (2.0, 2.0, 2.0) and r.modality == "mri" and r.normalize == "mri" for r in ixi)
    with open(shared_data / "ixi_t1_2mm" / "participants.csv", newline="") as handle:
        subjects = {row["MRID"] for row in csv.DictReader(handle)}
    patients = {r.patient_id.removesuffix("_T1") for r in ixi}
    assert len(patients & subjects) > 0.9 * len(patients)  # the subject id is the file name (a few lack a row)
    values = read_image(ixi[0].image)
    assert values.shape == (1, 120, 120, 90) and np.isfinite(values).all() and values.max() > values.min() >= 0


def test_ixi_headers_all_120x120x90(ixi):
    assert {read_image_header(r.image).shape for r in ixi} == {(120, 120, 90)}  # the folder check read them too


@pytest.fixture(scope="module")
def chest_ct(shared_data):
    return load_source(f"{shared_data / 'ct_covid19_ny_sbu'}?mixed_shapes=1")


def test_ct_patients_and_studies(chest_ct):
    groups = chest_ct.by_patient()
    assert len(groups) == 10
    for patient, records in groups.items():
        assert all(r.item_id.split("/")[0] == patient for r in records)  # PatientID tag == folder name
        assert len({r.extra["study_uid"] for r in records}) == 2
        assert len({r.split for r in records}) == 1
    assert len(chest_ct) == 60  # 62 files, two of which repeat an instance (same SOPInstanceUID)
    assert all(r.modality == "ct" and r.normalize == "ct" and len(r.spacing) == 2 for r in chest_ct)


def test_ct_duplicates_are_reported(shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        load_source(f"{shared_data / 'ct_covid19_ny_sbu'}?mixed_shapes=1")
    assert caplog.text.count("duplicate") == 2


def test_ct_mixed_sizes_need_the_option(shared_data):
    with pytest.raises(DataSourceError, match="different shapes"):
        load_source(str(shared_data / "ct_covid19_ny_sbu"))


def test_ct_values_in_hounsfield_units(chest_ct):
    for record in chest_ct.records[::6]:
        values = read_image(record.image)
        inside = values[values > -1500]  # outside the scan circle some scanners store -2048 or -3024
        assert -1100 <= np.percentile(inside, 1) <= -800, record.item_id  # air
        assert values.max() < 10000


def test_pet_slices(shared_data):
    src = load_source(str(shared_data / "pet_acrin_flt_breast"))
    assert len(src) == 2 and len(src.patients()) == 2
    for record in src:
        ds = pydicom.dcmread(record.image)
        assert record.modality == "pet" and record.normalize == "pet" and record.patient_id == ds.PatientID
        values = read_image(record.image)
        assert values.shape == (1, 168, 168)
        assert values.max() == pytest.approx(ds.pixel_array.max() * float(ds.RescaleSlope) + float(ds.RescaleIntercept), rel=1e-5)


# ---------------------------------------------------------------------------------------------- pydicom-data


def _pydicom_data_files() -> list[Path]:
    try:
        import data_store
    except ImportError:
        return []
    return sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))


MUST_LOAD = {
    "emri_small.dcm",  # uncompressed multi-frame MR
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "OBXXXX1A_expb_2frame.dcm",  # big endian, multi-frame, palette colour
    "OBXXXX1A_rle.dcm",
    "MR2_UNCR.dcm",
    "RG1_UNCR.dcm",  # CR radiograph, MONOCHROME1
    "SC_rgb_expb_16bit.dcm",
    "eCT_Supplemental.dcm",  # enhanced CT, rescale in functional groups
}


SLOW = {"color3d_jpeg_baseline.dcm"}  # 120 colour JPEG frames: seconds to decode


def _expected_shape(path: Path) -> tuple[int, ...]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    frames = int(ds.get("NumberOfFrames") or 1)
    return (1, frames, ds.Rows, ds.Columns) if frames > 1 else (1, ds.Rows, ds.Columns)


@pytest.mark.skipif(not _pydicom_data_files(), reason="pydicom-data (data_store) is not installed")
@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in _pydicom_data_files()])
@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_pydicom_data_variant(path):
    try:
        values = read_image(str(path))
    except DataSourceError as error:
        assert path.name not in MUST_LOAD, str(error)
        assert error.location == str(path)
        assert "transfer syntax" in error.problem or "not a DICOM" in error.problem
        return
    assert values.shape == _expected_shape(path) and np.isfinite(values).all()


@pytest.mark.skipif(not _pydicom_data_files(), reason="pydicom-data (data_store) is not installed")
def test_pydicom_data_encodings_agree():
    folder = _pydicom_data_files()[0].parent
    reference = read_image(str(folder / "emri_small.dcm"))
    for name in ("emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"):
        assert np.array_equal(read_image(str(folder / name)), reference), name
    assert np.array_equal(read_image(str(folder / "SC_rgb_expb_16bit.dcm")), read_image(str(folder / "SC_rgb_16bit.dcm")))
    enhanced = read_image(str(folder / "eCT_Supplemental.dcm"))
    assert enhanced.min() >= -1024 and enhanced.dtype == np.float32  # stored uint16 + intercept -1024
    radiograph = pydicom.dcmread(folder / "RG1_UNCR.dcm")
    inverted = read_image(str(folder / "RG1_UNCR.dcm"))[0]
    assert np.corrcoef(inverted.ravel()[::97], radiograph.pixel_array.ravel()[::97])[0, 1] < -0.99  # MONOCHROME1 flipped
