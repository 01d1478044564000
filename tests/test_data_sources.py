"""SOURCE strings and readers on small files made here: phantom, MedMNIST, folders, DICOM series, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_pso.cli.main import main
from monai_pso.data import LoadRecordImaged, load_image, load_source, read_image
from monai_pso.data.files import read_image_header
from monai_pso.data.summary import summarize
from monai_pso.errors import DataSourceError, UnknownSourceError

# ---------------------------------------------------------------------------------------------- writers


def write_npz(path: Path, counts=(6, 2, 3), shape=(28, 28), labels_per_item=1, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (count, labels_per_item), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def write_ct_slice(path: Path, stored: np.ndarray, patient: str, series_uid: str, z: float, instance: int, **tags) -> Path:
    """A CT slice: stored int16 values, HU = stored * 2 - 1000 (slope 2, intercept -1000)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = tags.pop("sop_uid", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = tags.pop("study_uid", "1.2.3.4"), series_uid
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.8], 5.0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ct_folder(tmp_path: Path) -> Path:
    """Patient P1: one 4-slice series written out of order (z = 0, 3, 6, 9 mm); P2: one lone slice."""
    folder = tmp_path / "ct"
    (folder / "P1").mkdir(parents=True)
    (folder / "P2").mkdir()
    for name, index in zip("abcd", (2, 0, 3, 1)):  # file names do not follow z
        write_ct_slice(folder / "P1" / name, np.full((6, 5), index * 10, np.int16), "P1", "1.9.1", z=3.0 * index, instance=index + 1)
    write_ct_slice(folder / "P2" / "single.dcm", np.full((6, 5), 7, np.int16), "P2", "1.9.2", z=0.0, instance=1)
    return folder


def save_png(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    return path


def save_nifti(path: Path, values: np.ndarray, zooms=(1.5, 1.5, 3.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.diag([*zooms, 1.0])), str(path))
    return path


# ---------------------------------------------------------------------------------------------- phantom


def test_phantom_is_deterministic_and_seed_dependent(phantom_2d_source):
    first, again = load_source(phantom_2d_source), load_source(phantom_2d_source)
    other = load_source(phantom_2d_source.replace("seed=0", "seed=1"))
    assert [r.item_id for r in first] == [r.item_id for r in again]
    assert all(np.array_equal(a.image, b.image) and a.split == b.split for a, b in zip(first, again))
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other))


def test_phantom_patient_structure(phantom_3d_source):
    src = load_source(phantom_3d_source)
    groups = src.by_patient()
    assert len(groups) == 8 and all(len(records) == 2 for records in groups.values())
    assert len({r.item_id for r in src}) == len(src)
    assert all(r.image.shape == (1, 16, 16, 16) and r.label in (0, 1) for r in src)
    assert all(len({r.label for r in records}) == 1 for records in groups.values())


@pytest.mark.parametrize("source", ["phantom:2d?patients=30&acquisitions=3&size=16", "phantom:3d?patients=10&acquisitions=2&size=8&ratios=0.5,0.25,0.25"])
def test_splits_never_share_a_patient(source):
    src = load_source(source)
    splits_of = {p: {r.split for r in records} for p, records in src.by_patient().items()}
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {r.split for r in src} == {"train", "val", "test"}


# ---------------------------------------------------------------------------------------------- MedMNIST


def test_medmnist_keeps_file_splits_and_patients(tmp_path):
    path = write_npz(tmp_path / "breastmnist.npz", counts=(6, 2, 3))
    src = load_source(str(path))
    assert [len(src.split(s)) for s in ("train", "val", "test")] == [6, 2, 3]
    assert src[6].item_id == src[6].patient_id == "breastmnist-val-00000"
    assert src[0].modality == "us" and src[0].normalize == "uint8" and isinstance(src[0].label, int)
    assert np.array_equal(src[0].image[0], np.load(path)["train_images"][0])
    assert load_image(src[0]).max() <= 1.0


def test_medmnist_3d_multilabel_rgb_and_modality_option(tmp_path):
    volumes = load_source(str(write_npz(tmp_path / "organmnist3d_64.npz", shape=(8, 8, 8))))
    assert volumes[0].image.shape == (1, 8, 8, 8) and volumes[0].modality == "ct"
    chest = load_source(str(write_npz(tmp_path / "chestmnist.npz", labels_per_item=14)) + "?modality=other")
    assert isinstance(chest[0].label, tuple) and len(chest[0].label) == 14 and chest[0].modality == "other"
    rgb_path = write_npz(tmp_path / "pathmnist.npz", shape=(28, 28, 3))
    rgb = load_source(str(rgb_path))
    expected = np.rint(np.load(rgb_path)["train_images"][0].astype(np.float32) @ np.float32([0.299, 0.587, 0.114]))
    assert rgb[0].image.shape == (1, 28, 28) and rgb[0].image.dtype == np.uint8
    assert np.array_equal(rgb[0].image[0], expected.astype(np.uint8))


# ---------------------------------------------------------------------------------------------- folders


def test_nifti_folder_records(tmp_path):
    for name in ("sub-01_T1", "sub-02_T1"):
        save_nifti(tmp_path / "t1" / f"{name}.nii.gz", np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    (tmp_path / "participants.csv").write_text("id\nsub-01\n")  # ignored: not an image
    src = load_source(f"{tmp_path}?modality=mri")
    assert sorted(r.item_id for r in src) == ["t1/sub-01_T1", "t1/sub-02_T1"]
    assert {r.patient_id for r in src} == {"sub-01_T1", "sub-02_T1"}
    assert all(isinstance(r.image, str) and r.spacing == (1.5, 1.5, 3.0) and r.normalize == "mri" for r in src)
    assert read_image(src[0].image).shape == (1, 4, 5, 6)


def test_big_endian_nifti_loads_into_torch(tmp_path):
    path = tmp_path / "be.nii"
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4), nib.Nifti1Header(endianness=">")), str(path))
    assert nib.load(str(path)).get_data_dtype().byteorder == ">"
    item = LoadRecordImaged("image")({"image": str(path)})
    assert item["image"].shape == (1, 2, 3, 4) and float(item["image"].max()) == 23.0


def test_png_folder_grey_and_presets(tmp_path):
    colour = np.zeros((6, 7, 3), np.uint8)
    colour[..., 0] = 200
    save_png(tmp_path / "a" / "red.png", colour)
    save_png(tmp_path / "b" / "deep.png", np.full((6, 7), 4000, np.uint16))
    src = load_source(str(tmp_path))
    by_id = {r.item_id: r for r in src}
    assert by_id["a/red"].normalize == "uint8" and by_id["b/deep"].normalize == "minmax"
    assert np.allclose(read_image(by_id["a/red"].image), round(200 * 0.299), atol=1)
    assert read_image(by_id["b/deep"].image).max() == 4000


def test_dicom_series_assembled_sorted_in_hu(ct_folder):
    src = load_source(f"{ct_folder}?mixed_shapes=1")  # a volume and a lone slice
    by_patient = src.by_patient()
    (volume,) = by_patient["P1"]
    (single,) = by_patient["P2"]
    assert isinstance(volume.image, tuple) and len(volume.image) == 4
    values = read_image(volume.image)
    assert values.shape == (1, 4, 6, 5)
    assert [float(values[0, k, 0, 0]) for k in range(4)] == [-1000.0, -980.0, -960.0, -940.0]  # sorted by z, in HU
    assert volume.spacing == pytest.approx((3.0, 0.7, 0.8)) and volume.modality == "ct" and volume.normalize == "ct"
    assert volume.item_id == "P1/series-1.9.1" and volume.extra["series_uid"] == "1.9.1"
    assert isinstance(single.image, str) and single.spacing == pytest.approx((0.7, 0.8))
    assert read_image_header(volume.image).shape == (4, 6, 5)


def test_dicom_options_and_duplicates(ct_folder, caplog):
    assert len(load_source(f"{ct_folder}?series=0&mixed_shapes=1")) == 5
    copy = ct_folder / "P2" / "copy.dcm"
    copy.write_bytes((ct_folder / "P2" / "single.dcm").read_bytes())
    assert len(load_source(f"{ct_folder}?mixed_shapes=1")) == 2  # the copy repeats a SOPInstanceUID
    assert "duplicate" in caplog.text


def test_datalist_entry_may_name_a_series_folder(ct_folder):
    (ct_folder / "list.json").write_text(json.dumps([{"image": "P1", "label": 1, "split": "test"}]))
    (record,) = load_source(f"{ct_folder}?datalist=list.json")
    assert len(record.image) == 4 and record.patient_id == "P1" and (record.label, record.split) == (1, "test")
    assert read_image(record.image).shape == (1, 4, 6, 5)


def test_dicom_duplicate_position_is_refused(tmp_path):
    for name in ("a.dcm", "b.dcm"):
        write_ct_slice(tmp_path / name, np.zeros((4, 4), np.int16), "P", "1.9.9", z=1.0, instance=1)
    with pytest.raises(DataSourceError, match="same position"):
        load_source(str(tmp_path))


def test_datalist_csv_sets_patients_labels_splits(tmp_path):
    for name in ("x1", "x2", "x3", "unused"):
        save_png(tmp_path / "img" / f"{name}.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "list.csv").write_text("image,patient_id,label,split,age\nimg/x1.png,A,1,train,40\nimg/x2.png,A,0,train,\nimg/x3.png,B,0 1,test,51\n")
    src = load_source(f"{tmp_path}?datalist=list.csv")
    assert [r.item_id for r in src] == ["img/x1", "img/x2", "img/x3"]
    assert [r.patient_id for r in src] == ["A", "A", "B"]
    assert [r.label for r in src] == [1, 0, (0, 1)]
    assert [r.split for r in src] == ["train", "train", "test"]
    assert src[0].extra == {"age": "40"} and "age" not in src[1].extra


def test_datalist_json_monai_style(tmp_path):
    for name in ("a", "b", "c"):
        save_nifti(tmp_path / f"{name}.nii", np.zeros((3, 3, 3), np.float32))
    datalist = {"training": [{"image": "a.nii", "patient_id": "p1"}, {"image": "b.nii", "patient_id": "p2"}], "validation": [{"image": "c.nii", "item_id": "third"}]}
    (tmp_path / "data.json").write_text(json.dumps(datalist))
    src = load_source(f"{tmp_path}?datalist={tmp_path / 'data.json'}")
    assert [(r.item_id, r.split) for r in src] == [("a", "train"), ("b", "train"), ("third", "val")]


# ---------------------------------------------------------------------------------------------- summary


def test_summary_counts_and_ranges(tmp_path):
    path = write_npz(tmp_path / "pneumoniamnist.npz", counts=(5, 2, 2))
    src = load_source(str(path))
    figures = summarize(src, None).to_dict()["splits"]
    images = np.load(path)
    assert figures["train"]["items"] == figures["train"]["patients"] == 5
    assert figures["train"]["intensity"] == [float(images["train_images"].min()), float(images["train_images"].max())]
    assert figures["all"]["items"] == 9 and figures["all"]["shapes"] == {"28x28": 9}
    assert sum(figures["val"]["labels"].values()) == 2 and figures["val"]["modality"] == {"xray": 2}
    only_test = summarize(src, "test")
    assert list(only_test.splits) == ["test"] and "test" in only_test.to_text()


def test_cli_summary_prints_a_table(tmp_path):
    path = write_npz(tmp_path / "breastmnist.npz")
    result = CliRunner().invoke(main, ["data", "summary", str(path), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "val" in result.stdout and "28x28 (2)" in result.stdout


# ---------------------------------------------------------------------------------------------- errors


def _missing(tmp_path):
    return str(tmp_path / "absent.npz"), DataSourceError, "absent.npz"


def _corrupt_npz(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    return str(tmp_path / "broken.npz"), DataSourceError, "broken.npz"


def _npz_without_keys(tmp_path):
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 4, 4)))
    return str(tmp_path / "other.npz"), DataSourceError, "train_images"


def _corrupt_nifti(tmp_path):
    save_nifti(tmp_path / "good.nii.gz", np.zeros((4, 4, 4), np.int16))
    (tmp_path / "bad.nii.gz").write_bytes(np.random.default_rng(0).bytes(400))
    return str(tmp_path), DataSourceError, "bad.nii.gz"


def _corrupt_dicom(tmp_path):
    write_ct_slice(tmp_path / "good.dcm", np.zeros((4, 4), np.int16), "P", "1.9.3", z=0.0, instance=1)
    (tmp_path / "bad.dcm").write_bytes(np.random.default_rng(1).bytes(600))
    return str(tmp_path), DataSourceError, "bad.dcm"


def _mixed_shapes(tmp_path):
    save_png(tmp_path / "small.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "large.png", np.zeros((9, 8), np.uint8))
    return str(tmp_path), DataSourceError, "mixed_shapes=1"


def _mixed_kinds(tmp_path):
    save_png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    save_nifti(tmp_path / "y.nii", np.zeros((8, 8, 2), np.int16))
    return str(tmp_path), DataSourceError, "mixes kinds"


def _datalist_absent_files(tmp_path):
    save_png(tmp_path / "here.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "list.csv").write_text("image\nhere.png\ngone.png\n")
    return f"{tmp_path}?datalist=list.csv", DataSourceError, "gone.png"


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty"), DataSourceError, "empty"


def _unknown_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    return str(tmp_path / "notes.txt"), UnknownSourceError, "notes.txt"


def _unknown_option(tmp_path):
    return "phantom:2d?size=16&sizee=3", DataSourceError, "sizee"


BAD_SOURCES = [
    _missing,
    _corrupt_npz,
    _npz_without_keys,
    _corrupt_nifti,
    _corrupt_dicom,
    _mixed_kinds,
    _datalist_absent_files,
    _empty_folder,
    _unknown_source,
    _unknown_option,
]


# (mixed shapes: refused by load_source, summarised by `data summary`; tests/test_data_commands.py)
@pytest.mark.parametrize("make", BAD_SOURCES, ids=lambda f: f.__name__.strip("_"))
def test_bad_source_raises_and_cli_reports_one_line(tmp_path, make):
    source, error, mentioned = make(tmp_path)
    with pytest.raises(error) as caught:
        load_source(source)
    assert mentioned in str(caught.value)
    result = CliRunner().invoke(main, ["data", "summary", source])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and mentioned in lines[0]
    assert "Traceback" not in result.output


def test_mixed_shapes_accepted_when_asked(tmp_path):
    source, _, _ = _mixed_shapes(tmp_path)
    src = load_source(f"{source}?mixed_shapes=1")
    assert sorted(read_image(r.image).shape for r in src) == [(1, 8, 8), (1, 9, 8)]


def test_corrupt_pixels_fail_when_read(tmp_path):
    path = write_ct_slice(tmp_path / "cut.dcm", np.zeros((64, 64), np.int16), "P", "1.9.4", z=0.0, instance=1)
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(DataSourceError, match="cut.dcm"):
        read_image(str(path))
    assert pydicom.dcmread(path, stop_before_pixels=True).Rows == 64  # the header alone is intact
