"""Exact distances: the float64 reference arithmetic and the error bound of the float32 fast path.

Every decision of the index is taken on the *canonical distance*

    d(q, r) = sqrt(sum_i (float64(q_i) - float64(r_i))**2)          (float64 arithmetic)

between float32 vectors. Fast backends (faiss, BLAS, cuBLAS) compute the squared distance in float32 as
``|q|^2 + |r|^2 - 2 q.r`` (or as a sum of squared differences). With ``u = 2**-24`` the float32 unit
round-off and ``D`` the dimension, the standard dot-product bound ``|fl(x.y) - x.y| <= gamma_D sum|x_i y_i|``
(``gamma_n = n u / (1 - n u)``, valid for any summation order, blocked or FMA) and Cauchy-Schwarz give, for
both ways of computing it,

    |fl32(d^2) - d^2| <= gamma_{D+3} (|q| + |r|)^2  <=  B(q, r) := 2 (D + 8) u (|q| + |r|)^2

(the factor 2 and the ``+8`` also absorb the rounding of the norms, the final additions and ``gamma``'s
denominator while ``(D + 8) u < 1/2``). Underflow adds at most ``(D + 8) 2**-149`` in absolute terms, covered
by the term ``(D + 8) 2**-120`` added to ``B``; overflow is excluded by refusing vectors with a coordinate
above :data:`MAX_ABS_VALUE` in magnitude. So a float32 value ``v`` certifies ``d^2 >= v - B`` and ``d^2 <= v + B``.
The float64 canonical distance is itself within a relative ``(D + 2) 2**-53`` of the real distance; every
comparison against a float64 quantity is padded by :func:`float64_slack` (four times that), so that the
candidate sets taken from float32 values always contain every vector the float64 decision could select.
The candidates are then re-measured with :func:`pair_distances` and decided in float64.

Examples
--------
>>> q = np.array([[3.0, 0.0]], np.float32); r = np.array([[0.0, 4.0]], np.float32)
>>> pair_distances(q, r, np.array([0]), np.array([0]))
array([5.])
"""

from __future__ import annotations

import numpy as np

from monai_pso.errors import EmbedderSettingsError, ImageValueError

#: Unit round-off of IEEE float32 (round to nearest).
FLOAT32_UNIT_ROUNDOFF = 2.0**-24

#: Largest coordinate magnitude accepted: squares and their sums stay far inside the float32 range.
MAX_ABS_VALUE = 1e15

#: Pairs re-measured in float64 per chunk (bounds the temporary ``(chunk, D)`` float64 array).
_PAIR_CHUNK_VALUES = 1 << 22


def float32_gamma(dim: int) -> float:
    """The factor ``2 (D + 8) u`` of the float32 error bound ``B = gamma (|q| + |r|)^2``.

    Examples
    --------
    >>> float32_gamma(256) == 2 * 264 * 2.0**-24
    True
    """
    gamma = 2.0 * (dim + 8) * FLOAT32_UNIT_ROUNDOFF
    if gamma >= 0.5:
        raise EmbedderSettingsError(f"embedding dimension {dim}: too large for a float32 error bound; choose settings with fewer dimensions")
    return gamma


def float64_slack(dim: int) -> float:
    """Relative padding of float64 comparisons: four times the float64 error of a ``dim``-term sum.

    Examples
    --------
    >>> 0 < float64_slack(1024) < 1e-12
    True
    """
    return 4.0 * (dim + 8) * 2.0**-53


def float32_error_bound(dim: int, query_norms: np.ndarray, ref_norm: np.ndarray | float) -> np.ndarray:
    """``B = gamma (|q| + |r|)^2``: how far a float32 squared distance may lie from the real one.

    Parameters
    ----------
    dim
        Vector dimension ``D``.
    query_norms
        L2 norms of the queries (float64), any shape.
    ref_norm
        L2 norm(s) of the reference side, broadcast against ``query_norms``; an upper bound (such as the
        largest norm of a block) gives a valid, looser bound.

    Examples
    --------
    >>> bool(np.isclose(float32_error_bound(8, np.array([1.0]), 1.0)[0], 4 * float32_gamma(8)))
    True
    """
    norms = np.asarray(query_norms, np.float64) + np.asarray(ref_norm, np.float64)
    return float32_gamma(dim) * norms**2 + (dim + 8) * 2.0**-120


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """Float64 L2 norms of the rows of a float32 matrix (in chunks, so a memory map stays cheap).

    Examples
    --------
    >>> row_norms(np.array([[3, 4], [0, 1]], np.float32))
    array([5., 1.])
    """
    out = np.empty(len(vectors), np.float64)
    step = max(1, _PAIR_CHUNK_VALUES // max(1, vectors.shape[1]))
    for start in range(0, len(vectors), step):
        block = np.asarray(vectors[start : start + step], np.float64)
        out[start : start + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def same_up_to_float64_rounding(stored: np.ndarray, recomputed: np.ndarray, dim: int) -> np.ndarray:
    """Per value: ``stored`` lies within the float64 rounding of a ``dim``-term distance of ``recomputed``.

    Two evaluations of one canonical distance (or norm) in float64, summed in different orders, differ by
    at most a relative ``(D + 4) 2**-53``; the tolerance is ``(D + 8) 2**-53``. NaN never agrees. Used to
    check stored norms and cluster member distances against the vectors at load.

    Examples
    --------
    >>> same_up_to_float64_rounding(np.array([5.0, 0.05, 0.0]), np.array([5.0, 5.0, 0.0]), 8).tolist()
    [True, False, True]
    """
    recomputed = np.asarray(recomputed, np.float64)
    tolerance = (dim + 8) * 2.0**-53 * np.abs(recomputed)
    return np.abs(np.asarray(stored, np.float64) - recomputed) <= tolerance


def pair_distances(queries: np.ndarray, refs: np.ndarray, query_index: np.ndarray, ref_index: np.ndarray) -> np.ndarray:
    """Canonical float64 distances of the pairs ``(queries[query_index[j]], refs[ref_index[j]])``.

    Examples
    --------
    >>> pair_distances(np.ones((1, 3), np.float32), np.zeros((2, 3), np.float32), np.array([0, 0]), np.array([0, 1]))
    array([1.73205081, 1.73205081])
    """
    out = np.empty(len(query_index), np.float64)
    step = max(1, _PAIR_CHUNK_VALUES // max(1, queries.shape[1]))
    for start in range(0, len(query_index), step):
        stop = start + step
        diff = np.subtract(np.asarray(queries[query_index[start:stop]]), np.asarray(refs[ref_index[start:stop]]), dtype=np.float64)
        out[start:stop] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def certified_lower(float32_sq: np.ndarray, bound: np.ndarray, slack: float) -> np.ndarray:
    """A float64 lower bound of the real distance from float32 squared distances and their bound ``B``.

    Examples
    --------
    >>> certified_lower(np.array([25.0]), np.array([0.0]), 0.0)
    array([5.])
    """
    return np.sqrt(np.maximum(np.asarray(float32_sq, np.float64) - bound, 0.0)) * (1.0 - slack)


def certified_upper(float32_sq: np.ndarray, bound: np.ndarray, slack: float) -> np.ndarray:
    """A float64 upper bound of the real distance from float32 squared distances and their bound ``B``.

    Examples
    --------
    >>> certified_upper(np.array([25.0]), np.array([0.0]), 0.0)
    array([5.])
    """
    return np.sqrt(np.maximum(np.asarray(float32_sq, np.float64), 0.0) + bound) * (1.0 + slack)


def squared_threshold(radius: np.ndarray, bound: np.ndarray, slack: float) -> np.ndarray:
    """Largest float32 squared distance at which a vector may still lie within ``radius`` (float64).

    A vector whose float32 squared distance exceeds this has a canonical distance above ``radius``.

    Examples
    --------
    >>> float(squared_threshold(np.array([2.0]), np.array([0.5]), 0.0)[0])
    4.5
    """
    return (np.asarray(radius, np.float64) * (1.0 + slack)) ** 2 + bound


def check_finite_vectors(vectors: np.ndarray, what: str) -> np.ndarray:
    """``vectors`` as a contiguous float32 ``(N, D)`` array; raises on NaN, infinite or huge values.

    A NaN distance compares false with every threshold, so letting one through would let an image pass
    the guard unchecked: it is refused instead, as are coordinates above :data:`MAX_ABS_VALUE`.

    Examples
    --------
    >>> check_finite_vectors(np.zeros((2, 3)), "queries").dtype
    dtype('float32')
    """
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ImageValueError(f"{what}: expected vectors shaped (N, D), got shape {array.shape}")
    step = max(1, _PAIR_CHUNK_VALUES // max(1, array.shape[1]))
    magnitude = np.concatenate(
        [np.abs(array[i : i + step]).max(axis=1, initial=0.0) for i in range(0, len(array), step)] or [np.zeros(0, np.float32)]
    )
    bad = np.nonzero(~(magnitude <= MAX_ABS_VALUE))[0]
    if len(bad):
        raise ImageValueError(f"{what}: rows {bad[:5].tolist()} hold NaN, infinite or too large (> {MAX_ABS_VALUE:g}) values")
    return array
