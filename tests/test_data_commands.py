"""Data commands that help: ``data summary`` of a folder of several shapes, errors that say what to do about
them, and datalists whose ``label`` column holds class names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from monai_pso.cli.main import main
from monai_pso.data import load_source
from monai_pso.data.summary import load_for_summary, summarize
from monai_pso.errors import MIXED_SHAPES_HINT, RESAMPLE_HINT, DataSourceError, ImageValueError

pytestmark = pytest.mark.usefixtures("one_thread")

#: The class names of the datalists written here, and the indices they are read as (sorted order).
CLASSES = ("bacterial_pneumonia", "normal", "viral_pneumonia")


def write_pngs(folder: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    """One 8-bit PNG per name, of the given (rows, columns), with distinct values."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, (name, shape) in enumerate(shapes.items()):
        Image.fromarray(np.full(shape, 10 * number, np.uint8)).save(folder / f"{name}.png")
    return folder


def mixed_folder(tmp_path: Path) -> Path:
    """Eight images, one per patient: five 8x8, three 9x8."""
    return write_pngs(tmp_path / "mixed", {f"p{k}": (8, 8) if k < 5 else (9, 8) for k in range(8)})


def labelled_folder(tmp_path: Path, labels: list[str], suffix: str = ".csv") -> Path:
    """One PNG per label, and ``list.csv`` (or ``list.json``) naming them with those labels."""
    folder = write_pngs(tmp_path / "labelled", {f"img{k}": (8, 8) for k in range(len(labels))})
    rows = [{"image": f"img{k}.png", "patient_id": f"p{k}", "label": label} for k, label in enumerate(labels)]
    if suffix == ".csv":
        text = "image,patient_id,label\n" + "".join(f"{r['image']},{r['patient_id']},{r['label']}\n" for r in rows)
    else:
        text = json.dumps(rows)
    (folder / f"list{suffix}").write_text(text)
    return folder


# ------------------------------------------------------------------------------------------ mixed shapes


def test_summary_of_a_mixed_shape_folder_tables_the_shapes(tmp_path):
    folder = mixed_folder(tmp_path)
    result = CliRunner().invoke(main, ["data", "summary", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(folder)  # the SOURCE as given, not the one the summary read
    start = next(n for n, line in enumerate(lines) if line.startswith("2 image shapes"))
    assert RESAMPLE_HINT in lines[start]
    header, *rows = (line.split() for line in lines[start + 1 :])
    assert header[0] == "shape" and header[-1] == "all"
    assert {row[0]: row[-1] for row in rows} == {"8x8": "5", "9x8": "3"}
    for row in rows:  # each split's count, "-" for none, adds up to the total
        assert sum(int(cell) for cell in row[1:-1] if cell != "-") == int(row[-1])


def test_summary_counts_and_many_shapes_are_summed_up(tmp_path):
    folder = write_pngs(tmp_path / "many", {f"p{k}": (8 + k, 8) for k in range(5)})
    summary = summarize(load_for_summary(f"{folder}?ratios=1,0,0"))
    assert summary.to_dict()["splits"]["train"]["shapes"] == {f"{8 + k}x8": 1 for k in range(5)}
    text = summary.to_text()
    assert "5 shapes (below)" in text and "5 image shapes" in text and all(f"{8 + k}x8" in text for k in range(5))


def test_a_single_shape_has_no_shape_table(tmp_path):
    folder = write_pngs(tmp_path / "one", {f"p{k}": (8, 8) for k in range(4)})
    assert "image shapes" not in summarize(load_for_summary(str(folder))).to_text()


def test_summary_keeps_an_explicit_mixed_shapes_0(tmp_path):
    result = CliRunner().invoke(main, ["data", "summary", f"{mixed_folder(tmp_path)}?mixed_shapes=0"])
    assert result.exit_code == 2 and MIXED_SHAPES_HINT in result.stderr


def test_reading_a_mixed_shape_folder_says_what_to_do(tmp_path):
    with pytest.raises(DataSourceError, match="different shapes") as caught:
        load_source(str(mixed_folder(tmp_path)))
    assert MIXED_SHAPES_HINT in str(caught.value) and "datalist=" in str(caught.value) and "mixed_shapes=1" in str(caught.value)


def test_building_an_index_of_mixed_shapes_says_what_to_do(tmp_path):
    from monai_pso.embed.registry import create_embedder
    from monai_pso.index import build_index

    source = f"{mixed_folder(tmp_path)}?mixed_shapes=1&ratios=1,0,0"
    with pytest.raises(ImageValueError, match="one shape") as caught:
        build_index(source, create_embedder("pixel"), progress=False)
    assert MIXED_SHAPES_HINT in str(caught.value)


# ------------------------------------------------------------------------------------------ class names


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_class_name_labels_are_numbered_in_sorted_order(tmp_path, suffix):
    labels = ["normal", "viral_pneumonia", "bacterial_pneumonia", "normal", "bacterial_pneumonia", "viral_pneumonia"]
    folder = labelled_folder(tmp_path, labels, suffix)
    source = load_source(f"{folder}?datalist=list{suffix}")
    assert source.class_names == CLASSES
    assert [source.class_names[r.label] for r in sorted(source, key=lambda r: r.item_id)] == labels
    assert all(isinstance(r.label, int) for r in source)
    assert {source.split(name).class_names for name in ("train", "val", "test")} == {CLASSES}  # kept by split()


def test_summary_shows_the_class_numbering(tmp_path):
    folder = labelled_folder(tmp_path, ["normal", "viral_pneumonia", "bacterial_pneumonia", "normal"])
    result = CliRunner().invoke(main, ["data", "summary", f"{folder}?datalist=list.csv&ratios=1,0,0"])
    assert result.exit_code == 0, result.output
    assert "classes: 0 = bacterial_pneumonia, 1 = normal, 2 = viral_pneumonia" in result.stdout
    assert "0: 1, 1: 2, 2: 1" in result.stdout  # label counts by index
    figures = summarize(load_source(f"{folder}?datalist=list.csv")).to_dict()
    assert figures["classes"] == list(CLASSES)


def test_the_numbering_does_not_depend_on_the_order_of_the_rows(tmp_path):
    first = load_source(f"{labelled_folder(tmp_path / 'a', ['b', 'c', 'a'])}?datalist=list.csv")
    second = load_source(f"{labelled_folder(tmp_path / 'b', ['c', 'a', 'b'])}?datalist=list.csv")
    assert first.class_names == second.class_names == ("a", "b", "c")


def test_integer_labels_have_no_class_names(tmp_path):
    source = load_source(f"{labelled_folder(tmp_path, ['0', '1', '0 1'])}?datalist=list.csv")
    assert source.class_names is None and sorted(r.label for r in source if isinstance(r.label, int)) == [0, 1]


def test_once_a_label_is_a_name_every_label_is_a_name(tmp_path):
    source = load_source(f"{labelled_folder(tmp_path, ['normal', '1', 'normal'])}?datalist=list.csv")
    assert source.class_names == ("1", "normal")


@pytest.mark.parametrize(
    ("labels", "mentioned"),
    [(["normal", "0 1"], "are class names"), (["0.5", "1"], "'0.5' is not an integer")],
    ids=["list-among-names", "fraction"],
)
def test_labels_that_are_neither_integers_nor_names_are_refused(tmp_path, labels, mentioned):
    folder = labelled_folder(tmp_path, labels)
    result = CliRunner().invoke(main, ["data", "summary", f"{folder}?datalist=list.csv"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "list.csv" in line and mentioned in line


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.shared_data
def test_kermany_datalist_of_class_names(shared_data):
    folder = shared_data / "kermany_pedcxr_128"
    if not (folder / "datalist.csv").is_file():
        pytest.skip(f"{folder} not found")
    source = load_source(f"{folder}?datalist=datalist.csv")
    assert source.class_names == CLASSES
    counts = np.bincount([r.label for r in source])
    assert dict(zip(CLASSES, counts.tolist())) == {"bacterial_pneumonia": 2512, "normal": 1340, "viral_pneumonia": 1338}  # SOURCE.md


@pytest.mark.shared_data
def test_ct_folder_of_three_shapes_is_summarised(shared_data):
    folder = shared_data / "ct_covid19_ny_sbu"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    result = CliRunner().invoke(main, ["data", "summary", str(folder)])
    assert result.exit_code == 0, result.output
    assert "3 image shapes" in result.stdout and "512x512" in result.stdout
