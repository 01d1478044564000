"""The release ledger: every release made from one training set, kept with its index, hash-chained.

Singling-out and linkage risks do not compose across releases (two releases that are each safe can
together isolate a patient), so every release drawn against an index is recorded beside it and the
cumulative audit (``monai-pso audit --cumulative``) tests their union.

Files in ``INDEX_DIR``::

    ledger.jsonl      one JSON object per line, one line per release, oldest first
    ledger.head.json  {"entries": n, "hash": <hash of entry n>}: detects entries cut off the end
    ../.NAME.lock     beside the index folder: taken (monai_pso.io.folder_lock) while an entry is appended

An entry holds ``seq`` (1, 2, ...), ``time`` (UTC, ISO 8601), ``command`` (``gate`` or ``generate``),
``release_path`` (absolute), ``files`` (relative path -> sha256 of each released file),
``manifest_sha256``, ``threshold``, ``embedder_fingerprint``, ``index_fingerprint``, ``audit`` (a
summary, or ``null``), ``prev_hash`` (the previous entry's ``hash``; 64 zeros for the first) and
``hash``: the sha256 of the entry's canonical JSON (sorted keys, no spaces, UTF-8) without ``hash``.
:func:`verify_ledger` recomputes every hash and link, so an edited, deleted, inserted or reordered
entry is reported with the line and entry it concerns; the head file catches entries deleted from the
end, which a chain alone cannot. The chain protects against accidents and against edits by anyone
who cannot also rewrite every later entry and the head; against a deliberate forger with write
access, publish the head hash elsewhere (e.g. with the release) and compare.

Appending takes the lock, re-verifies the chain, writes the whole new ledger to a temporary file in
the same folder, fsyncs it and renames it into place, then does the same for the head. A crash leaves
either the old ledger or the new one, never half a line; a ledger one entry ahead of its head (a
crash between the two renames) is accepted and the head is repaired by the next append.

Examples
--------
>>> import tempfile
>>> index_dir = tempfile.mkdtemp()
>>> first = append_entry(index_dir, {"command": "gate", "release_path": "/r1", "files": {}})
>>> second = append_entry(index_dir, {"command": "gate", "release_path": "/r2", "files": {}})
>>> [e.seq for e in verify_ledger(index_dir)], second.prev_hash == first.hash
([1, 2], True)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso.errors import DataSourceError, FingerprintMismatchError, LedgerIntegrityError, MonaiPsoError
from monai_pso.io import canonical_json, folder_lock, read_json, sha256_file, write_json_atomically, write_text_atomically
from monai_pso.release.manifest import MANIFEST_FILE, hash_release, listed_files, manifest_threshold, read_manifest, release_fingerprints

LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "ledger.head.json"
#: The files that hold the ledger.
LEDGER_FILES = (LEDGER_FILE, HEAD_FILE)
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded release (see the module docstring for the fields)."""

    seq: int
    time: str
    command: str
    release_path: str
    files: dict[str, str]
    manifest_sha256: str | None
    threshold: float | None
    embedder_fingerprint: str | None
    index_fingerprint: str | None
    audit: dict[str, Any] | None
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The entry without its own hash: what :attr:`hash` is computed over."""
        document = asdict(self)
        document.pop("hash")
        return document

    def computed_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.body())).hexdigest()


#: Fields a caller supplies; ``seq``, ``prev_hash`` and ``hash`` are the ledger's.
CALLER_FIELDS = ("time", "command", "release_path", "files", "manifest_sha256", "threshold", "embedder_fingerprint", "index_fingerprint", "audit")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_line(path: Path, number: int, line: str) -> LedgerEntry:
    try:
        document = json.loads(line)
        return LedgerEntry(**{name: document[name] for name in LedgerEntry.__dataclass_fields__})
    except (ValueError, TypeError, KeyError) as error:
        raise LedgerIntegrityError(f"{path} line {number}: not a ledger entry ({type(error).__name__}: {error})") from None


def read_entries(index_dir: str | Path) -> list[LedgerEntry]:
    """The entries as written, unverified (an empty list when there is no ledger yet)."""
    path = Path(index_dir) / LEDGER_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [_parse_line(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _read_head(index_dir: Path) -> dict[str, Any] | None:
    path = index_dir / HEAD_FILE
    if not path.exists():
        return None
    head = read_json(path, LedgerIntegrityError, "ledger head")
    try:
        return {"entries": int(head["entries"]), "hash": str(head["hash"])}
    except (ValueError, TypeError, KeyError) as error:
        raise LedgerIntegrityError(f"{path}: not a ledger head ({error})") from None


def _check_chain(path: Path, entries: list[LedgerEntry]) -> None:
    previous = GENESIS_HASH
    for line, entry in enumerate(entries, start=1):
        where = f"{path} line {line} (entry {entry.seq}, release {entry.release_path})"
        if entry.seq != line:
            if entry.seq > line:
                raise LedgerIntegrityError(f"{where}: entry {line} is missing (deleted), or entries were reordered")
            raise LedgerIntegrityError(f"{where}: entries out of order (entry {entry.seq} found after entry {line - 1})")
        if entry.computed_hash() != entry.hash:
            raise LedgerIntegrityError(f"{where}: the entry was edited after it was written (its hash does not match its contents)")
        if entry.prev_hash != previous:
            raise LedgerIntegrityError(f"{where}: does not chain to entry {line - 1} (an entry before it was replaced)")
        previous = entry.hash


def verify_ledger(index_dir: str | Path) -> list[LedgerEntry]:
    """Check every hash and link of the ledger and its head; return the entries, oldest first.

    Raises
    ------
    LedgerIntegrityError
        Naming the line and entry at fault: edited, missing, reordered, or cut off the end.
    """
    index_dir = Path(index_dir)
    path = index_dir / LEDGER_FILE
    head = _read_head(index_dir)  # before the ledger: appends rename the ledger first, then the head
    entries = read_entries(index_dir)
    _check_chain(path, entries)
    if head is None:
        if entries:
            raise LedgerIntegrityError(f"{index_dir / HEAD_FILE}: missing although the ledger holds {len(entries)} entries")
        return entries
    if head["entries"] > len(entries):
        raise LedgerIntegrityError(
            f"{path}: entries {len(entries) + 1} to {head['entries']} are missing (the head records {head['entries']} entries, "
            f"the ledger ends at entry {len(entries)})"
        )
    if head["entries"] and entries[head["entries"] - 1].hash != head["hash"]:
        raise LedgerIntegrityError(f"{path} line {head['entries']}: entry {head['entries']} is not the one the head recorded")
    if len(entries) > head["entries"] + 1:
        raise LedgerIntegrityError(f"{path}: {len(entries) - head['entries']} entries after the recorded head (entry {head['entries']})")
    return entries


def ledger_files(index_dir: str | Path) -> list[str]:
    """Names of the ledger files in ``index_dir`` (empty when it holds no ledger)."""
    return [name for name in LEDGER_FILES if (Path(index_dir) / name).exists()]


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def append_entry(index_dir: str | Path, fields: Mapping[str, Any]) -> LedgerEntry:
    """Verify the ledger, then append one entry made of ``fields`` (see :data:`CALLER_FIELDS`).

    Missing fields default to ``None`` (``time``: now, ``files``: empty). Returns the new entry.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise DataSourceError(index_dir, "index folder not found")
    unknown = sorted(set(fields) - set(CALLER_FIELDS))
    if unknown:
        raise MonaiPsoError(f"unknown ledger fields: {', '.join(unknown)}")
    with folder_lock(index_dir):
        entries = verify_ledger(index_dir)
        values = {name: fields.get(name) for name in CALLER_FIELDS}
        values["time"] = values["time"] or _now()
        values["files"] = dict(values["files"] or {})
        draft = LedgerEntry(seq=len(entries) + 1, prev_hash=entries[-1].hash if entries else GENESIS_HASH, hash="", **values)
        entry = LedgerEntry(**{**asdict(draft), "hash": draft.computed_hash()})
        lines = [canonical_json(asdict(e)).decode("utf-8") for e in [*entries, entry]]
        write_text_atomically(index_dir / LEDGER_FILE, "\n".join(lines) + "\n", fsync=True)
        write_json_atomically(index_dir / HEAD_FILE, {"entries": entry.seq, "hash": entry.hash}, fsync=True, indent=None)
        _sync_folder(index_dir)
    return entry


def append_release(
    index_dir: str | Path,
    release_dir: str | Path,
    command: str = "gate",
    audit: Mapping[str, Any] | None = None,
    index_fingerprint: str | None = None,
) -> LedgerEntry:
    """Record the release in ``release_dir`` (its ``manifest.json`` and files) in the index's ledger.

    The one line the ``gate`` and ``generate`` commands call after writing a release. Every file in the
    folder but the manifest is hashed (and checked against the manifest's sha256s where it lists
    them); see :mod:`monai_pso.release.manifest` for the manifest fields read.

    Parameters
    ----------
    index_dir
        The index the release was gated against; the ledger lives there.
    release_dir
        The release folder (images, ``audit.csv``, ``summary.json``, ``manifest.json``).
    command
        What made the release (``gate``, ``generate``).
    audit
        A summary of an audit of this release, if one was run (e.g. the head of ``report.json``).
    index_fingerprint
        The fingerprint of the index in ``index_dir``; when given, a manifest naming another index
        is refused (:class:`~monai_pso.errors.FingerprintMismatchError`).

    Examples
    --------
    >>> append_release("runs/index", "runs/release-1", command="gate")  # doctest: +SKIP
    LedgerEntry(seq=1, ...)
    """
    release_dir = Path(release_dir).resolve()
    manifest = read_manifest(release_dir)
    index_fp, embedder_fp = release_fingerprints(manifest)
    if index_fingerprint is not None and index_fp is not None and index_fp != index_fingerprint:
        raise FingerprintMismatchError(f"{release_dir / MANIFEST_FILE}: made against index {index_fp[:12]}, not {index_fingerprint[:12]} in {index_dir}")
    return append_entry(
        index_dir,
        {
            "command": command,
            "release_path": str(release_dir),
            "files": hash_release(release_dir, listed_files(manifest)),
            "manifest_sha256": sha256_file(release_dir / MANIFEST_FILE),
            "threshold": manifest_threshold(manifest),
            "embedder_fingerprint": embedder_fp,
            "index_fingerprint": index_fp or index_fingerprint,
            "audit": dict(audit) if audit is not None else None,
        },
    )
