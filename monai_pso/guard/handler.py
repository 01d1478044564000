"""``PrivacyGuard``: the ignite handler that lets only images far enough from every training image out of a
generation engine.

Attached to a generation workflow (any ignite ``Engine`` / ``monai.engines`` workflow whose
``engine.state.output`` holds generated images), on every ``ITERATION_COMPLETED`` it

1. checks each generated image with a :class:`~monai_pso.guard.checker.PrivacyChecker`;
2. has each rejected image redrawn by ``regenerate(item, attempt)`` (``attempt`` = 1, 2, ...), at most
   ``max_attempts`` times; an image still rejected after that is dropped and counted;
3. replaces ``engine.state.output`` by the released images only (see *Output layouts*), and sets
   ``engine.state.privacy_released_mask`` (bool per original position) and ``engine.state.privacy_sample_ids``;
4. appends one row per check to ``save_dir/audit.csv`` (:data:`HANDLER_AUDIT_COLUMNS`, flushed per row);
5. raises the memorization alarm when more than ``alarm_rate`` of all checks so far were rejections
   (after ``alarm_min_checks`` checks): a logger warning, ``engine.state.privacy_alarm = True``, the
   custom event :attr:`PrivacyEvents.MEMORIZATION_ALARM`, and with ``raise_on_alarm`` a
   :class:`~monai_pso.errors.PrivacyViolationError`.

On ``COMPLETED`` it writes ``save_dir/summary.json`` (counts, rejection rate, per-check distance statistics and
histograms, dropped sample ids, thresholds and fingerprints) and ``save_dir/distances.png``.

Fail closed: if anything goes wrong while checking (a NaN image, a wrong shape, a failing ``regenerate``),
``engine.state.output`` is emptied before the error propagates, so no later handler sees an unchecked image.
Attach the guard *before* any handler that saves or sends images (ignite runs handlers in attachment
order), and do not save images in the workflow's ``postprocessing``.

Output layouts (``image_key``, default ``"pred"``):

- a list of per-sample dicts (MONAI's decollated output, :class:`monai_pso.engines.GenerationWorkflow`):
  the list keeps the released items, each with :data:`~monai_pso.guard.transforms.DECISION_KEYS` and a
  ``certificate`` dict (read by :class:`monai_pso.engines.ReleaseWriter`);
- a dict of batched values: ``image_key`` becomes the stacked released images, every other value with one
  entry per sample is subset alike, and ``privacy_released_mask`` / ``privacy_sample_ids`` are added;
- a bare tensor ``(B, 1, *spatial)``: replaced by the released images.

Examples
--------
>>> guard = PrivacyGuard(["idx-pixel", "idx-tiles"], ["tau-pixel.json", "tau-tiles.json"], save_dir="run/privacy",  # doctest: +SKIP
...                      regenerate=workflow.regenerate, max_attempts=3)  # doctest: +SKIP
>>> guard.attach(workflow)          # before the ReleaseWriter  # doctest: +SKIP
>>> workflow.run()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, EventEnum, Events

from monai_pso import __version__
from monai_pso.errors import ImageValueError, PrivacyViolationError
from monai_pso.guard.audit_log import AuditLog
from monai_pso.guard.checker import Decisions, PrivacyChecker
from monai_pso.guard.hashing import PatientHasher
from monai_pso.guard.outputs import GeneratedBatch
from monai_pso.guard.report import distance_statistics, plot_distances
from monai_pso.guard.storage import as_stored
from monai_pso.guard.transforms import DECISION_KEYS
from monai_pso.io import write_json_atomically

#: Columns of ``audit.csv``: one row per check of a generated image. ``decision`` is ``released``,
#: ``rejected`` (to be redrawn) or ``dropped`` (rejected with no attempt left).
HANDLER_AUDIT_COLUMNS = ("sample_id", "attempt", "nn_distance", "threshold", "released", "decision", "nearest_patient_hash", "check", "time")


class PrivacyEvents(EventEnum):
    """Custom ignite events fired by :class:`PrivacyGuard`."""

    MEMORIZATION_ALARM = "memorization_alarm"


class PrivacyGuard:
    """Gate a generation engine's output, redrawing rejected images (see the module docstring).

    Parameters
    ----------
    index, threshold
        Index folder (or object) and threshold JSON (or object), or paired lists of them.
    save_dir
        Where ``audit.csv``, ``summary.json`` and ``distances.png`` go.
    checker
        A ready :class:`~monai_pso.guard.checker.PrivacyChecker` instead of ``index`` / ``threshold``.
    embedder
        The index's embedder, when it cannot be rebuilt from the index's settings.
    regenerate
        ``regenerate(item, attempt) -> item dict or image``: a new draw for a rejected sample. ``item``
        is the sample's dict (its request, for a list output; the per-sample values, for a dict output);
        ``None``: rejected images are dropped at once.
    max_attempts
        Redraws per sample at most.
    image_key, id_key
        Where images and sample ids sit in each item (ids default to ``e<epoch>-i<iteration>-<position>``).
    batch_transform
        ``batch_transform(engine.state.batch) -> list of dicts``: per-sample values (conditions) merged
        into the item handed to ``regenerate`` (dict and tensor outputs).
    salt, salt_file
        Salt of the nearest-patient hashes: given, or kept (hex) in a private file (created when absent);
        default a random salt never stored.
    store_as, modality
        Check the values a ``png`` / ``nifti`` / ``dicom`` file will hold (the released images are
        replaced by them), so the certificate holds for the written file.
    alarm_rate, alarm_min_checks, raise_on_alarm
        The memorization alarm.
    release_id
        Written into each certificate (default: a random id).
    bins
        Histogram bins of the summary.
    """

    def __init__(
        self,
        index: Any = None,
        threshold: Any = None,
        save_dir: str | Path = "privacy",
        *,
        checker: PrivacyChecker | None = None,
        embedder: Any = None,
        regenerate: Callable[[dict[str, Any], int], Any] | None = None,
        max_attempts: int = 3,
        image_key: str = "pred",
        id_key: str = "item_id",
        batch_transform: Callable[[Any], list[dict[str, Any]]] | None = None,
        salt: str | bytes | None = None,
        salt_file: str | Path | None = None,
        store_as: str | None = None,
        modality: str = "other",
        alarm_rate: float = 0.2,
        alarm_min_checks: int = 20,
        raise_on_alarm: bool = False,
        release_id: str | None = None,
        bins: int = 30,
    ) -> None:
        if max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0, got {max_attempts}")
        hasher = PatientHasher.from_file(salt_file) if salt_file is not None else PatientHasher(salt)
        self.checker = checker or PrivacyChecker.create(index, threshold, embedder, hasher)
        self.save_dir = Path(save_dir)
        self.regenerate = regenerate
        self.max_attempts = max_attempts
        self.image_key, self.id_key = image_key, id_key
        self.batch_transform = batch_transform
        self.store_as, self.modality = store_as, modality
        self.alarm_rate, self.alarm_min_checks, self.raise_on_alarm = alarm_rate, alarm_min_checks, raise_on_alarm
        self.release_id = release_id or uuid.uuid4().hex
        self.bins = bins
        self.logger = logging.getLogger(__name__)
        self._reset()

    def _reset(self) -> None:
        self.counts = {"generated": 0, "checks": 0, "released": 0, "rejected": 0, "regenerated": 0, "dropped": 0, "first_attempt_rejected": 0}
        self.dropped_ids: list[str] = []
        self.alarm = False
        self._distances: dict[str, list[np.ndarray]] = {c.name: [] for c in self.checker.checks}
        self._log: AuditLog | None = None

    def attach(self, engine: Engine) -> None:
        """Register the custom event and the handlers (checking on every ``ITERATION_COMPLETED``)."""
        if not engine.has_registered_events(PrivacyEvents.MEMORIZATION_ALARM):
            engine.register_events(*PrivacyEvents)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._reset()
        engine.state.privacy_alarm = False
        self._log = AuditLog(self.save_dir / "audit.csv", HANDLER_AUDIT_COLUMNS)

    # -- one iteration ----------------------------------------------------------------------------

    def __call__(self, engine: Engine) -> None:
        batch = GeneratedBatch.unpack(engine.state.output, self.image_key)
        try:
            released = self._gate(engine, batch)
        except BaseException:
            engine.state.output = batch.pack([])  # fail closed: no unchecked image reaches a later handler
            engine.state.privacy_released_mask = np.zeros(len(batch), bool)
            raise
        engine.state.output = batch.pack(released)
        engine.state.privacy_released_mask = batch.mask(released)
        engine.state.privacy_sample_ids = [batch.ids[p] for p in released]
        self._check_alarm(engine)

    def _sample_ids(self, engine: Engine, batch: GeneratedBatch) -> list[str]:
        return [str(item.get(self.id_key, f"e{engine.state.epoch}-i{engine.state.iteration}-{p}")) for p, item in enumerate(batch.items)]

    def _gate(self, engine: Engine, batch: GeneratedBatch) -> list[int]:
        """Check, redraw and drop; returns the positions released (their items updated in place)."""
        batch.ids = self._sample_ids(engine, batch)
        if self.batch_transform is not None:
            batch.merge_conditions(self.batch_transform(engine.state.batch))
        self.counts["generated"] += len(batch)
        released, pending, attempt = [], list(range(len(batch))), 0
        while pending:
            decisions = self._decide(batch, pending)
            retry = []
            for j, position in enumerate(pending):
                keep = bool(decisions.released[j])
                last = attempt >= self.max_attempts or self.regenerate is None
                self._record(batch, position, attempt, decisions, j, "released" if keep else ("dropped" if last else "rejected"))
                if keep:
                    released.append(position)
                elif last:
                    self.counts["dropped"] += 1
                    self.dropped_ids.append(batch.ids[position])
                else:
                    retry.append(position)
            attempt += 1
            for position in retry:
                batch.replace(position, self.regenerate(dict(batch.items[position]), attempt))
                self.counts["regenerated"] += 1
            pending = retry
        return sorted(released)

    def _decide(self, batch: GeneratedBatch, positions: list[int]) -> Decisions:
        images = []
        for position in positions:
            image = batch.image(position)
            if self.store_as is not None:
                image = torch.from_numpy(as_stored(image.numpy(), self.store_as, self.modality))
                batch.set_image(position, image)
            images.append(image)
        shapes = {tuple(i.shape) for i in images}
        if len(shapes) > 1:
            raise ImageValueError(f"generated images of one batch differ in shape: {sorted(shapes)}")
        return self.checker.decide(torch.stack(images))

    def _record(self, batch: GeneratedBatch, position: int, attempt: int, decisions: Decisions, j: int, decision: str) -> None:
        row = decisions.row(j)
        self._log.write(sample_id=batch.ids[position], attempt=attempt, decision=decision, **row)
        self.counts["checks"] += 1
        self.counts["released" if row["released"] else "rejected"] += 1
        self.counts["first_attempt_rejected"] += int(attempt == 0 and not row["released"])
        for name, distances in decisions.distances.items():
            self._distances[name].append(distances[j : j + 1])
        if row["released"]:
            check = next(c for c in self.checker.checks if c.name == row["check"])
            certificate = {
                "tau": row["threshold"],
                "nn_distance": row["nn_distance"],
                "index_fingerprint": check.index_fingerprint,
                "embedder_fingerprint": check.embedder.fingerprint,
                "release_id": self.release_id,
            }
            batch.annotate(position, {**dict(zip(DECISION_KEYS, (row["nn_distance"], row["threshold"], True, row["nearest_patient_hash"], row["check"]))), "certificate": certificate})

    # -- alarm and summary ------------------------------------------------------------------------

    @property
    def rejection_rate(self) -> float:
        """Rejected checks / all checks so far (redraws count: each is a fresh sample of the model)."""
        return self.counts["rejected"] / self.counts["checks"] if self.counts["checks"] else 0.0

    def _check_alarm(self, engine: Engine) -> None:
        if self.alarm or self.counts["checks"] < self.alarm_min_checks or self.rejection_rate <= self.alarm_rate:
            return
        self.alarm = engine.state.privacy_alarm = True
        message = (
            f"memorization alarm: {self.rejection_rate:.1%} of {self.counts['checks']} generated images lie closer than tau "
            f"to a training image (alarm rate {self.alarm_rate:.0%})"
        )
        self.logger.warning(message)
        engine.fire_event(PrivacyEvents.MEMORIZATION_ALARM)
        if self.raise_on_alarm:
            engine.state.output = GeneratedBatch.unpack(engine.state.output, self.image_key).pack([])
            raise PrivacyViolationError(message)

    def _joined_distances(self) -> dict[str, np.ndarray]:
        """Per check, the distances of every check so far."""
        return {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in self._distances.items()}

    def summary(self) -> dict[str, Any]:
        """Counts, rates, per-check distance statistics, dropped ids, thresholds and fingerprints."""
        distances = self._joined_distances()
        return {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "release_id": self.release_id,
            "counts": dict(self.counts),
            "rejection_rate": self.rejection_rate,
            "first_attempt_rejection_rate": self.counts["first_attempt_rejected"] / self.counts["generated"] if self.counts["generated"] else 0.0,
            "max_attempts": self.max_attempts,
            "alarm": {"raised": self.alarm, "rate": self.alarm_rate, "min_checks": self.alarm_min_checks},
            "dropped": list(self.dropped_ids),
            "checks": self.checker.provenance(),
            "distances": {name: distance_statistics(values, self.checker.taus[name], self.bins) for name, values in distances.items()},
            "audit_log": "audit.csv",
        }

    def _completed(self, engine: Engine) -> None:
        if self._log is not None:
            self._log.close()
        summary = self.summary()
        engine.state.privacy_summary = summary
        write_json_atomically(self.save_dir / "summary.json", summary)
        taus = self.checker.taus
        panels = {name: (values, values >= taus[name], taus[name]) for name, values in self._joined_distances().items()}
        plot_distances(self.save_dir / "distances.png", panels, f"privacy guard: {self.counts['released']} released, {self.counts['dropped']} dropped", self.bins)


__all__ = ["HANDLER_AUDIT_COLUMNS", "PrivacyEvents", "PrivacyGuard"]
