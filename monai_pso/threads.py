"""CPU thread limits for torch, faiss and BLAS together (the CLI's ``--threads``, the tests, the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch, faiss and BLAS limited to ``n`` threads (``None``: unchanged) while the block runs.

    The guard's work is many small tensors: on a busy 2-core machine two threads make it about ten
    times slower than one (thread hand-offs dominate), and the tiny CPU networks gain little from two.

    Examples
    --------
    >>> import torch
    >>> with cpu_threads(1):
    ...     torch.get_num_threads()
    1
    """
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    if n is None:
        yield
        return
    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
