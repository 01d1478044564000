"""The shipped chest X-ray identity network: train it, and measure it as the guard uses it.

Data: ``../shared/data/kermany_pedcxr_128`` (paediatric chest X-rays, read at 64 x 64). Same-patient
pairs only from the ``bacteria_*`` / ``virus_*`` ids with two or more images (``SOURCE.md`` caveat 2:
571 patients); every single-image patient (normal ones included) is a stranger only. Split by patient
(seed 0):

- **network** patients (the rest of the 571, and ``--distractors`` single-image patients as negatives):
  the identity network is trained on them only (:func:`monai_pso.embed.train_reid`, hard negatives, the
  pixel-farthest partner);
- **evaluation** patients, never seen by the network, in three disjoint groups of repeat patients:
  *calibration* (the guard's held-out split: tau), *trained* (all their images but the last in the
  guard's training split; the last is the probe, a new image of a trained patient) and *unseen* (every
  image a probe), plus ``--reference-singles`` single-image strangers in the training split.

The guard's identity check is built as ``guard build --identity PATH`` builds it
(:func:`monai_pso.guard.identity.build_identity_check`: index of the training split, tau calibrated on the
calibration patients) and each probe's distance comes from the check itself
(:meth:`monai_pso.guard.checker.GuardCheck.measure`). Figures (:func:`monai_pso.calibrate.identity.measure_identity`):
AUC of a trained patient's new image against an unseen patient's image, refused and released shares at
tau with patient-bootstrap intervals, planted exact copies refused; the same for the guard's
whole-image pixel check; and the AUC against the number of network patients (``--curve``).

Usage::

    python benchmarks/identity.py --threads 1                 # writes benchmarks/results/identity.json
    python benchmarks/identity.py --save-weights              # also replaces monai_pso/embed/weights/identity_xray
    python benchmarks/identity.py --evaluate-only             # measure the shipped network again (minutes)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from monai_pso import __version__
from monai_pso.calibrate import calibrate_threshold
from monai_pso.calibrate.identity import measure_identity
from monai_pso.data import DataSource, ImageRecord, load_image
from monai_pso.embed import PixelEmbedder, load_embedder, train_reid
from monai_pso.guard.checker import GuardCheck
from monai_pso.guard.identity import SHIPPED_XRAY, build_identity_check
from monai_pso.index import build_index
from monai_pso.threads import cpu_threads

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KERMANY = SHARED / "kermany_pedcxr_128"
RESULTS = Path(__file__).resolve().parent / "results"
#: The shipped network: small enough to commit (under 2 MB of weights).
NETWORK = dict(dim=64, channels=(16, 32, 64, 64), input_size=64)
#: Augmentations a copy survives, applied to every view in training.
AUGMENTATION = dict(rotation=10.0, zoom=0.1, shift=0.06, intensity_scale=0.15, intensity_shift=0.08, noise=0.02)


def kermany_patients(root: Path = KERMANY) -> tuple[dict[str, list[dict[str, str]]], list[str], list[str]]:
    """Rows by patient, the repeat pneumonia patients and the single-image patients, each shuffled (seed 0)."""
    by_patient: dict[str, list[dict[str, str]]] = {}
    for row in csv.DictReader((root / "datalist.csv").open()):
        by_patient.setdefault(row["patient_id"], []).append(row)
    rng = np.random.default_rng(0)
    repeats = [p for p in sorted(by_patient) if len(by_patient[p]) >= 2 and not p.startswith("normal")]
    singles = [p for p in sorted(by_patient) if len(by_patient[p]) == 1]
    return by_patient, list(rng.permutation(repeats)), list(rng.permutation(singles))


def record(row: dict[str, str], split: str, root: Path = KERMANY) -> ImageRecord:
    """One datalist row as a record of ``split``."""
    return ImageRecord(Path(row["image"]).stem, row["patient_id"], str(root / row["image"]), None, split, modality="xray", normalize="uint8")


def train_network(by_patient, patients: list[str], distractors: list[str], validation: list[str], epochs: int, seed: int, progress: bool, hard_negatives: bool = True):
    """The identity network trained on ``patients``' pairs with ``distractors`` as negatives, validated on ``validation``."""
    rows = [(row, "train") for p in patients for row in by_patient[p]] + [(by_patient[p][0], "train") for p in distractors]
    rows += [(row, "val") for p in validation for row in by_patient[p]]
    source = DataSource([record(row, split) for row, split in rows], f"kermany_pedcxr_128: {len(patients)} repeat patients, {len(distractors)} single-image")
    return train_reid(source, epochs=epochs, batch_size=64, learning_rate=1e-3, seed=seed, max_val_images=400, progress=progress, augmentation=AUGMENTATION, hard_negatives=hard_negatives, **NETWORK)


def guard_data(by_patient, groups: dict[str, list[str]], singles: list[str]) -> tuple[DataSource, list[ImageRecord], list[ImageRecord]]:
    """The guard's data (training: trained patients less their last image, and strangers; val: calibration) and the probes."""
    training = [record(row, "train") for p in groups["trained"] for row in by_patient[p][:-1]] + [record(by_patient[p][0], "train") for p in singles]
    calibration = [record(row, "val") for p in groups["calibration"] for row in by_patient[p]]
    trained_probes = [record(by_patient[p][-1], "test") for p in groups["trained"]]
    unseen_probes = [record(row, "test") for p in groups["unseen"] for row in by_patient[p]]
    return DataSource(training + calibration, "kermany_pedcxr_128 evaluation patients"), trained_probes, unseen_probes


def probe_distances(check: GuardCheck, probes: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The check's distance of every probe to its nearest training image, and the probes' patients."""
    images = np.stack([load_image(r) for r in probes])
    distances = np.concatenate([check.measure(images[i : i + 64])[0] for i in range(0, len(images), 64)])
    return distances, np.array([r.patient_id for r in probes])


def evaluate_check(check: GuardCheck, data: DataSource, trained: list[ImageRecord], unseen: list[ImageRecord], n_bootstrap: int) -> dict[str, Any]:
    """The check's figures on the probes, and the share of planted exact copies of training images it refuses."""
    measured = measure_identity(*probe_distances(check, trained), *probe_distances(check, unseen), tau=check.tau, n_bootstrap=n_bootstrap)
    copies = probe_distances(check, list(data.split("train"))[:: max(1, len(data.split("train")) // 40)])[0]
    threshold = check.threshold
    return {
        **measured.to_dict(),
        "copies_refused": float(np.mean(copies < check.tau)),
        "n_copies": len(copies),
        "calibration_auc": None if threshold.verification is None else threshold.verification.value,
        "calibration_auc_interval": None if threshold.verification is None else list(threshold.verification.interval),
        "same_applied": threshold.same_applied,
        "same_percentile": None if threshold.same is None else threshold.same.percentile,
        "utility_cost": threshold.utility_cost,
        "summary": measured.describe(),
    }


def identity_figures(embedder_dir: Path, data: DataSource, trained, unseen, n_bootstrap: int, progress: bool) -> dict[str, Any]:
    """``guard build --identity embedder_dir``'s identity check on these patients, and its figures."""
    with tempfile.TemporaryDirectory() as folder:
        entry, block = build_identity_check(data, Path(folder), str(embedder_dir), n_bootstrap=n_bootstrap, progress=progress)
        check = GuardCheck.create(Path(folder) / entry["index"], Path(folder) / entry["threshold"], embedder_dir=Path(folder) / entry["embedder_dir"], name="identity")
        return {**evaluate_check(check, data, trained, unseen, n_bootstrap), "certified": block["certified"], "reason": block["reason"], "guard_build_identity": block}


def pixel_figures(data: DataSource, trained, unseen, n_bootstrap: int, progress: bool) -> dict[str, Any]:
    """The guard's whole-image pixel check on the same patients."""
    embedder = PixelEmbedder()
    index = build_index(data, embedder, progress=progress)
    threshold = calibrate_threshold(index, embedder, data, n_bootstrap=n_bootstrap, progress=progress, accept_utility_cost=True)
    return evaluate_check(GuardCheck.create(index, threshold, embedder, name="pixel"), data, trained, unseen, n_bootstrap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--evaluation-patients", type=int, default=70, help="Repeat patients in each of calibration, trained and unseen.")
    parser.add_argument("--distractors", type=int, default=800, help="Single-image patients among the network's negatives.")
    parser.add_argument("--reference-singles", type=int, default=600, help="Single-image strangers in the guard's training split.")
    parser.add_argument("--curve", default="50,100,200", help="Network patient counts of the AUC curve (besides all of them); '' for none.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--save-weights", action="store_true", help="Write the full network to the shipped weights folder.")
    parser.add_argument("--no-hard-negatives", action="store_true", help="Ablation: train without the mined look-alike strangers.")
    parser.add_argument("--evaluate-only", action="store_true", help="Measure the shipped network again; keep the training time and curve of --out.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "identity.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    progress = not args.quiet
    by_patient, repeats, singles = kermany_patients()
    k = args.evaluation_patients
    groups = {"calibration": repeats[:k], "trained": repeats[k : 2 * k], "unseen": repeats[2 * k : 3 * k]}
    network_patients = repeats[3 * k :]
    distractors, reference_singles = singles[: args.distractors], singles[args.distractors : args.distractors + args.reference_singles]
    data, trained, unseen = guard_data(by_patient, groups, reference_singles)
    started = time.time()
    previous = json.loads(args.out.read_text()) if args.evaluate_only else None
    with cpu_threads(args.threads), tempfile.TemporaryDirectory() as scratch:
        if previous is None:
            embedder = train_network(by_patient, network_patients, distractors, groups["calibration"], args.epochs, 0, progress, not args.no_hard_negatives)
            embedder.provenance["evaluation_patients"] = [p for members in groups.values() for p in members]  # never seen by the network
            weights_dir = SHIPPED_XRAY if args.save_weights else Path(scratch) / "full"
            embedder.save(weights_dir)
        else:
            embedder, weights_dir = load_embedder(SHIPPED_XRAY), SHIPPED_XRAY
        training_seconds = time.time() - started if previous is None else previous["training_seconds"]
        full = identity_figures(weights_dir, data, trained, unseen, args.bootstrap, progress)
        pixel = pixel_figures(data, trained, unseen, args.bootstrap, progress)
        curve = [{"network_patients": len(network_patients), "auc": full["auc"], "auc_interval": full["auc_interval"], "train_seconds": round(training_seconds, 1)}]
        if previous is not None:
            curve += [point for point in previous["auc_curve"] if point["network_patients"] != len(network_patients)]
        for count in tqdm([int(c) for c in args.curve.split(",") if c and previous is None], desc="AUC curve", disable=not progress):
            began = time.time()
            smaller = train_network(by_patient, network_patients[:count], distractors, groups["calibration"], args.epochs, 0, progress, not args.no_hard_negatives)
            smaller.save(Path(scratch) / f"n{count}")
            figures = identity_figures(Path(scratch) / f"n{count}", data, trained, unseen, args.bootstrap, progress)
            curve.append({"network_patients": count, "auc": figures["auc"], "auc_interval": figures["auc_interval"], "train_seconds": round(time.time() - began, 1)})
    shipped = load_embedder(weights_dir) if args.save_weights or previous is not None else embedder
    result = {
        "benchmark": "identity",
        "monai_pso_version": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": args.threads,
        "data": str(KERMANY.name),
        "settings": {
            "epochs": args.epochs,
            "network": NETWORK,
            "augmentation": AUGMENTATION,
            "distractors": args.distractors,
            "bootstrap": args.bootstrap,
            "hard_negatives": not args.no_hard_negatives,
        },
        "patients": {
            "network_repeat_patients": len(network_patients),
            "network_images": shipped.provenance["train_images"],
            **{f"{name}_patients": len(members) for name, members in groups.items()},
            "reference_single_patients": len(reference_singles),
            "guard_training_images": len(data.split("train")),
            "trained_probes": len(trained),
            "unseen_probes": len(unseen),
        },
        "training_seconds": round(training_seconds, 1),
        "network_provenance": {key: value for key, value in shipped.provenance.items() if "auc" in key or key in ("train_images", "train_patients", "final_loss")},
        "weights_fingerprint": shipped.fingerprint,
        "weights_saved": args.save_weights,
        "evaluated_again": args.evaluate_only,  # True: the training time and the smaller networks' curve points come from the training run
        "identity_check": full,
        "pixel_check": pixel,
        "auc_curve": sorted(curve, key=lambda point: point["network_patients"]),
        "targets": {"refused_trained": 0.8, "released_unseen": 0.5, "copies_refused": 1.0, "auc": 0.9, "training_minutes": 20},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"identity: {full['summary']}; copies refused {full['copies_refused']:.0%}\npixel:    {pixel['summary']}\ncurve: {result['auc_curve']}\n-> {args.out}")


if __name__ == "__main__":
    main()
