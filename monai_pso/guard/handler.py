"""``PrivacyGuard``: the ignite handler that lets only images far enough from every training image out of a
generation engine.

Attached to a generation workflow (any ignite ``Engine`` / ``monai.engines`` workflow whose
``engine.state.output`` holds generated images), on every ``ITERATION_COMPLETED`` it

1. checks each generated image with the guard (:func:`~monai_pso.guard.folder.load_checker`);
2. has each rejected image (too close to a training image, or implausible when the guard has a
   plausibility check) redrawn by ``regenerate(item, attempt)`` (``attempt`` = 1, 2, ...), at most
   ``max_attempts`` times; an image still rejected after that is dropped and counted;
3. replaces ``engine.state.output`` by the released images only (see *Output layouts*), sets
   ``engine.state.privacy_released_mask`` (bool per original position), ``engine.state.privacy_sample_ids``
   and ``engine.state.privacy_refused`` (the dropped items of the iteration: ``item_id``, ``decision``,
   ``draws``);
4. appends one row per draw to ``draw_log`` when given (:func:`~monai_pso.guard.audit_log.audit_columns`
   with ``per_draw``; ``outcome`` is ``released``, ``redrawn`` or ``dropped``), flushed per row;
5. raises the memorization alarm when more than ``alarm_rate`` of all draws so far were too close to
   a training image (after ``alarm_min_checks`` draws; implausible draws are failures, not memorisation): a logger warning, ``engine.state.privacy_alarm = True``, the
   custom event :attr:`PrivacyEvents.MEMORIZATION_ALARM`, and with ``raise_on_alarm`` a
   :class:`~monai_pso.errors.PrivacyViolationError`.

On ``COMPLETED`` it sets ``engine.state.privacy_summary`` (draw counts, among them ``too_close`` and
``implausible`` draws, rejection rates, the alarm, dropped ids). Writing the release is :class:`monai_pso.release.ReleaseWriter`'s job (attached after the guard;
:class:`monai_pso.release.GuardedRelease` attaches both).

Fail closed: if anything goes wrong while checking (a NaN image, a wrong shape, a failing ``regenerate``),
``engine.state.output`` is emptied before the error propagates, so no later handler sees an unchecked image.
Attach the guard *before* any handler that saves or sends images (ignite runs handlers in attachment
order), and do not save images in the workflow's ``postprocessing``.

Output layouts (``image_key``, default ``"pred"``):

- a list of per-sample dicts (MONAI's decollated output, :class:`monai_pso.engines.GenerationWorkflow`):
  the list keeps the released items, each with :data:`~monai_pso.guard.transforms.DECISION_KEYS`,
  ``privacy_decision`` (the audit row of its decision) and ``privacy_draws``;
- a dict of batched values: ``image_key`` becomes the stacked released images, every other value with one
  entry per sample is subset alike, and ``privacy_released_mask`` / ``privacy_sample_ids`` are added;
- a bare tensor ``(B, 1, *spatial)``: replaced by the released images.

Examples
--------
>>> guard = PrivacyGuard("GUARD_DIR", regenerate=workflow.regenerate, max_attempts=3)  # doctest: +SKIP
>>> guard.attach(workflow)          # before anything that writes images  # doctest: +SKIP
>>> workflow.run()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, EventEnum, Events

from monai_pso.data.image_files import as_stored
from monai_pso.errors import ImageValueError, MonaiPsoError, PrivacyViolationError
from monai_pso.guard.audit_log import AuditLog, audit_columns
from monai_pso.guard.checker import Decisions, PrivacyChecker
from monai_pso.guard.folder import load_checker
from monai_pso.guard.outputs import GeneratedBatch
from monai_pso.guard.transforms import decision_meta


class PrivacyEvents(EventEnum):
    """Custom ignite events fired by :class:`PrivacyGuard`."""

    MEMORIZATION_ALARM = "memorization_alarm"


class PrivacyGuard:
    """Gate a generation engine's output, redrawing rejected images (see the module docstring).

    Parameters
    ----------
    guard
        A guard folder (``monai-pso guard build``) or a ready :class:`~monai_pso.guard.checker.PrivacyChecker`.
    index, threshold, embedder
        Instead of ``guard``: paired index folders and threshold files (:func:`~monai_pso.guard.folder.load_checker`).
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
    salt_file
        Private file with the salt of the nearest-patient hashes (created when absent); default the
        guard's hasher (a random salt never stored, unless the checker was given one).
    store_as, modality
        Check the values a ``png`` / ``nifti`` / ``dicom`` file will hold (the released images are
        replaced by them), so the certificate holds for the written file.
    alarm_rate, alarm_min_checks, raise_on_alarm
        The memorization alarm.
    draw_log
        CSV receiving one row per draw (``None``: no log).
    """

    def __init__(
        self,
        guard: str | Path | PrivacyChecker | None = None,
        *,
        index: Any = None,
        threshold: Any = None,
        embedder: Any = None,
        salt_file: str | Path | None = None,
        regenerate: Callable[[dict[str, Any], int], Any] | None = None,
        max_attempts: int = 3,
        image_key: str = "pred",
        id_key: str = "item_id",
        batch_transform: Callable[[Any], list[dict[str, Any]]] | None = None,
        store_as: str | None = None,
        modality: str = "other",
        alarm_rate: float = 0.2,
        alarm_min_checks: int = 20,
        raise_on_alarm: bool = False,
        draw_log: str | Path | None = None,
    ) -> None:
        if max_attempts < 0:
            raise MonaiPsoError(f"max_attempts must be >= 0, got {max_attempts}")
        self.checker = load_checker(guard, index=index, threshold=threshold, embedder=embedder, salt_file=salt_file)
        self.regenerate = regenerate
        self.max_attempts = max_attempts
        self.image_key, self.id_key = image_key, id_key
        self.batch_transform = batch_transform
        self.store_as, self.modality = store_as, modality
        self.alarm_rate, self.alarm_min_checks, self.raise_on_alarm = alarm_rate, alarm_min_checks, raise_on_alarm
        self.draw_log = None if draw_log is None else Path(draw_log)
        self.logger = logging.getLogger(__name__)
        self._reset()

    def _reset(self) -> None:
        self.counts = {
            "generated": 0, "checks": 0, "released": 0, "rejected": 0, "too_close": 0, "implausible": 0, "regenerated": 0, "dropped": 0, "first_attempt_rejected": 0,
        }  # fmt: skip
        self.dropped_ids: list[str] = []
        self.alarm = False
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
        if self.draw_log is not None:
            self._log = AuditLog(self.draw_log, audit_columns(self.checker.names, per_draw=True))

    # -- one iteration ----------------------------------------------------------------------------

    def __call__(self, engine: Engine) -> None:
        batch = GeneratedBatch.unpack(engine.state.output, self.image_key)
        engine.state.privacy_refused = []
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
                self._record(engine, batch, position, attempt, decisions.row(j), "released" if keep else ("dropped" if last else "redrawn"))
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

    def _record(self, engine: Engine, batch: GeneratedBatch, position: int, attempt: int, decision: dict[str, Any], outcome: str) -> None:
        """Count and log one draw; annotate a released item, list a dropped one in ``engine.state.privacy_refused``."""
        if self._log is not None:
            self._log.write(**{**decision, "item": batch.ids[position], "draw": attempt + 1, "outcome": outcome})
        self.counts["checks"] += 1
        self.counts["released" if decision["released"] else "rejected"] += 1
        if not decision["released"]:
            self.counts[decision["outcome"]] += 1
        self.counts["first_attempt_rejected"] += int(attempt == 0 and not decision["released"])
        if decision["released"]:
            batch.annotate(position, {**decision_meta(decision), "privacy_decision": decision, "privacy_draws": attempt + 1})
        elif outcome == "dropped":
            engine.state.privacy_refused.append({"item_id": batch.ids[position], "decision": decision, "draws": attempt + 1})

    # -- alarm and summary ------------------------------------------------------------------------

    @property
    def rejection_rate(self) -> float:
        """Rejected checks / all checks so far (redraws count: each is a fresh sample of the model)."""
        return self.rate("rejected")

    def rate(self, outcome: str) -> float:
        """Draws counted as ``outcome`` (``rejected``, ``too_close`` or ``implausible``) / all checks so far."""
        return self.counts[outcome] / self.counts["checks"] if self.counts["checks"] else 0.0

    def _check_alarm(self, engine: Engine) -> None:
        if self.alarm or self.counts["checks"] < self.alarm_min_checks or self.rate("too_close") <= self.alarm_rate:
            return
        self.alarm = engine.state.privacy_alarm = True
        message = (
            f"memorization alarm: {self.rate('too_close'):.1%} of {self.counts['checks']} generated images lie closer than tau "
            f"to a training image (alarm rate {self.alarm_rate:.0%})"
        )
        self.logger.warning(message)
        engine.fire_event(PrivacyEvents.MEMORIZATION_ALARM)
        if self.raise_on_alarm:
            engine.state.output = GeneratedBatch.unpack(engine.state.output, self.image_key).pack([])
            raise PrivacyViolationError(message)

    def summary(self) -> dict[str, Any]:
        """Draw counts, rejection rates, the alarm and the dropped ids."""
        return {
            "counts": dict(self.counts),
            "rejection_rate": self.rejection_rate,
            "too_close_rate": self.rate("too_close"),
            "implausible_rate": self.rate("implausible"),
            "first_attempt_rejection_rate": self.counts["first_attempt_rejected"] / self.counts["generated"] if self.counts["generated"] else 0.0,
            "max_attempts": self.max_attempts,
            "alarm": {"raised": self.alarm, "rate": self.alarm_rate, "min_checks": self.alarm_min_checks},
            "dropped": list(self.dropped_ids),
            "draw_log": None if self.draw_log is None else self.draw_log.name,
        }

    def _completed(self, engine: Engine) -> None:
        if self._log is not None:
            self._log.close()
        engine.state.privacy_summary = self.summary()


__all__ = ["PrivacyEvents", "PrivacyGuard"]
