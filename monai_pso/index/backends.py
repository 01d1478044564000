"""Where the float32 distance arithmetic runs: faiss / BLAS on the CPU, torch on CPU or GPUs, faiss on GPUs.

A backend only produces float32 squared distances (``|q|^2 + |r|^2 - 2 q.r``), candidates below a
threshold, and float32 k-nearest lists. It never decides anything: the callers in
:mod:`monai_pso.index.search` widen every threshold by the error bound of :mod:`monai_pso.index.exact` and
re-measure candidates in float64, so all backends give identical decisions.

That error bound holds for IEEE float32 arithmetic only, so nothing outside may lower the precision: every
call of a backend (:meth:`Backend.place`, :meth:`~Backend.sqdist`, :meth:`~Backend.below`,
:meth:`~Backend.knn`) runs inside :func:`exact_arithmetic` (torch autocast disabled on CPU and CUDA, float32
matrix products in full precision, no TF32), whatever autocast region or precision setting the caller is
in, and its results are checked for the designed dtypes (float32 distances, int64 positions, float64
re-measured values): anything else raises :class:`~monai_pso.errors.IndexIntegrityError` instead of
deciding on it. Backends implement the underscored methods (``_place``, ``_sqdist``...).

======================  ===========================================================================
name                    arithmetic
======================  ===========================================================================
``faiss-cpu``           ``faiss.knn`` (the IndexFlatL2 kernel, no copy of the vectors) and NumPy BLAS
``torch-cpu``           ``torch.matmul`` on the CPU (mostly for testing the torch code path)
``torch-cuda``          ``torch.matmul`` on GPUs, TF32 disabled; shard ``i`` lives on GPU ``i % n``
``faiss-gpu``           ``faiss.GpuIndexFlatL2`` for whole-shard k-NN, ``torch-cuda`` for the rest
======================  ===========================================================================

Examples
--------
>>> backend = get_backend("faiss-cpu")
>>> refs = np.eye(3, dtype=np.float32)
>>> placed = backend.place(refs, np.ones(3), slot=0)
>>> backend.knn(np.zeros((1, 3), np.float32), placed, 1, 0, 3)[0]
array([[1.]], dtype=float32)
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from monai_pso.errors import ConfigurationError, IndexIntegrityError

#: Elements of a ``(queries, references)`` float32 distance block computed at once (64 MiB).
BLOCK_ELEMENTS = 1 << 24


@dataclass
class Placed:
    """Reference vectors made resident for a backend.

    Parameters
    ----------
    vectors
        The backend's copy or view of the ``(N, D)`` float32 references (NumPy array, torch tensor).
    sq_norms
        Squared norms of the references, float32, in the same place as ``vectors``.
    extra
        Backend-specific state (a faiss GPU index).
    """

    vectors: Any
    sq_norms: Any
    extra: Any = None


def _dtype_of(array: Any) -> str:
    """``float32``, ``int64``...: the dtype of a NumPy array or a torch tensor, as NumPy names it."""
    dtype = getattr(array, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return str(np.dtype(dtype)) if dtype is not None else type(array).__name__


def _expect(backend: Backend, call: str, what: str, array: Any, dtype: str, shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`IndexIntegrityError` unless ``array`` has ``dtype`` (and ``shape``)."""
    found = _dtype_of(array)
    if found != dtype:
        raise IndexIntegrityError(
            f"{backend.name} backend: {call} gave {what} of dtype {found}, the exact search needs {dtype} "
            "(reduced precision from autocast, a changed torch default dtype or a custom backend); refusing to decide on it"
        )
    if shape is not None and tuple(array.shape) != shape:
        raise IndexIntegrityError(f"{backend.name} backend: {call} gave {what} shaped {tuple(array.shape)}, expected {shape}")


class Backend(ABC):
    """Float32 distance arithmetic over resident reference vectors.

    The public methods run the backend's ``_place`` / ``_sqdist`` / ``_below`` / ``_knn`` inside
    :func:`exact_arithmetic` and check the dtypes and shapes of what they return.
    """

    #: Name used in :func:`get_backend` and reports.
    name: str = ""

    def place(self, vectors: np.ndarray, norms: np.ndarray, slot: int = 0) -> Placed:
        """Make ``vectors`` (float32 ``(N, D)``, may be a memory map) resident; ``norms`` are their L2 norms."""
        _expect(self, "place", "reference vectors", vectors, "float32")
        with exact_arithmetic():
            placed = self._place(vectors, norms, slot)
        _expect(self, "place", "resident vectors", placed.vectors, "float32", tuple(vectors.shape))
        _expect(self, "place", "squared norms", placed.sq_norms, "float32", (len(vectors),))
        return placed

    def sqdist(self, queries: np.ndarray, placed: Placed, start: int, stop: int) -> np.ndarray:
        """Float32 squared distances ``(Q, stop - start)`` of ``queries`` to references ``start:stop``."""
        _expect(self, "sqdist", "queries", queries, "float32")
        with exact_arithmetic():
            block = self._sqdist(queries, placed, start, stop)
        _expect(self, "sqdist", "squared distances", block, "float32", (len(queries), stop - start))
        return block

    def below(
        self, queries: np.ndarray, placed: Placed, start: int, stop: int, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``(query, reference - start)`` whose float32 squared distance is ``<= thresholds[query]``,
        with that squared distance (the float32 ``|r|^2 - 2 q.r`` plus ``|q|^2`` in float64)."""
        _expect(self, "below", "queries", queries, "float32")
        with exact_arithmetic():
            pairs_q, pairs_r, values = self._below(queries, placed, start, stop, thresholds)
        _expect(self, "below", "query positions", pairs_q, "int64", (len(pairs_q),))
        _expect(self, "below", "reference positions", pairs_r, "int64", (len(pairs_q),))
        _expect(self, "below", "squared distances", values, "float64", (len(pairs_q),))
        return pairs_q, pairs_r, values

    def knn(self, queries: np.ndarray, placed: Placed, k: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest float32 squared distances to references ``start:stop``, ascending, and their
        positions relative to ``start``; ``k <= stop - start``."""
        _expect(self, "knn", "queries", queries, "float32")
        with exact_arithmetic():
            distances, positions = self._knn(queries, placed, k, start, stop)
        _expect(self, "knn", "squared distances", distances, "float32", (len(queries), k))
        _expect(self, "knn", "positions", positions, "int64", (len(queries), k))
        return distances, positions

    @abstractmethod
    def _place(self, vectors: np.ndarray, norms: np.ndarray, slot: int) -> Placed:
        """See :meth:`place`."""

    @abstractmethod
    def _sqdist(self, queries: np.ndarray, placed: Placed, start: int, stop: int) -> np.ndarray:
        """See :meth:`sqdist`."""

    @abstractmethod
    def _below(
        self, queries: np.ndarray, placed: Placed, start: int, stop: int, thresholds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :meth:`below`."""

    @abstractmethod
    def _knn(self, queries: np.ndarray, placed: Placed, k: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`knn`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _chunks(start: int, stop: int, n_queries: int, dim: int) -> Iterator[tuple[int, int]]:
    """Reference ranges small enough that a ``(n_queries, range)`` block fits :data:`BLOCK_ELEMENTS`."""
    step = max(1024, BLOCK_ELEMENTS // max(1, n_queries))
    for lo in range(start, stop, step):
        yield lo, min(stop, lo + step)


def _joined(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-chunk ``(query, reference, value)`` triples."""
    if len(found) == 1:
        return found[0]
    queries, refs, values = zip(*found) if found else ((np.zeros(0, np.int64),),) * 2 + ((np.zeros(0, np.float64),),)
    return np.concatenate(queries), np.concatenate(refs), np.concatenate(values)


def _reduced_thresholds(thresholds: np.ndarray, query_sq_norms: np.ndarray) -> np.ndarray:
    """``thresholds - |q|^2`` as float32, rounded up: compared with ``|r|^2 - 2 q.r`` it keeps every candidate."""
    reduced = (np.asarray(thresholds, np.float64) - query_sq_norms).astype(np.float32)
    return np.nextafter(reduced, np.float32(np.inf))


def _sq_norms(queries: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", queries, queries, dtype=np.float64)


@contextlib.contextmanager
def _faiss_blas() -> Iterator[None]:
    """Let faiss use its BLAS k-NN kernel whatever the batch size (its SIMD loop is slower here)."""
    import faiss

    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


class NumpyBackend(Backend):
    """CPU arithmetic: ``faiss.knn`` for k-NN, NumPy BLAS for distance blocks (``faiss-cpu``).

    Blocks hold ``|r|^2 - 2 q.r`` (float32, one product with ``-2 q``, exact scaling, and one addition);
    ``|q|^2`` is added in float64 per candidate, or moved to the threshold side rounded up.
    """

    name = "faiss-cpu"

    def _place(self, vectors: np.ndarray, norms: np.ndarray, slot: int = 0) -> Placed:
        return Placed(vectors, np.square(np.asarray(norms, np.float64)).astype(np.float32))

    def _partial(self, queries: np.ndarray, placed: Placed, start: int, stop: int) -> np.ndarray:
        block = (queries * np.float32(-2.0)) @ np.asarray(placed.vectors[start:stop]).T
        block += placed.sq_norms[start:stop]
        return block

    def _sqdist(self, queries: np.ndarray, placed: Placed, start: int, stop: int) -> np.ndarray:
        block = self._partial(queries, placed, start, stop)
        block += _sq_norms(queries).astype(np.float32)[:, None]
        return block

    def _below(self, queries, placed, start, stop, thresholds):
        query_sq = _sq_norms(queries)
        limits = _reduced_thresholds(thresholds, query_sq)[:, None]
        found = []
        for lo, hi in _chunks(start, stop, len(queries), queries.shape[1]):
            block = self._partial(queries, placed, lo, hi)
            q, r = np.nonzero(block <= limits)
            found.append((q.astype(np.int64), r.astype(np.int64) + (lo - start), block[q, r] + query_sq[q]))
        return _joined(found)

    def _knn(self, queries, placed, k, start, stop):
        import faiss

        with _faiss_blas():
            distances, positions = faiss.knn(queries, np.asarray(placed.vectors[start:stop]), k)
        return distances, positions.astype(np.int64)


@contextlib.contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Full IEEE float32 torch arithmetic whatever the caller set: autocast off on CPU and CUDA, no TF32.

    A caller's ``torch.autocast`` region (``float16`` or ``bfloat16``, CPU or CUDA) would otherwise turn the
    backends' matrix products into half-precision ones, outside the error bound of
    :mod:`monai_pso.index.exact`; ``torch.set_float32_matmul_precision("high")`` would allow TF32.

    Examples
    --------
    >>> a = torch.ones(2, 2)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16), exact_arithmetic():
    ...     (a @ a).dtype, torch.get_float32_matmul_precision()
    (torch.float32, 'highest')
    """
    if not (torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda")) and _full_float32_now():
        yield  # already exact (the common case, and nested calls): entering the contexts costs ~10 us per call
        return
    with torch.autocast(device_type="cpu", enabled=False), torch.autocast(device_type="cuda", enabled=False), full_float32_matmul():
        yield


@contextlib.contextmanager
def full_float32_matmul() -> Iterator[None]:
    """Run torch float32 matrix products in full IEEE float32 (no TF32, no bf16), then restore.

    The error bound of :mod:`monai_pso.index.exact` assumes float32 products; TF32 keeps only 10 bits.

    Examples
    --------
    >>> with full_float32_matmul():
    ...     torch.get_float32_matmul_precision()
    'highest'
    """
    legacy = _matmul_precision()
    previous = [(module, module.fp32_precision) for module in _fp32_precision_settings()]
    torch.set_float32_matmul_precision("highest")  # sets the cuBLAS and oneDNN float32 matmul precisions to "ieee"
    try:
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        for module, value in previous:  # torch >= 2.9: per-backend settings the legacy one does not restore (a mix)
            if module.fp32_precision != value:
                module.fp32_precision = value


@functools.cache
def _fp32_precision_settings() -> tuple[Any, ...]:
    """torch's per-backend float32 matmul precision settings (``torch.backends.cuda.matmul``, oneDNN's), where present."""
    modules = [getattr(torch.backends.cuda, "matmul", None), getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)]
    found = []
    for module in modules:
        try:
            module.fp32_precision  # noqa: B018 (absent before torch 2.9)
        except (AttributeError, RuntimeError):
            continue
        found.append(module)
    return tuple(found)


def _full_float32_now() -> bool:
    """Whether torch's float32 matrix products run in full float32 now (legacy and per-backend settings)."""
    return _matmul_precision() == "highest" and all(m.fp32_precision in ("ieee", "none") for m in _fp32_precision_settings())


def _matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or ``None`` when per-backend settings were mixed in (it refuses then)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


class TorchBackend(Backend):
    """Torch arithmetic on ``device`` (``"cpu"`` or ``"cuda"``); on CUDA, shard ``slot`` goes to GPU ``slot % n``.

    Examples
    --------
    >>> TorchBackend("cpu").name
    'torch-cpu'
    """

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"

    def _device_for(self, slot: int) -> torch.device:
        if self.device.type == "cuda" and self.device.index is None:
            return torch.device("cuda", slot % max(1, torch.cuda.device_count()))
        return self.device

    def _place(self, vectors: np.ndarray, norms: np.ndarray, slot: int = 0) -> Placed:
        device = self._device_for(slot)
        with warnings.catch_warnings():  # read-only memory maps: torch warns although nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.as_tensor(np.asarray(vectors), device=device)
        sq_norms = torch.as_tensor(np.square(np.asarray(norms, np.float64)), device=device).to(torch.float32)
        return Placed(tensor, sq_norms)

    def _partial(self, queries: torch.Tensor, placed: Placed, start: int, stop: int) -> torch.Tensor:
        """``|r|^2 - 2 q.r`` in float32 (``alpha = -2`` scales exactly)."""
        block = torch.addmm(placed.sq_norms[start:stop].unsqueeze(0), queries, placed.vectors[start:stop].T, alpha=-2.0)
        _expect(self, "a distance block", "values", block, "float32")
        return block

    def _queries(self, queries: np.ndarray, placed: Placed) -> torch.Tensor:
        return torch.as_tensor(queries, device=placed.vectors.device)

    def _sqdist(self, queries, placed, start, stop):
        query_sq = torch.as_tensor(_sq_norms(queries).astype(np.float32), device=placed.vectors.device)
        block = self._partial(self._queries(queries, placed), placed, start, stop)
        return block.add_(query_sq.unsqueeze(1)).cpu().numpy()

    def _below(self, queries, placed, start, stop, thresholds):
        q = self._queries(queries, placed)
        query_sq = _sq_norms(queries)
        limits = torch.as_tensor(_reduced_thresholds(thresholds, query_sq), device=q.device).unsqueeze(1)
        found = []
        for lo, hi in _chunks(start, stop, len(queries), queries.shape[1]):
            block = self._partial(q, placed, lo, hi)
            pairs = torch.nonzero(block <= limits)
            values = block[pairs[:, 0], pairs[:, 1]].cpu().numpy()
            pairs = pairs.cpu().numpy()
            found.append((pairs[:, 0], pairs[:, 1] + (lo - start), values + query_sq[pairs[:, 0]]))
        return _joined(found)

    def _knn(self, queries, placed, k, start, stop):
        q = self._queries(queries, placed)
        best_d = torch.empty((len(queries), 0), device=q.device, dtype=torch.float32)
        best_i = torch.empty((len(queries), 0), device=q.device, dtype=torch.int64)
        for lo, hi in _chunks(start, stop, len(queries), queries.shape[1]):
            d, i = torch.topk(self._partial(q, placed, lo, hi), min(k, hi - lo), dim=1, largest=False)
            best_d, order = torch.topk(torch.cat([best_d, d], 1), min(k, best_d.shape[1] + d.shape[1]), dim=1, largest=False)
            best_i = torch.gather(torch.cat([best_i, i + (lo - start)], 1), 1, order)
        query_sq = torch.as_tensor(_sq_norms(queries).astype(np.float32), device=q.device).unsqueeze(1)
        return (best_d + query_sq).cpu().numpy(), best_i.cpu().numpy()


class FaissGpuBackend(TorchBackend):
    """faiss ``GpuIndexFlatL2`` (full float32, no TF32) for whole-shard k-NN; ``torch-cuda`` for the rest."""

    def __init__(self):
        super().__init__("cuda")
        self.name = "faiss-gpu"
        self._resources = None

    def _place(self, vectors, norms, slot=0):
        import faiss

        placed = super()._place(vectors, norms, slot)
        if self._resources is None:
            self._resources = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = placed.vectors.device.index or 0
        index = faiss.GpuIndexFlatL2(self._resources, vectors.shape[1], config)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        placed.extra = index
        return placed

    def _knn(self, queries, placed, k, start, stop):
        if start == 0 and stop == placed.extra.ntotal and k <= 2048:
            distances, positions = placed.extra.search(queries, k)
            return distances, positions.astype(np.int64)
        return super()._knn(queries, placed, k, start, stop)


def faiss_gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def available_backends() -> list[str]:
    """Names of the backends usable on this machine, CPU ones first.

    Examples
    --------
    >>> available_backends()[:2]
    ['faiss-cpu', 'torch-cpu']
    """
    names = ["faiss-cpu", "torch-cpu"]
    if torch.cuda.is_available():
        names.append("torch-cuda")
        if faiss_gpu_count() > 0:
            names.append("faiss-gpu")
    return names


def get_backend(name: str | Backend = "auto") -> Backend:
    """A backend by name; ``"auto"`` takes ``faiss-gpu``, else ``torch-cuda``, else ``faiss-cpu``.

    Examples
    --------
    >>> get_backend("torch-cpu").name
    'torch-cpu'
    """
    if isinstance(name, Backend):
        return name
    available = available_backends()
    if name == "auto":
        name = next(n for n in ("faiss-gpu", "torch-cuda", "faiss-cpu") if n in available)
    if name not in available:
        raise ConfigurationError(f"backend={name!r}: not available here (available: {', '.join(available)})")
    if name == "faiss-cpu":
        return NumpyBackend()
    if name == "faiss-gpu":
        return FaissGpuBackend()
    return TorchBackend(name.removeprefix("torch-"))
