"""A guarded generation run's release: :class:`ReleaseWriter` (an ignite handler) and :class:`GuardedRelease`.

:class:`GuardedRelease` is what the ``ldm_2d`` / ``ldm_3d`` bundles' ``inference.json`` builds: it makes
the release builder (:mod:`monai_pso.release.builder`), the privacy guard
(:class:`~monai_pso.guard.handler.PrivacyGuard`, redrawing rejected images with the workflow's
``regenerate``, logging every draw to ``draws.csv``) and the writer, and attaches the guard before the
writer. The writer adds every item the guard released (with its image) or dropped (without) and, when
the engine completes, finishes the release; on an exception the release is discarded.

Examples
--------
>>> release = GuardedRelease("bundle/privacy", workflow, "release/", fmt="png")  # doctest: +SKIP
>>> release.attach(workflow); workflow.run()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from monai_pso.errors import MonaiPsoError
from monai_pso.guard.folder import load_checker
from monai_pso.guard.handler import PrivacyGuard
from monai_pso.io import sha256_file
from monai_pso.release.builder import ReleaseBuilder

#: Request fields of a generated item copied into the manifest's ``items``.
ITEM_FIELDS = ("seed", "guidance_scale", "attempt", "condition")

#: More fields, kept only when the release discloses ids: the training image a request was conditioned on.
DISCLOSED_FIELDS = ("source_item",)


def manifest_details(item: dict[str, Any], disclose: bool) -> dict[str, Any]:
    """The request fields of ``item`` that go into the manifest.

    A ``condition`` is kept when it is a class label (a whole number); a vector (covariates, or the pooled
    pixels of a training image in the diversity scheme) only when the release discloses ids.

    Examples
    --------
    >>> manifest_details({"seed": 3, "condition": 1, "source_item": "p7"}, disclose=False)
    {'seed': 3, 'condition': 1}
    >>> manifest_details({"seed": 3, "condition": [0.2, 0.4]}, disclose=False)
    {'seed': 3}
    """
    fields = ITEM_FIELDS + (DISCLOSED_FIELDS if disclose else ())
    details = {key: item[key] for key in fields if key in item}
    condition = details.get("condition")
    if condition is not None and not disclose:
        value = condition.tolist() if hasattr(condition, "tolist") else condition
        if isinstance(value, list) or not float(value).is_integer():
            details.pop("condition")
    return details


class ReleaseWriter:
    """Ignite handler adding the guard's released and dropped items to a release, finishing it on completion.

    Attach it after :class:`~monai_pso.guard.handler.PrivacyGuard`. Items the guard did not certify are
    refused (fail closed), and so is a run in which no guard ran.

    Parameters
    ----------
    builder
        The release being written.
    image_key, id_key
        Where images and item ids sit in each output item.
    """

    def __init__(self, builder: ReleaseBuilder, image_key: str = Keys.PRED, id_key: str = "item_id") -> None:
        self.builder = builder
        self.image_key, self.id_key = image_key, id_key
        self.report = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.add_output)
        engine.add_event_handler(Events.COMPLETED, self.finish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def add_output(self, engine: Engine) -> None:
        """Add this iteration's released items (with images) and dropped items (without)."""
        for item in engine.state.output or []:
            if item.get("privacy_released") is not True or "privacy_decision" not in item:
                raise MonaiPsoError(f"{item.get(self.id_key)}: not certified by the privacy guard (attach the guard before the release writer)")
            details = manifest_details(item, self.builder.disclose_ids)
            self.builder.add(str(item[self.id_key]), item["privacy_decision"], item[self.image_key], draws=item["privacy_draws"], details=details)
        for refused in getattr(engine.state, "privacy_refused", []):
            self.builder.add(str(refused["item_id"]), refused["decision"], draws=refused["draws"])

    def finish(self, engine: Engine) -> None:
        """Publish the release (with the guard's draw statistics in its summary)."""
        summary = getattr(engine.state, "privacy_summary", None)
        if summary is None:
            self.builder.discard()
            raise MonaiPsoError("no privacy guard ran before the release writer: nothing is released")
        self.report = self.builder.finish(generation=summary)

    def discard(self, engine: Engine, error: BaseException) -> None:
        """On failure: nothing is released (the staged files are removed); the error is raised again."""
        self.builder.discard()
        raise error


class GuardedRelease:
    """The guard and the release writer of one generation run (see the module docstring).

    Parameters
    ----------
    guard
        Guard folder (``monai-pso guard build``; a bundle's ``privacy/``) or a ready checker.
    workflow
        The :class:`~monai_pso.engines.GenerationWorkflow` (its ``regenerate`` and ``total_attempts``).
    output_dir
        The release folder (must not exist, or be empty).
    fmt, modality, spacing
        File format and header fields of the released images; the guard checks the values the file holds.
    provenance
        More manifest fields (:func:`release_provenance`).
    command, source, record, disclose_ids
        As for :class:`~monai_pso.release.builder.ReleaseBuilder`.
    guard_options
        More :class:`~monai_pso.guard.handler.PrivacyGuard` options (``alarm_rate``, ``raise_on_alarm``...).
    """

    def __init__(
        self,
        guard: Any,
        workflow: Any,
        output_dir: str | Path,
        fmt: str = "png",
        *,
        modality: str = "other",
        spacing: tuple[float, ...] | None = None,
        provenance: Mapping[str, Any] | None = None,
        command: str = "generate",
        source: str = "",
        record: bool = True,
        disclose_ids: bool = False,
        **guard_options: Any,
    ) -> None:
        checker = load_checker(guard)
        self.builder = ReleaseBuilder(
            output_dir, checker, fmt, command=command, source=source, modality=modality, spacing=spacing, provenance=provenance, record=record, disclose_ids=disclose_ids
        )
        self.guard = PrivacyGuard(
            self.builder.checker,
            regenerate=workflow.regenerate,
            max_attempts=workflow.total_attempts - 1,  # the guard counts redraws, the workflow counts draws
            store_as=fmt,
            modality=modality,
            draw_log=self.builder.draw_log,
            **guard_options,
        )
        self.writer = ReleaseWriter(self.builder)

    @property
    def output_dir(self) -> Path:
        return self.builder.release_dir

    def attach(self, engine: Engine) -> None:
        """The guard first, then the writer (ignite runs handlers in attachment order)."""
        self.guard.attach(engine)
        self.writer.attach(engine)


def release_provenance(checkpoints: Mapping[str, str | Path], seed: int, **extra: Any) -> dict[str, Any]:
    """The provenance part of ``manifest.json``: checkpoint paths and sha256s, the seed, and ``extra`` fields.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "m.pt"; _ = path.write_bytes(b"x")
    >>> release_provenance({"diffusion": path}, seed=3)["checkpoints"]["diffusion"]["sha256"][:8]
    '2d711642'
    """
    return {
        "seed": int(seed),
        "checkpoints": {name: {"path": str(path), "sha256": sha256_file(Path(path))} for name, path in checkpoints.items()},
        **extra,
    }
