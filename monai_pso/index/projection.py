"""A certified low-dimensional filter: distances between PCA projections bound real distances from below.

Let ``P`` be a ``(D, m)`` float32 matrix (top principal directions of a shard's rows) and ``s`` an upper
bound of its spectral norm (float64 SVD, padded). For any vectors ``||P^T q - P^T r|| <= s ||q - r||``,
so the m-dimensional distance divided by ``s`` is a lower bound of the real distance: a pair can only be
within ``radius`` when its projected distance is below ``s * radius``.

Projections are computed in float64 and stored in float32. The stored ``p~(x)`` differs from the exact
``P^T x`` by at most ``(u + sqrt(m) gamma64_D)(1 + u) s ||x|| <= 4u s ||x||`` (``u = 2**-24``; each float64
dot product errs by at most ``gamma64_D ||P_j|| ||x||`` with ``||P_j|| <= s``, and the float32 rounding by ``u``
of the value). Hence, with :func:`projection_error` ``eps(x) = 4u s ||x||``,

    ||q - r||  >=  (||p~(q) - p~(r)|| - eps(q) - eps(r)) / s,

and the candidates of a search within ``radius`` are the pairs whose float32 projected squared distance is
at most ``(s radius + eps(q) + eps(r))^2 + B_m`` (``B_m`` the float32 bound of :mod:`monai_pso.index.exact` in
dimension ``m``). Every candidate is then re-measured in float64 on the full vectors. How many pairs the
filter removes depends on the data (how much of the distance the top directions carry); never which
answer is given.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(500, 64)).astype(np.float32) * np.linspace(3, 0.1, 64).astype(np.float32)
>>> p = fit_projection(x, 8)
>>> a, b = project(x[:1], p), project(x[1:2], p)
>>> bool(np.linalg.norm(a - b) / spectral_norm(p) <= np.linalg.norm(x[0] - x[1]) * (1 + 1e-6))
True
"""

from __future__ import annotations

import numpy as np

#: Relative error of a stored projection, times ``s ||x||`` (see the module docstring).
PROJECTION_ERROR = 4.0 * 2.0**-24

#: Rows used to estimate the principal directions.
_PCA_SAMPLE = 1 << 16

#: Rows projected per chunk.
_CHUNK = 1 << 15


def default_projection_dim(dim: int) -> int:
    """``dim / 16`` directions, at least 32 and at most 128, from 128 dimensions up; below, none.

    Fewer directions make the filter cheaper but leave more pairs to re-measure in float64 (on IXI
    slices: 32 suit 256 dimensions, 64 double the throughput at 1024 over 32).

    Examples
    --------
    >>> default_projection_dim(256), default_projection_dim(1024), default_projection_dim(64)
    (32, 64, 0)
    """
    return int(min(128, max(32, dim // 16))) if dim >= 128 else 0


def fit_projection(vectors: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """The top ``m`` principal directions ``(D, m)`` float32 of (a sample of) ``vectors``.

    ``m = 0`` gives an empty ``(D, 0)`` matrix (no filter).
    """
    dim = vectors.shape[1]
    m = min(m, dim)
    if m <= 0:
        return np.zeros((dim, 0), np.float32)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(len(vectors), _PCA_SAMPLE), replace=False))
    sample = np.asarray(vectors[rows], np.float64)
    sample -= sample.mean(axis=0)
    _, eigenvectors = np.linalg.eigh(sample.T @ sample)
    return np.ascontiguousarray(eigenvectors[:, ::-1][:, :m], dtype=np.float32)


def project(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``P^T x`` of each row, computed in float64 and stored as float32 ``(N, m)``."""
    out = np.empty((len(vectors), projection.shape[1]), np.float32)
    projection64 = projection.astype(np.float64)
    for start in range(0, len(vectors), _CHUNK):
        out[start : start + _CHUNK] = np.asarray(vectors[start : start + _CHUNK], np.float64) @ projection64
    return out


def spectral_norm(projection: np.ndarray) -> float:
    """An upper bound of the largest singular value of the (float32-valued) projection matrix.

    Examples
    --------
    >>> round(spectral_norm(np.eye(4, 2, dtype=np.float32)), 6)
    1.0
    """
    if projection.shape[1] == 0:
        return 0.0
    return float(np.linalg.norm(projection.astype(np.float64), ord=2)) * (1.0 + 1e-9)


def projection_error(scale: float, norms: np.ndarray | float) -> np.ndarray:
    """``eps(x) = 4u s ||x||``: how far a stored projection may be from the exact one."""
    return PROJECTION_ERROR * scale * np.asarray(norms, np.float64)
