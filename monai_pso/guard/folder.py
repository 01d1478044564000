"""The guard folder, and the one way to build a :class:`~monai_pso.guard.checker.PrivacyChecker`.

``monai-pso guard build SOURCE --out GUARD_DIR`` (:func:`build_guard`) indexes the training split with
each default check's embedder and calibrates its tau on held-out patients, into one folder::

    GUARD_DIR/
      guard.json                 format, created, package version, source, splits, ledger (relative path),
                                 checks: [{name, index, threshold, embedder, embedder_dir,
                                           embedder_fingerprint, index_fingerprint, tau}],
                                 content_sha256 (integrity hash of the rest; an edited file is refused)
      pixel/index/               whole-image pixel check (reference index; the release ledger lives here)
      pixel/threshold.json
      pixel-tiles/index/         tile check
      pixel-tiles/threshold.json
      copy/index/                copy check: equalised central field, query aligned over poses (absent with copy_check=False)
      copy/threshold.json
      copy-regions/index/        copy check on windows of half the image side
      copy-regions/threshold.json
      plausibility/index/        training images in the fidelity embedding, and the radius beyond which a
      plausibility/radius.json   draw is implausible (guard.json "plausibility": null with --no-plausibility,
                                 {checked: false, reason} with too few held-out images)
      identity/embedder/         re-identification network of the identity check (:mod:`monai_pso.guard.identity`;
      identity/index/            absent with --identity none or when left out: guard.json "identity" says why)
      identity/threshold.json

The default checks (see ``docs/guard.md``):

- ``pixel`` (whole image, query views: 1 pixel translations, turns of 2.5 and 5 degrees in 2D): catches
  copies, mirror images, turned, re-exposed and noisy copies;
- ``pixel-tiles`` (3 x 3 overlapping tiles plus the whole image at tile size, query views: translations
  of up to 2 pixels): catches a copied region pasted into another image;
- ``copy`` and ``copy-regions`` (:mod:`monai_pso.guard.copy_check`): equalised pixels, the query aligned
  over a grid of moves, turns and zooms, on the central field and on windows; catches near-copies the
  pixel checks' views do not undo (larger moves and turns, zoom, crops, gamma, JPEG, pasted regions).

An image is released only when it passes every check. :func:`load_checker` is the only factory of
checkers: the ``gate`` and ``generate`` commands, the bundles, :class:`~monai_pso.transforms.PrivacyGate`
and :class:`~monai_pso.handlers.PrivacyGuard` all call it, with a guard folder, a ready checker, or (the
advanced form) paired index folders and threshold files.

Examples
--------
>>> import tempfile
>>> guard_dir = Path(tempfile.mkdtemp()) / "guard"
>>> _ = build_guard("phantom:2d?patients=12&acquisitions=2&size=24", guard_dir, n_bootstrap=20, progress=False)
>>> checker = load_checker(guard_dir)
>>> checker.names, checker.ledger_dir == guard_dir / "pixel" / "index"
(['pixel', 'pixel-tiles', 'copy', 'copy-regions'], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_pso import __version__
from monai_pso.calibrate.threshold import check_seal, seal
from monai_pso.errors import DataSourceError, MonaiPsoError
from monai_pso.guard.checker import GuardCheck, PrivacyChecker
from monai_pso.guard.copy_check import build_copy_checks
from monai_pso.guard.entries import build_check
from monai_pso.guard.hashing import PatientHasher
from monai_pso.guard.identity import build_identity_check, check_identity_mode
from monai_pso.guard.plausibility import PlausibilityCheck, build_plausibility, plausibility_of_entry
from monai_pso.io import read_json, write_json_atomically

GUARD_FILE = "guard.json"
GUARD_FORMAT = "monai-pso/guard/1"

#: The default checks: name -> embedder settings (``monai_pso.embed.registry.create_embedder``).
DEFAULT_CHECKS: dict[str, dict[str, Any]] = {"pixel": {}, "pixel-tiles": {"tiles": 3}}


def build_guard(
    training: Any,
    out_dir: str | Path,
    split: str = "train",
    holdout: Any = None,
    holdout_split: str = "val",
    progress: bool = True,
    keep_ledger: bool = False,
    plausibility: bool = True,
    identity: str | Path | None = None,
    copy_check: bool = True,
    **calibration: Any,
) -> PrivacyChecker:
    """Index ``training``'s ``split`` with every default check, calibrate tau on ``holdout_split``, save to ``out_dir``.

    Parameters
    ----------
    training
        SOURCE string or data source whose ``split`` the guard protects.
    out_dir
        The guard folder (see the module docstring); an existing guard there is replaced, keeping its
        release ledger only with ``keep_ledger``.
    split, holdout, holdout_split
        The protected split; the held-out patients of the calibration (default ``training`` itself) and their split.
    progress
        Progress bars.
    keep_ledger
        Carry the release ledger of an index being replaced into the new one.
    plausibility
        Also build the plausibility check (:func:`~monai_pso.guard.plausibility.build_plausibility`,
        ``GUARD_DIR/plausibility/``): draws farther from the real data than held-out real images are
        are refused as ``implausible``.
    identity
        The identity check (:func:`~monai_pso.guard.identity.build_identity_check`, ``GUARD_DIR/identity/``):
        ``auto`` (``guard build``'s default), ``xray``, a saved embedder folder, or ``None`` / ``none``
        (left out; ``guard.json``'s ``identity`` block says so).
    copy_check
        Also build the copy checks ``copy`` and ``copy-regions`` (:func:`~monai_pso.guard.copy_check.build_copy_checks`).
    calibration
        More options of :func:`~monai_pso.calibrate.calibrate_threshold` (``rule``, ``n_bootstrap``...).

    Returns
    -------
    PrivacyChecker
        The checker of the saved folder (:func:`load_checker` of it).
    """
    from monai_pso.data import load_source
    from monai_pso.embed.registry import create_embedder

    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataSourceError(out_dir, "exists and is not a folder")
    check_identity_mode(identity)
    training = load_source(training)
    holdout = training if holdout is None else load_source(holdout)
    if not len(training.split(split)):
        raise DataSourceError(training.description, f"has no images in split {split!r} to protect")
    entries = []
    for name, settings in DEFAULT_CHECKS.items():
        entries.append(build_check(name, create_embedder("pixel", **settings), training, out_dir, split, holdout, holdout_split, progress, keep_ledger, **calibration))
    if copy_check is not False:
        entries.extend(build_copy_checks(training, out_dir, split, holdout, holdout_split, progress, **calibration))
    identity_entry, identity_block = build_identity_check(training, out_dir, identity, split, holdout, holdout_split, progress, **calibration)
    entries.extend([identity_entry] if identity_entry is not None else [])
    write_json_atomically(
        out_dir / GUARD_FILE,
        seal({
            "format": GUARD_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "source": training.description,
            "split": split,
            "holdout": holdout.description,
            "holdout_split": holdout_split,
            "ledger": entries[0]["index"],
            "checks": entries,
            "identity": identity_block,
            "plausibility": build_plausibility(training, holdout, out_dir, split, holdout_split, progress, n_bootstrap=calibration.get("n_bootstrap", 1000)) if plausibility else None,
        }),
    )
    return load_checker(out_dir)


def read_guard(guard_dir: str | Path) -> dict[str, Any]:
    """The ``guard.json`` of a guard folder, checked for its format and its integrity hash (an error names the file otherwise).

    Raises :class:`~monai_pso.errors.IntegrityError` when the file was edited after :func:`build_guard` wrote
    it (a tau, a check, a path) or carries no integrity hash (an older guard folder): build the guard again.
    """
    path = Path(guard_dir) / GUARD_FILE
    missing = "guard description not found: build the guard with `monai-pso guard build SOURCE --out GUARD_DIR`"
    document = read_json(path, what="guard description", missing=missing)
    if not isinstance(document, dict) or document.get("format") != GUARD_FORMAT or not document.get("checks"):
        raise DataSourceError(path, f"not a guard description of format {GUARD_FORMAT}")
    check_seal(document, path, "guard description", "build the guard again (monai-pso guard build SOURCE --out GUARD_DIR)")
    return document


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _checks_of_folder(guard_dir: Path) -> tuple[list[GuardCheck], Path]:
    document = read_guard(guard_dir)
    guard_dir = guard_dir.resolve()
    checks = []
    for entry in document["checks"]:
        embedder_dir = None if entry.get("embedder_dir") is None else guard_dir / entry["embedder_dir"]
        check = GuardCheck.create(guard_dir / entry["index"], guard_dir / entry["threshold"], embedder_dir=embedder_dir, name=entry["name"])
        if check.embedder_fingerprint != entry["embedder_fingerprint"] or check.index_fingerprint != entry["index_fingerprint"]:
            raise DataSourceError(guard_dir / GUARD_FILE, f"check {entry['name']}: its index or embedder changed since the guard was built; build it again")
        checks.append(check)
    return checks, guard_dir / document["ledger"]


def _plausibility_of_folder(guard_dir: Path) -> PlausibilityCheck | None:
    return plausibility_of_entry(read_guard(guard_dir).get("plausibility"), guard_dir.resolve(), guard_dir / GUARD_FILE)


def _checks_of_parts(index: Any, threshold: Any, embedder: Any, embedder_dir: Any) -> tuple[list[GuardCheck], Path | None]:
    indexes, thresholds = _as_list(index), _as_list(threshold)
    embedders = _as_list(embedder) if embedder is not None else [None] * len(indexes)
    embedder_dirs = _as_list(embedder_dir) if embedder_dir is not None else [None] * len(indexes)
    if not (len(indexes) == len(thresholds) == len(embedders) == len(embedder_dirs)):
        raise MonaiPsoError(f"give one threshold (and embedder) per index: {len(indexes)} indexes, {len(thresholds)} thresholds")
    for path, what in [*((i, "reference index") for i in indexes), *((t, "threshold") for t in thresholds)]:
        if isinstance(path, (str, Path)) and not Path(path).exists():
            raise DataSourceError(path, f"{what} not found (build a guard with `monai-pso guard build SOURCE --out GUARD_DIR`)")
    checks = [GuardCheck.create(i, t, e, d) for i, t, e, d in zip(indexes, thresholds, embedders, embedder_dirs)]
    primary = indexes[0]
    return checks, Path(primary) if isinstance(primary, (str, Path)) else None


def load_checker(
    guard: str | Path | PrivacyChecker | None = None,
    *,
    index: Any = None,
    threshold: Any = None,
    embedder: Any = None,
    embedder_dir: str | Path | Sequence[str | Path] | None = None,
    hasher: PatientHasher | None = None,
    salt_file: str | Path | None = None,
    plausibility: bool | PlausibilityCheck | None = None,
) -> PrivacyChecker:
    """The privacy checker of a guard folder, of a ready checker, or of paired indexes and thresholds.

    Parameters
    ----------
    guard
        A guard folder (:func:`build_guard`), or a ready :class:`PrivacyChecker` (returned, with the
        hasher replaced when one is given).
    index, threshold, embedder, embedder_dir
        The advanced form, instead of ``guard``: index folders (or objects) and their threshold files
        (or objects), paired; embedders (or their saved folders) for indexes whose embedder has weights.
    hasher, salt_file
        Salt of the nearest-patient hashes: a hasher, or a private file holding it (created when absent,
        after everything else was found valid); default a random salt never stored.
    plausibility
        The plausibility check: ``None`` the guard's own (a guard folder's, when it has one; a ready
        checker's), ``True`` the guard's own and an error when it has none, ``False`` none, or a
        :class:`~monai_pso.guard.plausibility.PlausibilityCheck` (e.g. beside paired indexes).

    Raises
    ------
    MonaiPsoError
        A missing or mismatched piece (the message names the file); nothing is created then.

    Examples
    --------
    >>> load_checker("no/such/guard")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monai_pso.errors.DataSourceError: no/such/guard/guard.json: guard description not found: build the guard with ...
    """
    if (guard is None) == (index is None):
        raise MonaiPsoError("give a guard folder (or checker), or --index and --threshold, not both")
    if isinstance(guard, PrivacyChecker):
        checks, ledger_dir = guard.checks, guard.ledger_dir
        hasher = hasher or guard.hasher
    elif guard is not None:
        checks, ledger_dir = _checks_of_folder(Path(guard).expanduser())
    else:
        if threshold is None:
            raise MonaiPsoError("give a threshold for every index")
        checks, ledger_dir = _checks_of_parts(index, threshold, embedder, embedder_dir)
    own = guard.plausibility if isinstance(guard, PrivacyChecker) else (_plausibility_of_folder(Path(guard).expanduser()) if guard is not None else None)
    if plausibility is True and own is None:
        raise DataSourceError(guard if isinstance(guard, (str, Path)) else "guard", "the guard has no plausibility check: build it with `monai-pso guard build` (without --no-plausibility)")
    chosen = plausibility if isinstance(plausibility, PlausibilityCheck) else (None if plausibility is False else own)
    if salt_file is not None:
        hasher = PatientHasher.from_file(salt_file)
    identity = guard.identity if isinstance(guard, PrivacyChecker) else (read_guard(Path(guard).expanduser()).get("identity") if guard is not None else None)
    return PrivacyChecker(checks, hasher, ledger_dir, chosen, identity)
