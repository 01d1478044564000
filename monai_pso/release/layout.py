"""What a release folder holds, by name: the one layout every writer and reader of releases uses.

::

    RELEASE_DIR/
      images/<item>.png | <item>.nii.gz | <item>.dcm | <item>/NNNN.dcm   released images only
      audit.csv       one row per item, released or refused (monai_pso.guard.audit_log.audit_columns)
      draws.csv       generation only: one row per draw (the same columns, ``draw`` numbering the draws)
      summary.json    counts {requested, released, too_close, implausible, dropped, draws}, per-check tau
                      and fingerprints, the plausibility radius, distance statistics and histograms,
                      the generator's draw statistics
      distances.png   histograms of the distances, tau marked
      manifest.json   format, release id, created, package version, command, image format, source,
                      checks, counts, provenance (checkpoints, seed...), files [{path, item, sha256}],
                      items [{item, files, and the generator's request fields}]
    RELEASE_DIR.salt       beside the release, owner-only: the salt of the nearest-patient hashes and item ids
    RELEASE_DIR.items.csv  beside the release, owner-only: released item id -> the item's own id

Released items carry opaque ids (``r-`` and 16 hex digits of the salted hash of their own id), so no
name in a release says which training image a generated item was conditioned on, or what a gated
candidate was called; the private ``.items.csv`` maps them back for the data owner.

Examples
--------
>>> release_name("sub/../a b.nii.gz"), release_name("breastmnist-test-00001")
('sub/a_b', 'breastmnist-test-00001')
>>> salt_path("/data/release-1"), item_map_path("/data/release-1").name
(PosixPath('/data/release-1.salt'), 'release-1.items.csv')
"""

from __future__ import annotations

import re
from pathlib import Path

from monai_pso.errors import DataSourceError

RELEASE_FORMAT = "monai-pso/release/2"
IMAGES_DIR = "images"
AUDIT_FILE = "audit.csv"
DRAWS_FILE = "draws.csv"
SUMMARY_FILE = "summary.json"
DISTANCES_FILE = "distances.png"
MANIFEST_FILE = "manifest.json"

#: The counts every ``summary.json`` holds: items asked for, released, refused as too close to a training
#: image or as implausible (``too_close + implausible == dropped == requested - released``), and draws checked.
COUNT_KEYS = ("requested", "released", "too_close", "implausible", "dropped", "draws")

#: Suffixes stripped from item ids before the format's own suffix is added.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".npy")


def release_name(item_id: str) -> str:
    """A safe relative file stem for an item id: path segments kept, odd characters replaced."""
    stem = str(item_id)
    for suffix in IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in re.split(r"[\\/]+", stem) if p not in ("", ".", "..")]
    if not parts:
        raise DataSourceError(item_id, "item id gives no usable file name")
    return "/".join(parts)


def item_map_path(release_dir: str | Path) -> Path:
    """``RELEASE_DIR.items.csv``: the private map of opaque released ids to the items' own ids."""
    release_dir = Path(release_dir)
    return release_dir.with_name(release_dir.name + ".items.csv")


def salt_path(release_dir: str | Path) -> Path:
    """``RELEASE_DIR.salt``: the private salt file kept beside (never inside) a release."""
    release_dir = Path(release_dir)
    return release_dir.with_name(release_dir.name + ".salt")
