"""Where the study's synthetic training set comes from: a pluggable :class:`SyntheticProvider`.

- :class:`GeneratedSynthetic`: train a latent diffusion model on the study's train split (the ``ldm_2d`` /
  ``ldm_3d`` bundle), build the default two-check guard with tau calibrated on the holdout, and generate
  a guarded release the size of train (one image per training image, with its class label when the
  study classifies).
- :class:`ReleaseSynthetic`: an existing monai-pso release (:func:`monai_pso.release.open_release`: each
  released item's files and ``condition``, the class label, from its manifest; its summary gives the
  counts and the generator's rejection rate), or any SOURCE of images.
- :class:`StandInSynthetic`: **not synthetic**: real images of patients outside train, holdout and test
  stand in for generated ones. For tests of the pipeline only; reports say so.

A provider returns a :class:`SyntheticSet`: records (images in ``[0, 1]``), the threshold ``tau`` the guard
applied, the guard's own summary (rejection rate) when known, and, when the provider built the guard,
its checks, which the study re-verifies by brute force.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from monai_pso.data import DataSource, ImageRecord, load_image, load_source
from monai_pso.errors import DataSourceError


@dataclass
class SyntheticSet:
    """A synthetic training set and what the guard said about it."""

    records: list[ImageRecord]
    tau: float | None
    description: str
    guard: dict[str, Any] = field(default_factory=dict)
    is_stand_in: bool = False
    checks: list[GuardCheckSpec] = field(default_factory=list)


@dataclass(frozen=True)
class GuardCheckSpec:
    """One check of the guard that certified a synthetic set: its name, embedder, threshold and query views."""

    name: str
    embedder: Any
    tau: float
    views: Any = None


class SyntheticProvider(Protocol):
    """Anything that turns the study's splits into a guarded synthetic set of about ``n`` images.

    A provider that can draw another set with another generator seed also has ``seeded(seed)``, returning
    the provider for that seed (the study's ``generator_seeds``).
    """

    def __call__(self, train: DataSource, holdout: DataSource, n: int, work_dir: Path) -> SyntheticSet: ...


@dataclass
class ReleaseSynthetic:
    """Use an existing guarded release folder as the synthetic set.

    Parameters
    ----------
    release_dir
        A monai-pso release folder, or any SOURCE string :func:`monai_pso.data.load_source` reads
        (labels then come from its datalist).
    tau
        The guard's threshold; the release's primary tau when ``None``.
    """

    release_dir: str
    tau: float | None = None

    def __call__(self, train: DataSource, holdout: DataSource, n: int, work_dir: Path) -> SyntheticSet:
        from monai_pso.release import open_release
        from monai_pso.release.layout import MANIFEST_FILE

        folder = Path(self.release_dir).expanduser()
        if not (folder / MANIFEST_FILE).is_file():
            records = [replace(r, split="train") for r in load_source(self.release_dir)]
            return SyntheticSet(records, self.tau, f"release {self.release_dir}")
        release = open_release(folder)
        records = []
        for item, entry in release.item_details().items():
            path = folder / entry["files"][0]
            label = entry.get("condition")
            label = tuple(int(v) for v in label) if isinstance(label, list) else (None if label is None else int(label))
            records.append(ImageRecord(f"synthetic-{item}", f"synthetic-{item}", str(path), label, "train", normalize="uint8" if path.suffix.lower() == ".png" else "none"))
        tau = self.tau if self.tau is not None else float(release.manifest["threshold"])
        generation = release.summary.get("generation") or {}
        guard = {"n_released": len(records), "counts": release.counts} | ({"rejection_rate": generation["rejection_rate"]} if "rejection_rate" in generation else {})
        return SyntheticSet(records, tau, f"release {self.release_dir}", guard)


@dataclass
class StandInSynthetic:
    """Stand-in for a generator in tests: real images of *other* patients, guarded by brute force.

    Images of ``source`` (patients disjoint from the study's) are offered as candidates; those within
    ``tau`` of a training image are rejected (the role of the guard), the first ``n`` others kept (in an
    order shuffled by ``seed`` when it is given, so that seeds keep different sets).
    ``tau`` defaults to half the median nearest-training distance of the holdout images.

    Examples
    --------
    >>> from monai_pso.data import load_source
    >>> src = load_source("phantom:2d?patients=6&size=16")
    >>> out = StandInSynthetic("phantom:2d?patients=6&size=16&seed=7")(src.split("train"), src.split("val"), 4, Path("."))
    >>> out.is_stand_in, len(out.records) <= 4
    (True, True)
    """

    source: str

    tau: float | None = None
    seed: int | None = None

    def seeded(self, seed: int) -> StandInSynthetic:
        """The same stand-in keeping the candidates in the order shuffled by ``seed``."""
        return replace(self, seed=seed)

    def __call__(self, train: DataSource, holdout: DataSource, n: int, work_dir: Path) -> SyntheticSet:
        from monai_pso.data import load_image
        from monai_pso.downstream.guard_check import nearest_training_distances

        train_images = np.stack([load_image(r) for r in train])
        tau = self.tau
        if tau is None:
            tau = 0.5 * float(np.median(nearest_training_distances(np.stack([load_image(r) for r in holdout]), train_images)))
        candidates = [replace(r, item_id=f"standin-{r.item_id}", patient_id=f"standin-{r.patient_id}", split="train") for r in load_source(self.source)]
        distances = nearest_training_distances(np.stack([load_image(r) for r in candidates]), train_images)
        order = range(len(candidates)) if self.seed is None else np.random.default_rng(self.seed).permutation(len(candidates))
        kept = [candidates[i] for i in order if distances[i] >= tau][:n]
        rejected = int((distances < tau).sum())
        guard = {"candidates": len(candidates), "rejected": rejected, "rejection_rate": rejected / len(candidates), "n_released": len(kept)}
        return SyntheticSet(kept, tau, f"STAND-IN (real images of other patients, not generated): {self.source}", guard, is_stand_in=True)


#: Training budget of :class:`GeneratedSynthetic` (optimisation steps) on top of the small networks of
#: :data:`monai_pso.engines.bundle_runs.SMALL_NETWORKS`.
DEFAULT_LDM_STEPS = {"autoencoder": 300, "diffusion": 1500}


@dataclass
class GeneratedSynthetic:
    """Train a latent diffusion model on the study's train split, guard it, and release a set the size of train.

    Runs :mod:`monai_pso.engines.bundle_runs` in ``work_dir/generator``: the ``ldm_2d`` or ``ldm_3d`` bundle
    (chosen by the images' dimensions) with :data:`~monai_pso.engines.bundle_runs.SMALL_NETWORKS`, trained
    for ``autoencoder_steps`` and ``diffusion_steps``; the default two-check guard of the train split
    with tau calibrated on the holdout; then one request per training image (with that image's class
    label when ``class_conditional``, so the release keeps train's class balance), each redrawn until
    it passes the guard or its attempts run out. The release is written as NIfTI (float values, as checked).

    Parameters
    ----------
    class_conditional
        Condition the UNet on the ``label`` of each record (single-label classes ``0..K-1``).
    autoencoder_steps, diffusion_steps
        Optimisation steps of the two training stages.
    num_inference_steps
        Denoising steps per draw.
    candidates
        Candidate selection (with ``class_conditional``): draw this many images per training image, and of
        those the guard releases keep the one a classifier trained on the real train split (for
        ``selection_steps``) gives the highest probability of the conditioned class
        (:func:`keep_best_candidates`). ``1``: one draw per training image, no selection.
    selection_steps
        Training steps of that classifier.
    settings
        More bundle settings (``KEY: value`` of the ``ldm`` configs), applied last.

    Examples
    --------
    >>> provider = GeneratedSynthetic(class_conditional=True, diffusion_steps=300)
    >>> synthetic = provider(train, holdout, len(train), Path("study"))  # doctest: +SKIP
    """

    class_conditional: bool = False
    autoencoder_steps: int = DEFAULT_LDM_STEPS["autoencoder"]
    diffusion_steps: int = DEFAULT_LDM_STEPS["diffusion"]
    num_inference_steps: int = 25
    settings: dict[str, Any] = field(default_factory=dict)
    candidates: int = 1
    selection_steps: int = 200

    def __post_init__(self) -> None:
        if self.candidates < 1 or (self.candidates > 1 and not self.class_conditional):
            raise DataSourceError("GeneratedSynthetic", f"candidates={self.candidates}: must be 1, or more with class_conditional=True (selection scores the conditioned class)")

    def seeded(self, seed: int) -> GeneratedSynthetic:
        """The same generator with the bundle's ``seed`` (its training and its draws) set to ``seed``."""
        return replace(self, settings=self.settings | {"seed": seed})

    def bundle_settings(self, train: DataSource) -> dict[str, Any]:
        """The ``ldm`` bundle settings for ``train``: networks, epochs from the step budget, conditioning."""
        from monai_pso.engines.bundle_runs import SMALL_NETWORKS, epochs_for, image_size_of

        batch_size = int(self.settings.get("batch_size", SMALL_NETWORKS["batch_size"]))
        ae_epochs = epochs_for(self.autoencoder_steps, len(train), batch_size)
        settings: dict[str, Any] = dict(
            SMALL_NETWORKS,
            image_size=image_size_of(train),
            max_epochs=ae_epochs,
            adversarial_warmup_epochs=max(1, int(0.6 * ae_epochs)),
            diffusion_max_epochs=epochs_for(self.diffusion_steps, len(train), batch_size),
            num_inference_steps=self.num_inference_steps,
            format="nifti",
            progress_bar=True,
        )
        if self.class_conditional:
            labels = [record.label for record in train]
            if any(not isinstance(label, (int, np.integer)) for label in labels):
                raise DataSourceError(train.description, "class-conditional generation needs one integer class label per image")
            settings.update(condition_mode="class", condition_key="label", num_classes=int(max(labels)) + 1)
        return settings | self.settings

    def __call__(self, train: DataSource, holdout: DataSource, n: int, work_dir: Path) -> SyntheticSet:
        from monai_pso.engines.bundle_runs import prepare_bundle, run_bundle_generation, train_bundle
        from monai_pso.guard import build_guard

        spatial_dims = load_image(train.records[0]).ndim - 1
        bundle = prepare_bundle(f"ldm_{spatial_dims}d", Path(work_dir) / "generator", self.bundle_settings(train))
        runtime = {"dataset_source": train}  # in memory: not written into the bundle's configs
        train_bundle(bundle, runtime, quiet=True)
        checker = build_guard(train, bundle / "privacy", holdout=holdout)
        requests = (
            f"$monai_pso.engines.diversity_requests(@datalist, 'label', @seed, @guidance_scale, None, @n, {self.candidates})"
            if self.class_conditional
            else "$monai_pso.engines.generation_requests(@n, @seed, @guidance_scale)"
        )
        release = run_bundle_generation(bundle, runtime | {"n": n, "requests": requests, "output_dir": str(Path(work_dir) / "synthetic-release")}, quiet=True)
        synthetic = ReleaseSynthetic(str(release))(train, holdout, n, Path(work_dir))
        description = f"generated by {bundle} ({n} requested)"
        if self.candidates > 1:
            from monai_pso.downstream.selection import LabelAgreement

            seed = int(self.settings.get("seed", 0))
            scorer = LabelAgreement.trained_on(train, int(max(r.label for r in train)) + 1, self.selection_steps, seed=seed)
            synthetic = keep_best_candidates(synthetic, release, scorer, self.candidates)
            selection = synthetic.guard["selection"]
            description += f", best of {self.candidates} candidates each: {selection['drawn']} drawn, {selection['released']} released, {selection['kept']} kept"
        checks = [GuardCheckSpec(check.name, check.embedder, float(check.threshold.value), check.threshold.views) for check in checker.checks]
        return replace(synthetic, description=description, checks=checks)


def keep_best_candidates(synthetic: SyntheticSet, release_dir: str | Path, scorer: Any, per_image: int) -> SyntheticSet:
    """The released candidates of ``synthetic`` (a release read by :class:`ReleaseSynthetic`) cut to one per request.

    Each released record is mapped to its request through the owner's private map of released ids
    (:func:`monai_pso.release.read_item_map`); :func:`monai_pso.downstream.selection.select_candidates`
    keeps the best of each request. ``guard["selection"]`` records candidates per image, draws (redraws
    included), released, kept and the mean probability of the conditioned class before and after; the
    guard's own counts stay those of the certified release.

    Examples
    --------
    >>> synthetic = keep_best_candidates(ReleaseSynthetic(RELEASE)(train, holdout, n, work), RELEASE, scorer, 4)  # doctest: +SKIP
    >>> synthetic.guard["selection"]["kept"] <= synthetic.guard["selection"]["released"]  # doctest: +SKIP
    True
    """
    from monai_pso.downstream.selection import select_candidates
    from monai_pso.release import read_item_map

    original = read_item_map(release_dir)
    prefix = "synthetic-"
    request_ids = [original[record.item_id[len(prefix) :]] for record in synthetic.records]
    kept, summary = select_candidates(synthetic.records, request_ids, scorer)
    counts = synthetic.guard.get("counts", {})
    selection = {"candidates_per_image": per_image, "drawn": counts.get("draws", len(synthetic.records))} | summary
    return replace(synthetic, records=kept, guard=synthetic.guard | {"selection": selection})
