"""Every figure table the README and docs quote matches the results file a committed script wrote.

A quoted table sits between two markers that name its results file (relative to the repository root)::

    <!-- figures: benchmarks/results/index_cpu.json skip-columns=1 -->
    | D | references | speed-up |
    |---|---|---|
    | 256 | 1,000,000 | 7.7x |
    <!-- /figures -->

Each body row must be backed by the file: the numbers of one JSON object (a result row, an experiment),
or of every object that the row's label cells name (a row "ldm_2d" joins the objects whose ``bundle`` is
``ldm_2d``), with the file's ``settings`` and ``machine``, account for every number in the row as it is
printed (rounded to the digits shown; also read as a percentage, seconds shown in minutes, MiB in GiB).
The first ``skip-columns`` cells are the labels and are not read as figures. A figure typed by hand, or
left behind when the results file was written again, fails here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"<!-- figures: (?P<path>\S+)(?: skip-columns=(?P<skip>\d+))? -->\n(?P<body>.*?)<!-- /figures -->", re.S)
# A number standing on its own (not part of a word such as T1 or 3D): optional sign, thousands
# separators, decimals, exponent; a trailing x, %, pp or dB is allowed.
NUMBER = re.compile(r"(?<![\w.])(?P<value>[-+\u2212]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+\u2212]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?P<unit>\s?(?:min\b|GiB\b|s\b|%|x\b)?)(?![\w.]*[A-Za-z_])")
CONTEXT_KEYS = ("settings", "machine")


def quoted_tables() -> Iterator[tuple[str, Path, int, list[str]]]:
    """(where, results file, columns to skip, body rows) of every marked block."""
    for document in DOCUMENTS:
        text = document.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            rows = [r for r in match["body"].splitlines() if r.startswith("|")]
            body = [r for r in rows[1:] if not re.fullmatch(r"\|[\s:|-]+\|?", r)]  # header and separator left out
            yield f"{document.relative_to(ROOT)}:{line}", ROOT / match["path"], int(match["skip"] or 0), body


def numbers_of(node: Any) -> list[float]:
    """Every number under ``node`` (booleans left out)."""
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)] if math.isfinite(node) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [number for child in children for number in numbers_of(child)]


def records_of(node: Any, root: bool = True) -> Iterator[dict[str, Any]]:
    """Every JSON object below the top level (a result row, an experiment, a sub-table)."""
    if isinstance(node, dict):
        # A collection of records (every value an object or a list: ``data_sets``, ``bundles``) is not
        # itself one record: backing a row by it would let the row take each number from anywhere below.
        if not root and not all(isinstance(v, (dict, list)) for v in node.values()):
            yield node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return
    for child in children:
        yield from records_of(child, root=False)


def printed(token: str) -> tuple[float, float]:
    """The value of a printed number and half a unit of its last digit (its rounding tolerance)."""
    text = token.replace(",", "").replace("\u2212", "-")
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    half_unit = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return float(text), half_unit * (1 + 1e-9)


def accounts_for(token: str, unit: str, values: list[float]) -> bool:
    """Whether one of ``values`` prints as ``token`` (directly, as a percentage, or seconds as minutes)."""
    shown, tolerance = printed(token)
    scales = (1.0, 100.0) + {"min": (1 / 60,), "GiB": (1 / 1024,)}.get(unit.strip(), ())
    return any(abs(abs(v * scale) - abs(shown)) <= tolerance for v in values for scale in scales)


def cells_of(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def unexplained(row: str, skip: int, records: list[dict[str, Any]], context: list[float]) -> list[str]:
    """The numbers of ``row`` (after its ``skip`` label cells) that ``records`` and ``context`` do not account for."""
    values = [n for record in records for n in numbers_of(record)] + context
    return [m["value"] for cell in cells_of(row)[skip:] for m in NUMBER.finditer(cell.replace("**", "")) if not accounts_for(m["value"], m["unit"], values)]


def named_by(row: str, skip: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that one of the row's label cells names by one of their string values."""
    words = set(re.findall(r"[\w.-]+", " ".join(cells_of(row)[:skip])))
    return [r for r in records if any(isinstance(v, str) and v in words for v in r.values())]


TABLES = list(quoted_tables())


def test_the_docs_mark_their_quoted_tables():
    assert len(TABLES) >= 3, "the README and docs quote benchmark tables between <!-- figures: FILE --> markers"


@pytest.mark.parametrize("where, results, skip, rows", TABLES, ids=[t[0] for t in TABLES])
def test_every_quoted_row_is_backed_by_one_record_of_its_results_file(where, results, skip, rows):
    assert results.is_file(), f"{where}: results file {results.relative_to(ROOT)} not found"
    document = json.loads(results.read_text())
    context = [n for key in CONTEXT_KEYS for n in numbers_of(document.get(key, {}))]
    records = list(records_of(document))
    assert rows, f"{where}: the marked block holds no table rows"
    for row in rows:
        backings = [[record] for record in records] + [named_by(row, skip, records)]
        missing = min((unexplained(row, skip, backing, context) for backing in backings), key=len)
        assert not missing, f"{where}: no record of {results.name} accounts for {missing} in row {row!r}"


def test_a_figure_typed_by_hand_is_caught():
    record = {"speedup": 1.7234, "references": 1_000_000, "time_s": 372.0}
    assert not unexplained("| 1,000,000 | **1.7x** | 6.2 min |", 0, [record], [])
    assert unexplained("| 1,000,000 | **7.7x** | 6.2 min |", 0, [record], []) == ["7.7"]
    assert unexplained("| 1,000,000 | 1.72x | 9 min |", 0, [record], []) == ["9"]


def test_a_row_is_backed_by_the_records_its_label_names():
    records = [{"bundle": "ldm_2d", "loop": "plain", "samples_per_s": 114.53}, {"bundle": "ldm_2d", "loop": "fast", "samples_per_s": 118.31}, {"bundle": "ldm_3d", "samples_per_s": 53.7}]
    row = "| ldm_2d, 256^2 | 114.5 | 118.3 |"
    assert named_by(row, 1, records) == records[:2] and not unexplained(row, 1, named_by(row, 1, records), [])
    assert unexplained("| ldm_3d | 114.5 |", 1, named_by("| ldm_3d | 114.5 |", 1, records), []) == ["114.5"]


def test_a_collection_of_records_does_not_back_a_row_by_itself():
    document = {"data_sets": {"a": {"name": "a", "auc": 0.61}, "b": {"name": "b", "share": 0.17}}}
    records = list(records_of(document))
    assert document["data_sets"] not in records
    assert all(unexplained("| 0.61 | 17% |", 0, [record], []) for record in records)
