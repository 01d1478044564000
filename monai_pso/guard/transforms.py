"""The privacy gate as MONAI transforms: :class:`PrivacyGate` (array) and :class:`PrivacyGated` (dictionary).

Each checks an image ``(1, *spatial)`` in ``[0, 1]`` with a :class:`~monai_pso.guard.checker.PrivacyChecker`
and records the decision: in the returned :class:`~monai.data.MetaTensor`'s ``meta`` (both versions)
and, in the dictionary version, as item keys :data:`DECISION_KEYS` (``privacy_outcome`` is ``released``,
``too_close`` or, with a guard that has a plausibility check, ``implausible``: farther from the real data
than held-out real images are). What happens to an image that is refused depends on ``mode``:

- ``"raise"`` (default): :class:`~monai_pso.errors.PrivacyViolationError`;
- ``"drop"``: the transform returns ``None`` (put the gate last in a ``Compose``; give the
  ``DataLoader`` ``collate_fn=released_collate``, or filter a list with :func:`released_only`);
- ``"flag"``: the image passes through with ``privacy_released = False`` recorded; filter with
  :func:`released_only` before anything leaves your hands.

The returned image holds exactly the float32 values that were checked. Optionally every decision is
appended to an audit CSV (``audit_log``; the columns of every audit, :func:`~monai_pso.guard.audit_log.audit_columns`).

Examples
--------
>>> from monai.transforms import Compose  # doctest: +SKIP
>>> from monai_pso.transforms import LoadRecordImaged, IntensityPresetd, PrivacyGated  # doctest: +SKIP
>>> gate = Compose([LoadRecordImaged("image"), IntensityPresetd("image"),  # doctest: +SKIP
...                 PrivacyGated("image", guard="GUARD_DIR", mode="drop")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, list_data_collate
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from monai_pso.errors import MonaiPsoError, PrivacyViolationError
from monai_pso.guard.audit_log import AuditLog, audit_columns
from monai_pso.guard.checker import PrivacyChecker
from monai_pso.guard.folder import load_checker
from monai_pso.guard.hashing import PatientHasher

#: What the gate does with an image that is refused (too close to a training image, or implausible).
GATE_MODES = ("raise", "drop", "flag")

#: Decision keys written into dictionary items and MetaTensor meta.
DECISION_KEYS = ("privacy_nn_distance", "privacy_threshold", "privacy_released", "privacy_nearest_patient_hash", "privacy_check", "privacy_outcome")


def _as_meta_image(image: Any) -> MetaTensor:
    """``image`` as a float32 MetaTensor (its meta kept)."""
    tensor = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
    return (tensor if isinstance(tensor, MetaTensor) else MetaTensor(tensor)).float()


def decision_meta(decision: dict[str, Any]) -> dict[str, Any]:
    """The :data:`DECISION_KEYS` of an audit row (:meth:`~monai_pso.guard.checker.Decisions.row`).

    Examples
    --------
    >>> row = {"nn_distance": 0.3, "threshold": 0.2, "released": False, "nearest_patient_hash": "ab", "check": "pixel", "outcome": "implausible"}
    >>> decision_meta(row)["privacy_outcome"]
    'implausible'
    """
    fields = ("nn_distance", "threshold", "released", "nearest_patient_hash", "check", "outcome")
    return {key: decision[field] for key, field in zip(DECISION_KEYS, fields)}


def _deciding(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several images' decisions, the one that decides the item: the worst failure, or the tightest pass."""
    failing = [d for d in decisions if not d["released"]]
    return min(failing or decisions, key=lambda d: d["nn_distance"] / d["threshold"])


class _Gate:
    """What both transforms share: the checker, the mode, the audit log."""

    def __init__(self, guard: Any, mode: str, index: Any, threshold: Any, embedder: Any, salt: str | bytes | None, audit_log: str | Path | None) -> None:
        if mode not in GATE_MODES:
            raise MonaiPsoError(f"mode={mode!r}: choose one of {', '.join(GATE_MODES)}")
        hasher = PatientHasher(salt) if salt is not None else None
        self.checker = load_checker(guard, index=index, threshold=threshold, embedder=embedder, hasher=hasher)
        self.mode = mode
        self.audit_path = None if audit_log is None else Path(audit_log)
        self._audit: AuditLog | None = None

    def decide(self, images: list[MetaTensor], item: str) -> list[dict[str, Any]]:
        """Check the images of one item; record each decision in its image's meta (and the audit log)."""
        decisions = []
        for image in images:
            decision = self.checker.decide(image[None]).row(0)
            image.meta.update(decision_meta(decision))
            decisions.append(decision)
        if self.audit_path is not None:
            if self._audit is None:
                self._audit = AuditLog(self.audit_path, audit_columns(self.checker.names), append=True)
            for decision in decisions:
                self._audit.write(**decision, item=item, draws=1)
        return decisions

    def outcome(self, decision: dict[str, Any], item: str, value: Any) -> Any:
        """What the transform returns: ``value`` when released (or flagged), else ``None`` or the ``raise`` mode's error."""
        if decision["released"] or self.mode == "flag":
            return value
        if self.mode == "raise":
            self.refuse(decision, item)
        return None

    def refuse(self, decision: dict[str, Any], item: str) -> None:
        """``raise`` mode: the error for a rejected item."""
        if decision["outcome"] == "implausible":
            raise PrivacyViolationError(
                f"{item or 'image'}: implausible, distance {decision['plausibility_distance']:.6g} to the training images in the fidelity "
                f"embedding is beyond the plausibility radius {decision['plausibility_radius']:.6g}; not released"
            )
        raise PrivacyViolationError(
            f"{item or 'image'}: distance {decision['nn_distance']:.6g} to the nearest training image is below "
            f"tau {decision['threshold']:.6g} ({decision['check']} check); not released"
        )


class PrivacyGate(Transform):
    """Check one image ``(1, *spatial)`` against the training set; see the module docstring for ``mode``.

    Parameters
    ----------
    guard
        A guard folder (``monai-pso guard build``) or a ready :class:`~monai_pso.guard.checker.PrivacyChecker`.
    mode
        ``raise``, ``drop`` or ``flag``.
    index, threshold, embedder
        Instead of ``guard``: index folders (or :class:`~monai_pso.index.ReferenceIndex`) and their
        threshold files (or :class:`~monai_pso.calibrate.Threshold`), paired (every check must pass),
        and the embedders of indexes whose embedder has weights.
    salt
        Salt of the nearest-patient hash (default: random, never stored).
    audit_log
        CSV to append every decision to.

    Returns
    -------
    MetaTensor or None
        The image (float32) with ``meta`` holding :data:`DECISION_KEYS`; ``None`` in ``drop`` mode when rejected.

    Examples
    --------
    >>> gate = PrivacyGate("GUARD_DIR", mode="flag")  # doctest: +SKIP
    >>> out = gate(image)  # doctest: +SKIP
    >>> out.meta["privacy_released"], out.meta["privacy_nn_distance"]  # doctest: +SKIP
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        guard: str | Path | PrivacyChecker | None = None,
        mode: str = "raise",
        *,
        index: Any = None,
        threshold: Any = None,
        embedder: Any = None,
        salt: str | bytes | None = None,
        audit_log: str | Path | None = None,
    ) -> None:
        self.gate = _Gate(guard, mode, index, threshold, embedder, salt, audit_log)

    def __call__(self, img: Any) -> MetaTensor | None:
        image = _as_meta_image(img)
        item = str(image.meta.get("filename_or_obj", ""))
        return self.gate.outcome(self.gate.decide([image], item)[0], item, image)


class PrivacyGated(MapTransform):
    """Dictionary version of :class:`PrivacyGate`: the item is released only when every key's image passes.

    Writes :data:`DECISION_KEYS` into the item (the deciding image's values: the worst failure, or the
    tightest pass), the deciding decision's audit row as ``privacy_decision`` (what
    :meth:`monai_pso.release.ReleaseBuilder.add` takes), and each image's own decision into its ``meta``.

    Parameters
    ----------
    keys
        Image keys to check.
    guard, mode, index, threshold, embedder, salt, audit_log
        As for :class:`PrivacyGate`.
    id_key
        Item key naming the item in errors and the audit log.
    allow_missing_keys
        Skip absent keys instead of raising.

    Returns
    -------
    dict or None
        The item; ``None`` in ``drop`` mode when rejected.

    Examples
    --------
    >>> item = PrivacyGated("image", "GUARD_DIR", mode="flag")({"image": image})  # doctest: +SKIP
    >>> item["privacy_released"], item["privacy_nn_distance"] >= item["privacy_threshold"]  # doctest: +SKIP
    """

    backend = PrivacyGate.backend

    def __init__(
        self,
        keys: KeysCollection,
        guard: str | Path | PrivacyChecker | None = None,
        mode: str = "raise",
        *,
        index: Any = None,
        threshold: Any = None,
        embedder: Any = None,
        salt: str | bytes | None = None,
        audit_log: str | Path | None = None,
        id_key: str = "item_id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.gate = _Gate(guard, mode, index, threshold, embedder, salt, audit_log)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any] | None:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        for key in keys:
            d[key] = _as_meta_image(d[key])
        item = str(d.get(self.id_key, ""))
        decision = _deciding(self.gate.decide([d[key] for key in keys], item))
        d.update(decision_meta(decision), privacy_decision=decision)
        return self.gate.outcome(decision, item, d)


def is_released(item: Any) -> bool:
    """Whether a gate output may be released: not ``None`` and not flagged as rejected.

    Items that never went through a gate (no decision recorded) count as *not* released.
    """
    if item is None:
        return False
    if isinstance(item, Mapping):
        return item.get("privacy_released") is True
    return isinstance(item, MetaTensor) and item.meta.get("privacy_released") is True


def released_only(items: Iterable[Any]) -> list[Any]:
    """The items of ``items`` the gate released (``drop`` leaves ``None``, ``flag`` leaves flagged items).

    Examples
    --------
    >>> released_only([None, {"privacy_released": False}, {"privacy_released": True, "id": 3}])
    [{'privacy_released': True, 'id': 3}]
    """
    return [item for item in items if is_released(item)]


def released_collate(batch: list[Any]) -> Any:
    """``DataLoader`` ``collate_fn``: MONAI's ``list_data_collate`` of the released items only.

    Returns an empty list when no item of the batch was released.
    """
    kept = released_only(batch)
    return list_data_collate(kept) if kept else []
