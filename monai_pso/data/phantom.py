"""``phantom:2d`` and ``phantom:3d``: a procedural dataset the package generates itself.

Each patient has an anatomy of their own (a body outline, organs, a texture and, for half of them,
a lesion), drawn from the seed and the patient's number. Each acquisition re-renders that anatomy
the way a re-scan differs: another pose (rotation, shift, scale), intensity drift and noise. So the
dataset has what privacy calibration needs (several images per patient), a binary finding label
(lesion present) for classification, and clean images to degrade for denoising and super-resolution
(:mod:`monai_pso.data.degrade`).

SOURCE options: ``patients`` (16), ``acquisitions`` (4), ``size`` (64 in 2D, 32 in 3D), ``lesion_fraction``
(0.5), ``noise`` (0.02, the mean noise standard deviation), and the common ``seed``.

Examples
--------
>>> from monai_pso.data import load_source
>>> src = load_source("phantom:3d?patients=2&acquisitions=2&size=16")
>>> src[0].image.shape, src[0].patient_id
((1, 16, 16, 16), 'phantom-000')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_pso.data.records import ImageRecord
from monai_pso.errors import DataSourceError, UnknownSourceError


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of the phantom dataset (see the module docstring)."""

    spatial_dims: int = 2
    patients: int = 16
    acquisitions: int = 4
    size: int = 64
    lesion_fraction: float = 0.5
    noise: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class _Ellipsoid:
    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    value: float


@dataclass(frozen=True)
class _Anatomy:
    body: _Ellipsoid
    organs: tuple[_Ellipsoid, ...]
    lesion: _Ellipsoid | None
    texture_freqs: np.ndarray  # (n_waves, dims) cycles over the field of view
    texture_phases: np.ndarray
    texture_amplitude: float


def _rotation(rng: np.random.Generator, dims: int, max_degrees: float) -> np.ndarray:
    """A random rotation matrix with angles up to ``max_degrees`` about each axis."""
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=1 if dims == 2 else 3))
    if dims == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
        matrix = matrix @ turn
    return matrix


def _draw_anatomy(rng: np.random.Generator, dims: int, has_lesion: bool) -> _Anatomy:
    body = _Ellipsoid(rng.uniform(-0.05, 0.05, dims), rng.uniform(0.6, 0.85, dims), _rotation(rng, dims, 10), rng.uniform(0.3, 0.45))
    organs = []
    for _ in range(int(rng.integers(3, 6))):
        direction = rng.normal(size=dims)
        centre = body.centre + direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.45) * body.radii
        value = rng.uniform(0.55, 0.9) if rng.random() < 0.6 else rng.uniform(0.05, 0.2)
        organs.append(_Ellipsoid(centre, rng.uniform(0.08, 0.28, dims), _rotation(rng, dims, 90), value))
    lesion = None
    if has_lesion:
        host = organs[int(rng.integers(len(organs)))]
        lesion = _Ellipsoid(host.centre + rng.uniform(-0.5, 0.5, dims) * host.radii, rng.uniform(0.04, 0.08, dims), np.eye(dims), 1.0)
    waves = int(rng.integers(3, 6))
    return _Anatomy(body, tuple(organs), lesion, rng.uniform(2, 9, (waves, dims)) * rng.choice([-1, 1], (waves, dims)), rng.uniform(0, 2 * np.pi, waves), rng.uniform(0.03, 0.06))


def _inside(points: np.ndarray, shape: _Ellipsoid, sharpness: float) -> np.ndarray:
    """Soft indicator (0..1) of ``points`` (N, dims) lying inside ``shape``; soft edges avoid aliasing."""
    local = (points - shape.centre) @ shape.rotation / shape.radii
    return 0.5 * (1.0 + np.tanh(0.5 * sharpness * (1.0 - np.sqrt((local**2).sum(axis=1)))))


def _render(anatomy: _Anatomy, spec: PhantomSpec, rng: np.random.Generator) -> np.ndarray:
    """One acquisition: pose, render, intensity drift and noise; values clipped to [0, 1]."""
    dims, size = spec.spatial_dims, spec.size
    axis = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(*([axis] * dims), indexing="ij"), axis=-1).reshape(-1, dims)
    pose = _rotation(rng, dims, 6.0) * rng.uniform(0.96, 1.04)
    points = (grid - rng.uniform(-0.05, 0.05, dims)) @ pose  # scanner coordinates -> patient coordinates
    sharpness = size / 2.0
    body = _inside(points, anatomy.body, sharpness)
    image = body * anatomy.body.value
    for organ in anatomy.organs:
        image += body * _inside(points, organ, sharpness) * (organ.value - anatomy.body.value)
    if anatomy.lesion is not None:
        image += body * _inside(points, anatomy.lesion, sharpness) * 0.35
    texture = np.cos(np.pi * points @ anatomy.texture_freqs.T + anatomy.texture_phases).mean(axis=1)
    image += body * anatomy.texture_amplitude * texture
    image = image * rng.uniform(0.93, 1.07) + rng.uniform(-0.03, 0.03) * body
    image += rng.normal(0.0, spec.noise * rng.uniform(0.5, 1.5), image.shape)
    return np.clip(image, 0.0, 1.0).reshape((1,) + (size,) * dims).astype(np.float32)


def generate_phantom(spec: PhantomSpec) -> list[ImageRecord]:
    """All records of the phantom dataset described by ``spec``; identical for identical specs.

    Examples
    --------
    >>> recs = generate_phantom(PhantomSpec(patients=3, acquisitions=2, size=16))
    >>> [r.item_id for r in recs[:2]], recs[0].label in (0, 1)
    (['phantom-000-acq0', 'phantom-000-acq1'], True)
    """
    records = []
    for patient in range(spec.patients):
        rng = np.random.default_rng([spec.seed, spec.spatial_dims, patient])
        has_lesion = bool(rng.random() < spec.lesion_fraction)
        anatomy = _draw_anatomy(rng, spec.spatial_dims, has_lesion)
        patient_id = f"phantom-{patient:03d}"
        for acquisition in range(spec.acquisitions):
            image = _render(anatomy, spec, np.random.default_rng([spec.seed, spec.spatial_dims, patient, acquisition, 1]))
            records.append(
                ImageRecord(
                    item_id=f"{patient_id}-acq{acquisition}",
                    patient_id=patient_id,
                    image=image,
                    label=int(has_lesion),
                    modality="other",
                    spacing=(1.0,) * spec.spatial_dims,
                    normalize="none",
                    extra={"acquisition": acquisition},
                )
            )
    return records


def reader_for(location: str, source: str):
    """The reader for ``phantom:2d`` or ``phantom:3d`` (used by :func:`monai_pso.data.load_source`)."""
    dims = {"phantom:2d": 2, "phantom:3d": 3}.get(location)
    if dims is None:
        raise UnknownSourceError(location, "unknown phantom (expected phantom:2d or phantom:3d)")

    def read(_: Path, options) -> list[ImageRecord]:
        spec = PhantomSpec(
            spatial_dims=dims,
            patients=options.get_int("patients", 16),
            acquisitions=options.get_int("acquisitions", 4),
            size=options.get_int("size", 64 if dims == 2 else 32),
            lesion_fraction=options.get_float("lesion_fraction", 0.5),
            noise=options.get_float("noise", 0.02),
            seed=options.get_int("seed", 0),
        )
        if spec.patients < 1 or spec.acquisitions < 1 or spec.size < 8:
            raise DataSourceError(source, "phantom needs patients >= 1, acquisitions >= 1 and size >= 8")
        return generate_phantom(spec)

    return read
