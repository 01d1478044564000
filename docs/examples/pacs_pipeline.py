"""A PACS-adjacent pipeline: DICOM in, privacy-gated synthetic DICOM out, sent to the PACS.

    python docs/examples/pacs_pipeline.py DICOM_DIR --index INDEX_DIR --threshold THRESHOLD.json \
        --out RELEASE_DIR [--pacs HOST:PORT --aet AE --called-aet AE]

1. load DICOM: ``load_source(DICOM_DIR)`` (any SOURCE works, e.g. ``"DICOM_DIR?normalize=none"``);
2. MONAI transforms: load, intensity preset to [0, 1], resize to the index's image shape, then the
   generator (here a stand-in, Gaussian noise: put your model in :func:`generator`);
3. the privacy gate: ``monai_pso.transforms.PrivacyGated`` (reference index + calibrated threshold), on
   the values the DICOM file will hold;
4. the release: ``monai_pso.release.ReleaseBuilder`` writes the released images as DICOM with their
   certificates, every decision in ``audit.csv``, and publishes the folder after recording it in the ledger;
5. export: ``export_release`` to the PACS (when ``--pacs`` is given).

The gate only measures closeness to the training patients in the index: a real image of anyone else
passes it. Feed it generated images only; the noise stand-in is for the phantom demonstration, never for
real studies. See docs/pacs.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, Lambdad, RandGaussianNoised, Resized
from monai.utils import set_determinism

from monai_pso.data import IntensityPresetd, LoadRecordImaged, load_source
from monai_pso.data.image_files import as_stored
from monai_pso.guard import load_checker
from monai_pso.index.reference import ReferenceIndex
from monai_pso.pacs import PacsNode, export_release
from monai_pso.release import ReleaseBuilder
from monai_pso.transforms import PrivacyGated


def generator(noise_std: float) -> list:
    """Stand-in for a generative model (one MONAI transform per step): noise, then back into [0, 1]."""
    return [
        RandGaussianNoised("image", prob=1.0, std=noise_std),
        Lambdad("image", lambda image: torch.clamp(image, 0.0, 1.0)),
    ]


def loading() -> Compose:
    """A record's image as a float tensor in [0, 1] (its intensity preset applied)."""
    return Compose([LoadRecordImaged("image"), IntensityPresetd("image")])


def generating_and_gating(index_dir: Path, checker, modality: str, noise_std: float) -> Compose:
    """Resize to the index's images, generate, store as DICOM values, and gate (records ``privacy_decision``)."""
    image_shape = ReferenceIndex.load(index_dir).image_shape
    return Compose([
        Resized("image", spatial_size=image_shape),
        *generator(noise_std),
        Lambdad("image", lambda image: torch.from_numpy(as_stored(np.asarray(image), "dicom", modality))),
        PrivacyGated(keys="image", guard=checker, mode="flag"),
    ])


def run(source: str, index_dir: Path, threshold_json: Path, out: Path, noise_std: float = 0.02) -> int:
    """Gate every image of ``source`` and release the ones that pass into ``out``; the number released."""
    set_determinism(seed=0)
    source = load_source(source)
    modality = source.records[0].modality
    checker = load_checker(index=index_dir, threshold=threshold_json)
    load = loading()
    with ReleaseBuilder(out, checker, "dicom", command="pacs-pipeline", source=source.description, modality=modality) as release:
        gate = generating_and_gating(index_dir, release.checker, modality, noise_std)  # the release's salt
        for number, record in enumerate(source, start=1):
            item = gate(load(record.to_dict()))
            name = f"synthetic-{number:04d}"  # never the input's name: it may identify a patient
            release.add(name, item["privacy_decision"], np.asarray(item["image"], dtype=np.float32))
        return release.finish().counts["released"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="DICOM folder (or any SOURCE string) of the images to gate")
    parser.add_argument("--index", type=Path, required=True, help="reference index folder")
    parser.add_argument("--threshold", type=Path, required=True, help="threshold JSON from calibration")
    parser.add_argument("--out", type=Path, required=True, help="release folder to write")
    parser.add_argument("--noise", type=float, default=0.02, help="noise of the stand-in generator")
    parser.add_argument("--pacs", help="HOST:PORT of the PACS to export to (optional)")
    parser.add_argument("--aet", default="MONAI_PSO", help="our AE title")
    parser.add_argument("--called-aet", default="ANY-SCP", help="the PACS's AE title")
    args = parser.parse_args(argv)

    released = run(args.source, args.index, args.threshold, args.out, args.noise)
    print(f"released {released} image(s) to {args.out}")
    if args.pacs:
        report = export_release(args.out, PacsNode.parse(args.pacs, args.aet, args.called_aet), progress=False)
        print(report.summary())
        return 0 if report.ok or not released else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
