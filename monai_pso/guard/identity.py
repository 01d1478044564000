"""The guard's identity check: a re-identification network, 1:N over every training image, certified or not.

``monai-pso guard build SOURCE --identity MODE`` (:func:`build_identity_check`) adds a check named
``identity`` next to the pixel checks, whose embedder is a ``reid`` network
(:class:`~monai_pso.embed.reid.ReidEmbedder`) saved in ``GUARD_DIR/identity/embedder/``. Modes:

- ``none``: no identity check; ``guard.json`` says so.
- ``xray``: start from the shipped chest X-ray identity network (:data:`SHIPPED_XRAY`, 2D only,
  64 x 64 input, trained by ``benchmarks/identity.py`` on ``kermany_pedcxr_128``); fine-tuned on the
  training split's same-patient pairs when at least :data:`MIN_FINE_TUNE_PATIENTS` patients there have
  two or more images.
- ``auto`` (the command's default): no identity check when no training patient has two images (nothing
  to learn identity from, nothing to calibrate it on); 2D images as ``xray`` (the shipped network is a
  starting point, not a claim that it transfers: the measured AUC on the user's holdout decides); 3D
  images: a network trained from scratch on the training split's pairs when at least
  :data:`MIN_FINE_TUNE_PATIENTS` patients have two or more images, else no identity check.
- a folder: a trained embedder saved by ``monai-pso embed train`` (used as it is, not fine-tuned).

The tau is always calibrated on the user's held-out patients (:func:`~monai_pso.calibrate.calibrate_threshold`,
rule ``max``), with same-patient distances from held-out patients only (a network's own training pairs
would lie closer than any new pair); tau_same enters tau only when calibration's own criterion holds,
else tau is the holdout part alone (refusing about 5% of unseen real images, as a copy check would), so
an identity network that cannot tell patients apart never refuses everything.

The identity is **certified** when it is shown to work as the guard decides, on the user's held-out
patients with two or more images (:func:`~monai_pso.calibrate.identity.holdout_identity`): half of them
play trained patients (their other images in the reference set), half unseen ones; the AUC of a trained
patient's new image lying nearer the reference set than an unseen patient's image must be at least
:data:`MIN_IDENTITY_AUC` with its interval's lower end above 0.5, over at least
:data:`MIN_IDENTITY_PATIENTS` patients. The block records the AUC and, at tau, the share of trained
patients' new images refused and of unseen patients' images released, with intervals.
When tau_same would refuse more than half of the held-out real images, lower same-patient percentiles
are tried (:data:`SAME_PERCENTILES`) and the one used is recorded.

``guard.json`` records the ``identity`` block (:func:`build_identity_check`'s second result) whether or not
the check is included; ``guard build`` prints it and every release's ``summary.json`` carries it.

Examples
--------
>>> import tempfile
>>> entry, block = build_identity_check("phantom:2d?patients=8&acquisitions=2&size=16", Path(tempfile.mkdtemp()), "none")
>>> entry, block["included"], block["certified"], block["reason"]
(None, False, False, 'left out: --identity none')
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from monai_pso.calibrate.identity import IdentityMeasure, holdout_identity
from monai_pso.data import DataSource
from monai_pso.errors import ConfigurationError
from monai_pso.guard.entries import check_entry

#: The shipped chest X-ray identity network (``embedder.json`` and ``weights.pt``), package data.
SHIPPED_XRAY = Path(__file__).resolve().parents[1] / "embed" / "weights" / "identity_xray"

#: The modes besides a folder path.
IDENTITY_MODES = ("auto", "xray", "none")

#: Training patients with two or more images needed to fine-tune (or, in 3D, train) the network.
MIN_FINE_TUNE_PATIENTS = 20

#: The floor of the certification: same- vs different-patient AUC (lower interval end above 0.5).
MIN_IDENTITY_AUC = 0.7

#: Held-out patients with two or more images the certification needs.
MIN_IDENTITY_PATIENTS = 10

#: Same-patient percentiles tried, in order, until tau refuses at most the utility-cost limit.
SAME_PERCENTILES = (95.0, 90.0, 80.0, 70.0, 60.0, 50.0)

#: Fine-tuning: passes over the training pairs and learning rate (training from scratch: 3 x the passes, 1e-3).
FINE_TUNE_EPOCHS = 10
FINE_TUNE_LEARNING_RATE = 3e-4

#: The check's name in ``guard.json`` and in the audit columns (``identity_distance``...).
CHECK_NAME = "identity"


def left_out(mode: str, reason: str) -> dict[str, Any]:
    """The ``identity`` block of a guard without an identity check.

    Examples
    --------
    >>> left_out("auto", "no repeat images")["included"]
    False
    """
    return {"mode": mode, "included": False, "certified": False, "reason": reason, "auc": None, "auc_interval": None}


def check_identity_mode(mode: str | Path | None) -> None:
    """Refuse a mode that is neither ``auto``, ``xray``, ``none`` nor a folder, before any work is done.

    Examples
    --------
    >>> check_identity_mode("no/such/folder")
    Traceback (most recent call last):
    ...
    monai_pso.errors.ConfigurationError: --identity no/such/folder: neither auto, xray, none nor a saved embedder folder
    """
    if mode is not None and str(mode) not in IDENTITY_MODES and not Path(mode).expanduser().is_dir():
        raise ConfigurationError(f"--identity {mode}: neither {', '.join(IDENTITY_MODES)} nor a saved embedder folder")


def _repeat_patients(source: DataSource) -> int:
    return sum(len(records) >= 2 for records in source.by_patient().values())


def _starting_network(mode: str, spatial_dims: int, repeat_patients: int) -> tuple[Any, str] | str:
    """The embedder to start from and where it came from, or the reason there is none."""
    from monai_pso.embed.registry import load_embedder

    if mode not in IDENTITY_MODES:
        folder = Path(mode).expanduser()
        return load_embedder(folder), f"trained embedder {folder.resolve()}"
    if spatial_dims == 2:
        return load_embedder(SHIPPED_XRAY), "shipped chest X-ray network (monai_pso/embed/weights/identity_xray)"
    if mode == "xray":
        raise ConfigurationError(f"--identity xray: the shipped chest X-ray network takes 2D images, these are {spatial_dims}D (use auto or a trained embedder)")
    if repeat_patients < MIN_FINE_TUNE_PATIENTS:
        return f"3D images and only {repeat_patients} training patients with two or more images (need {MIN_FINE_TUNE_PATIENTS} to train a network)"
    return None, "trained from scratch on the training split's same-patient pairs"


def _calibrate(index: Any, embedder: Any, holdout: DataSource, holdout_split: str, progress: bool, calibration: dict[str, Any]) -> Any:
    """tau of the identity check, lowering the same-patient percentile while the utility cost is too high
    (the last refusal's message when even the lowest costs too much)."""
    from monai_pso.calibrate import calibrate_threshold
    from monai_pso.calibrate.calibration import UtilityCostError

    percentiles = [calibration.pop("same_percentile")] if "same_percentile" in calibration else list(SAME_PERCENTILES)
    calibration = {"rule": "max", "min_same_auc": MIN_IDENTITY_AUC, **calibration}
    refused = ""
    for percentile in percentiles:
        try:
            return calibrate_threshold(index, embedder, holdout, split=holdout_split, same_percentile=percentile, same_from_training=False, progress=progress, **calibration)
        except UtilityCostError as error:
            refused = str(error)
    return refused


def build_identity_check(
    training: Any,
    out_dir: Path,
    mode: str | Path | None = "auto",
    split: str = "train",
    holdout: Any = None,
    holdout_split: str = "val",
    progress: bool = True,
    seed: int = 0,
    **calibration: Any,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Train, index and calibrate the identity check of a guard folder (see the module docstring).

    Parameters
    ----------
    training, split
        The protected data (SOURCE string or data source) and its split.
    out_dir
        The guard folder; the check is written to ``out_dir/identity/`` (an older one there is removed).
    mode
        ``auto``, ``xray``, ``none`` (or ``None``) or a saved embedder folder.
    holdout, holdout_split
        The held-out patients of the calibration (default ``training`` itself) and their split.
    progress, seed
        Progress bars; the fine-tuning's seed.
    calibration
        More options of :func:`~monai_pso.calibrate.calibrate_threshold` (``n_bootstrap``, ``accept_utility_cost``...).

    Returns
    -------
    entry, block
        The check's ``guard.json`` entry (``None`` when it is left out) and the ``identity`` block.
    """
    from monai_pso.data import load_source
    from monai_pso.embed.registry import load_embedder
    from monai_pso.embed.reid_training import train_reid
    from monai_pso.index import build_index

    check_identity_mode(mode)
    mode = "none" if mode is None else str(mode)
    folder = Path(out_dir) / CHECK_NAME
    if folder.exists():
        shutil.rmtree(folder)
    if mode == "none":
        return None, left_out(mode, "left out: --identity none")
    training = load_source(training)
    holdout = training if holdout is None else load_source(holdout)
    protected = training.split(split)
    repeats = _repeat_patients(protected)
    if mode == "auto" and repeats == 0:
        return None, left_out(mode, f"left out: no patient of split {split!r} has two or more images, so identity can be neither learnt nor calibrated")
    start = _starting_network(mode, protected[0].spatial_dims or 2, repeats)
    if isinstance(start, str):
        return None, left_out(mode, f"left out: {start}")
    embedder, origin = start
    fine_tune = embedder is None or (mode in ("auto", "xray") and repeats >= MIN_FINE_TUNE_PATIENTS)
    if fine_tune:
        scratch = embedder is None
        embedder = train_reid(
            DataSource([r.with_split("train") for r in protected] + [r.with_split("val") for r in holdout.split(holdout_split)], training.description),
            epochs=FINE_TUNE_EPOCHS * (3 if scratch else 1),
            learning_rate=1e-3 if scratch else FINE_TUNE_LEARNING_RATE,
            initial=embedder,
            seed=seed,
            max_val_images=256,
            progress=progress,
        )
        origin += "" if scratch else f", fine-tuned on {repeats} training patients with two or more images"
    embedder.save(folder / "embedder")
    embedder = load_embedder(folder / "embedder")
    index = build_index(training, embedder, split=split, progress=progress)
    threshold = _calibrate(index, embedder, holdout, holdout_split, progress, dict(calibration))
    if isinstance(threshold, str):
        shutil.rmtree(folder)
        return None, left_out(mode, f"left out: even the lowest same-patient percentile costs too much utility ({threshold})")
    index.save(folder / "index")
    threshold.save(folder / "threshold.json")
    entry = check_entry(CHECK_NAME, embedder, index, threshold, embedder_dir=f"{CHECK_NAME}/embedder")
    measured = holdout_identity(index, embedder, holdout.split(holdout_split), threshold.value, threshold.views, calibration.get("n_bootstrap", 1000), seed, progress=progress)
    certified, reason = certification(measured)
    figures = {} if measured is None else measured.to_dict()
    block = {
        "mode": mode,
        "included": True,
        "certified": certified,
        "reason": reason,
        "auc": figures.get("auc"),
        "auc_interval": figures.get("auc_interval"),
        "auc_patients": None if measured is None else measured.n_trained_patients + measured.n_unseen_patients,
        "refused_trained": figures.get("refused_trained"),
        "refused_trained_interval": figures.get("refused_trained_interval"),
        "released_unseen": figures.get("released_unseen"),
        "released_unseen_interval": figures.get("released_unseen_interval"),
        "min_auc": MIN_IDENTITY_AUC,
        "same_auc": None if threshold.verification is None else threshold.verification.value,
        "network": origin,
        "fine_tuned": fine_tune,
        "training_patients_with_repeats": repeats,
        "embedder_fingerprint": embedder.fingerprint,
        "tau": threshold.value,
        "same_applied": threshold.same_applied,
        "same_percentile": None if threshold.same is None else threshold.same.percentile,
        "utility_cost": entry["utility_cost"],
    }
    return entry, block


def certification(measured: IdentityMeasure | None) -> tuple[bool, str]:
    """Whether the measured figures certify identity, and why (see the module docstring).

    Examples
    --------
    >>> certification(None)[1]
    'not certified: fewer than two held-out patients have two or more images, so re-identification cannot be measured'
    """
    if measured is None:
        return False, "not certified: fewer than two held-out patients have two or more images, so re-identification cannot be measured"
    patients, low = measured.n_trained_patients + measured.n_unseen_patients, measured.auc_interval[0]
    shares = f"at tau {measured.refused_trained:.0%} of trained patients' new images refused, {measured.released_unseen:.0%} of unseen patients' images released"
    if patients < MIN_IDENTITY_PATIENTS:
        return False, f"not certified: only {patients} held-out patients with two or more images (criterion: >= {MIN_IDENTITY_PATIENTS}), too few for the AUC's interval"
    if measured.auc < MIN_IDENTITY_AUC or low <= 0.5:
        return False, (
            f"not certified: a trained patient's new image is not reliably nearer the training set than an unseen patient's image "
            f"(AUC {measured.auc:.3f}, interval lower end {low:.3f}; criterion: AUC >= {MIN_IDENTITY_AUC:g} and lower end > 0.5); {shares}"
        )
    return True, f"certified: AUC {measured.auc:.3f} >= {MIN_IDENTITY_AUC:g}, interval lower end {low:.3f} > 0.5 over {patients} held-out patients; {shares}"


def describe_identity(block: dict[str, Any]) -> str:
    """One line for the terminal.

    Examples
    --------
    >>> describe_identity(left_out("none", "left out: --identity none"))
    'identity: NOT certified (left out: --identity none)'
    """
    auc = "" if block.get("auc") is None else f"; AUC {block['auc']:.3f} CI [{block['auc_interval'][0]:.3f}, {block['auc_interval'][1]:.3f}]"
    return f"identity: {'certified' if block['certified'] else 'NOT certified'} ({block['reason']}{auc})"
