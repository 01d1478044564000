"""Exact reference index against a faiss flat index: throughput, memory and exactness.

For each dimension (256, 1024) and reference count (1e4, 1e5, 1e6):

- references: real IXI T1 brain MRI slices (axial, coronal and sagittal slices of 165 subjects, average-
  pooled to 16x16 = 256 or 32x32 = 1024 values, about 44k slices), completed with synthetic vectors from a
  diagonal Gaussian mixture fitted to them (faiss k-means, 256 components) where more are needed;
- queries: slices of the 20 held-out subjects;
- tau: the ``--percentile`` (default 5th) percentile of the queries' exact nearest-neighbour distances;
- timed: exact 1-NN and the certified range query (``any_within``) of :class:`monai_pso.index.ReferenceIndex`
  (pruned and flat strategies) against ``faiss.IndexFlatL2.search(k=1)`` (with faiss's default kernel choice
  and with its BLAS kernel forced) and ``IndexFlatL2.range_search``;
- exactness: every decision is checked against the flat index's float32 answer, queries whose float32
  answer is within the float32 error bound of tau are settled by float64 brute force, and
  ``--brute`` queries are checked entirely by float64 brute force (distances equal to the last bit);
- memory: ``tracemalloc`` peak of each call (Python and NumPy allocations; faiss's C++ buffers are not
  seen) and the peak resident-set growth during the call, sampled from ``/proc/self/statm`` every 2 ms.

Usage::

    python benchmarks/index.py                                 # 1e4,1e5,1e6 x 256,1024 (CPU: ~6.5 GB peak, ~7 min)
    python benchmarks/index.py --sizes 1e4 --dims 256 --queries 50   # small
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from monai_pso import __version__
from monai_pso.index import ReferenceIndex, get_backend
from monai_pso.index.exact import float32_error_bound, float64_slack, pair_distances, row_norms
from monai_pso.index.shard import ShardBuilder
from monai_pso.threads import cpu_threads

SHARED = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT_SUBJECTS = 20


# -- data ------------------------------------------------------------------------------------------


def _volume_slices(path: str, side: int) -> np.ndarray:
    """Non-blank slices of one volume in the three orientations, average-pooled to ``side x side``."""
    import nibabel as nib

    volume = np.asarray(nib.load(path).dataobj, np.float32)
    volume = np.clip(volume / np.percentile(volume, 99.5), 0.0, 1.0)
    pooled = []
    for axis in range(3):
        slices = torch.from_numpy(np.moveaxis(volume, axis, 0).copy())
        slices = slices[slices.flatten(1).mean(1) > 0.05]
        pooled.append(torch.nn.functional.adaptive_avg_pool2d(slices[:, None], side).flatten(1).numpy())
    return np.concatenate(pooled)


def ixi_slices(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(references, queries)``: slices of the first subjects, and of the last :data:`HELD_OUT_SUBJECTS`."""
    side = int(round(np.sqrt(dim)))
    cache = Path(tempfile.gettempdir()) / f"monai_pso_bench_ixi_{side}.npz"
    if not cache.exists():
        files = sorted(glob.glob(str(SHARED / "ixi_t1_2mm" / "t1" / "*.nii.gz")))
        if not files:
            raise SystemExit(f"no IXI volumes under {SHARED / 'ixi_t1_2mm'}")
        per_subject = [_volume_slices(f, side) for f in files]
        np.savez(cache, refs=np.concatenate(per_subject[:-HELD_OUT_SUBJECTS]), queries=np.concatenate(per_subject[-HELD_OUT_SUBJECTS:]))
    with np.load(cache) as stored:
        return stored["refs"], stored["queries"]


class DiagonalMixture:
    """Gaussian mixture with diagonal covariances, fitted by faiss k-means (a stand-in for more images)."""

    def __init__(self, vectors: np.ndarray, components: int = 256, seed: int = 0):
        kmeans = faiss.Kmeans(vectors.shape[1], components, niter=20, seed=seed, verbose=False)
        kmeans.train(vectors)
        _, assignment = kmeans.index.search(vectors, 1)
        assignment = assignment[:, 0]
        counts = np.bincount(assignment, minlength=components)
        self.weights = counts / counts.sum()
        self.means = kmeans.centroids.astype(np.float32)
        self.stds = np.stack(
            [vectors[assignment == c].std(axis=0) if counts[c] > 1 else np.zeros(vectors.shape[1], np.float32) for c in range(components)]
        ).astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.choice(len(self.weights), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.means.shape[1]), dtype=np.float32)
        return self.means[component] + self.stds[component] * noise


def build_references(real: np.ndarray, mixture: DiagonalMixture | None, size: int, seed: int, shard_rows: int | None) -> tuple[ReferenceIndex, int]:
    """Index ``size`` rows: real ones first, then mixture samples generated chunk by chunk."""
    rng = np.random.default_rng(seed)
    builder = ShardBuilder(shard_rows=shard_rows, seed=seed)
    n_real = min(size, len(real))
    builder.add(real[rng.permutation(len(real))[:n_real]], np.arange(n_real))
    for start in range(n_real, size, 1 << 16):
        count = min(size, start + (1 << 16)) - start
        builder.add(mixture.sample(count, rng), np.arange(start, start + count))
    shards = builder.finish()
    patients = [f"real-{i}" if i < n_real else "synthetic" for i in range(size)]
    index = ReferenceIndex(shards, [str(i) for i in range(size)], patients, source=f"IXI slices ({n_real} real) + {size - n_real} mixture samples")
    return index, n_real


# -- measuring -------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def memory(fn: Callable[[], Any]) -> dict[str, float]:
    """Peak ``tracemalloc`` allocation and peak RSS growth (sampled every 2 ms) of one call, in MiB."""
    baseline, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"tracemalloc_peak_mib": traced / 2**20, "rss_growth_mib": max(0, peak[0] - baseline) / 2**20}


class FlatBaseline:
    """faiss flat search over the same rows (in storage order; positions are mapped back to global rows).

    An ``IndexFlatL2`` copy of the rows when they fit ``copy_limit_bytes``; otherwise ``faiss.knn`` (the
    kernel ``IndexFlatL2.search`` calls) on each shard's rows in place, merged, and no range search.
    """

    def __init__(self, index: ReferenceIndex, copy_limit_bytes: float):
        self.shards = index.shards
        self.global_rows = np.concatenate([s.row_offset + s.row_id for s in index.shards])
        self.index = None
        if index.n_rows * index.dim * 4 <= copy_limit_bytes:
            self.index = faiss.IndexFlatL2(index.dim)
            for shard in index.shards:
                self.index.add(np.asarray(shard.vectors))
        self.impl = "faiss.IndexFlatL2" if self.index is not None else "faiss.knn per shard (IndexFlatL2 kernel, no copy)"

    def _knn(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.index is not None:
            return self.index.search(queries, 1)
        best_sq, best_pos, offset = np.full((len(queries), 1), np.inf, np.float32), np.zeros((len(queries), 1), np.int64), 0
        for shard in self.shards:
            squared, positions = faiss.knn(queries, np.asarray(shard.vectors), 1)
            better = squared < best_sq
            best_sq[better], best_pos[better] = squared[better], positions[better] + offset
            offset += shard.n_rows
        return best_sq, best_pos

    def search(self, queries: np.ndarray, blas: bool) -> tuple[np.ndarray, np.ndarray]:
        previous = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1 if blas else previous
        try:
            squared, positions = self._knn(queries)
        finally:
            faiss.cvar.distance_compute_blas_threshold = previous
        return squared[:, 0], self.global_rows[positions[:, 0]]

    def range_search(self, queries: np.ndarray, tau: float) -> np.ndarray | None:
        if self.index is None:
            return None
        limits, _, _ = self.index.range_search(queries, tau * tau)
        return np.diff(limits) > 0


# -- exactness -------------------------------------------------------------------------------------


def _all_rows(index: ReferenceIndex) -> Callable[[np.ndarray], np.ndarray]:
    """Global rows -> vectors, for float64 re-measurement."""

    def fetch(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), index.dim), np.float32)
        for shard in index.shards:
            inside = (rows >= shard.row_offset) & (rows < shard.row_offset + shard.n_rows)
            position = np.empty(shard.n_rows, np.int64)
            position[shard.row_id] = np.arange(shard.n_rows)
            out[inside] = shard.vectors[position[rows[inside] - shard.row_offset]]
        return out

    return fetch


def brute_force(index: ReferenceIndex, query: np.ndarray) -> tuple[float, int]:
    """Canonical float64 nearest distance and (smallest) global row of one query, over every row."""
    best, best_row = np.inf, -1
    for shard in index.shards:
        for start in range(0, shard.n_rows, 1 << 14):
            block = np.asarray(shard.vectors[start : start + (1 << 14)], np.float64) - query.astype(np.float64)
            distances = np.sqrt(np.einsum("ij,ij->i", block, block))
            rows = shard.row_offset + shard.row_id[start : start + len(block)]
            low = distances.min()
            candidate = rows[distances == low].min()
            if low < best or (low == best and candidate < best_row):
                best, best_row = low, candidate
    return float(best), int(best_row)


def check_exactness(index, queries, tau, flat_sq, flat_rows, ours, n_brute, rng) -> dict[str, Any]:
    """Compare every answer of ours with the flat index, settling float32-ambiguous queries in float64."""
    fetch = _all_rows(index)
    query_norms = row_norms(queries)
    max_norm = max(float(np.max(s.norms)) for s in index.shards)
    bound = float32_error_bound(index.dim, query_norms, max_norm)
    slack = float64_slack(index.dim)
    flat_d64 = pair_distances(queries, fetch(flat_rows), np.arange(len(queries)), np.arange(len(queries)))
    ambiguous = np.abs(flat_sq.astype(np.float64) - tau * tau) <= bound * (1 + slack) + tau * tau * slack
    truth = flat_sq < tau * tau
    for q in np.flatnonzero(ambiguous):
        truth[q] = brute_force(index, queries[q])[0] < tau
    nearest_d = ours["nearest_pruned"][0][:, 0]
    lower = np.sqrt(np.maximum(flat_sq.astype(np.float64) - bound, 0)) * (1 - slack)
    report = {
        "float32_ambiguous_queries_settled_by_brute_force": int(ambiguous.sum()),
        "decision_mismatches": {name: int((ours[name] != truth).sum()) for name in ("any_pruned", "any_flat")},
        "nearest_not_sandwiched": int(((nearest_d > flat_d64) | (nearest_d < lower)).sum()),
        "nearest_pruned_vs_flat_strategy_max_abs_diff": float(np.abs(nearest_d - ours["nearest_flat"][0][:, 0]).max()),
        "nearest_rows_pruned_vs_flat_differ": int((ours["nearest_pruned"][1][:, 0] != ours["nearest_flat"][1][:, 0]).sum()),
    }
    picked = rng.choice(len(queries), size=min(n_brute, len(queries)), replace=False)
    exact = [brute_force(index, queries[q]) for q in picked]
    report["brute_force_queries"] = len(picked)
    report["brute_force_distance_mismatches"] = int(sum(d != nearest_d[q] for (d, _), q in zip(exact, picked)))
    report["brute_force_row_mismatches"] = int(sum(r != ours["nearest_pruned"][1][q, 0] for (_, r), q in zip(exact, picked)))
    report["exact"] = (
        sum(report["decision_mismatches"].values()) == 0
        and report["nearest_not_sandwiched"] == 0
        and report["brute_force_distance_mismatches"] == 0
        and report["brute_force_row_mismatches"] == 0
        and report["nearest_rows_pruned_vs_flat_differ"] == 0
    )
    return report


# -- one configuration -----------------------------------------------------------------------------


def run_one(dim: int, size: int, real: np.ndarray, queries: np.ndarray, mixture, args) -> dict[str, Any]:
    n_queries = len(queries)
    repeat = 3 if size <= 100_000 else 2
    start = time.perf_counter()
    index, n_real = build_references(real, mixture, size, args.seed, args.shard_rows)
    index.use_backend(args.backend)
    build_s = time.perf_counter() - start
    flat = FlatBaseline(index, args.flat_copy_gb * 2**30)
    flat_default_s, _ = timed(lambda: flat.search(queries, blas=False), repeat)
    flat_blas_s, (flat_sq, flat_rows) = timed(lambda: flat.search(queries, blas=True), repeat)
    tau = float(np.percentile(np.sqrt(np.maximum(flat_sq, 0)), args.percentile))
    flat_range_s = timed(lambda: flat.range_search(queries, tau), repeat)[0] if flat.index is not None else None
    calls = {
        "nearest_pruned": lambda: index.nearest(queries, 1, strategy="pruned"),
        "nearest_flat": lambda: index.nearest(queries, 1, strategy="flat"),
        "any_pruned": lambda: index.any_within(queries, tau, strategy="pruned"),
        "any_flat": lambda: index.any_within(queries, tau, strategy="flat"),
    }
    searchers = index.searchers()  # places the shards on the backend before timing
    seconds, ours, mem, scanned = {}, {}, {}, {}
    for name, call in calls.items():
        seconds[name], ours[name] = timed(call, repeat)
        for searcher in searchers:
            searcher.pairs_scanned = searcher.projected_pairs_scanned = searcher.pairs_remeasured = 0
        mem[name] = memory(call)
        scanned[name] = {
            "fraction_of_pairs_scanned_full_dim": sum(s.pairs_scanned for s in searchers) / (n_queries * size),
            "fraction_of_pairs_scanned_projected": sum(s.projected_pairs_scanned for s in searchers) / (n_queries * size),
            "pairs_remeasured_float64_per_query": sum(s.pairs_remeasured for s in searchers) / n_queries,
        }
    mem["faiss_flat_knn"] = memory(lambda: flat.search(queries, blas=True))
    best_flat = min(flat_default_s, flat_blas_s)
    qps = lambda s: n_queries / s  # noqa: E731
    exactness = check_exactness(index, queries, tau, flat_sq, flat_rows, ours, args.brute, np.random.default_rng(args.seed))
    result = {
        "dim": dim,
        "references": size,
        "real_references": n_real,
        "synthetic_references": size - n_real,
        "queries": n_queries,
        "tau": tau,
        "tau_percentile": args.percentile,
        "queries_within_tau": int(ours["any_pruned"].sum()),
        "shards": len(index.shards),
        "clusters": sum(s.n_clusters for s in index.shards),
        "median_cluster_radius": float(np.median(np.concatenate([s.radii for s in index.shards]))),
        "build_s": build_s,
        "qps": {
            "faiss_flat_knn_default": qps(flat_default_s),
            "faiss_flat_knn_blas": qps(flat_blas_s),
            "faiss_flat_range_search": qps(flat_range_s) if flat_range_s else None,
            **{name: qps(s) for name, s in seconds.items()},
        },
        "speedup_vs_best_faiss_flat": {name: best_flat / s for name, s in seconds.items()},
        "baseline": flat.impl,
        "work": scanned,
        "memory_mib": mem,
        "exactness": exactness,
    }
    return result


def add_run_arguments(parser: argparse.ArgumentParser, dims_help: str) -> None:
    """The options this benchmark shares with ``benchmarks/index_guard_path.py``."""
    parser.add_argument("--sizes", default="1e4,1e5,1e6", help="reference counts, comma-separated")
    parser.add_argument("--dims", default="256,1024", help=dims_help)
    parser.add_argument("--backend", default="auto", help="index backend (faiss-cpu, torch-cpu, torch-cuda, faiss-gpu)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for both sides (1: shared machine)")
    parser.add_argument("--flat-copy-gb", type=float, default=2.0, help="largest IndexFlatL2 copy of the rows (else faiss.knn in place)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/index_{cpu,gpu}.json")


def run_settings(args: argparse.Namespace) -> tuple[list[int], list[int], bool, Path]:
    """Sizes, dimensions, whether the (resolved) backend is a GPU one, and the results file."""
    args.backend = get_backend(args.backend).name
    gpu = args.backend in ("torch-cuda", "faiss-gpu")
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    return sizes, dims, gpu, args.out or RESULTS / f"index_{'gpu' if gpu else 'cpu'}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, "dimensions (perfect squares), comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="held-out query slices")
    parser.add_argument("--percentile", type=float, default=5.0, help="tau = this percentile of query NN distances")
    parser.add_argument("--shard-rows", type=int, default=None, help="rows per shard (default: 1 GiB of vectors)")
    parser.add_argument("--brute", type=int, default=16, help="queries also checked by full float64 brute force")
    args = parser.parse_args()
    sizes, dims, gpu, out = run_settings(args)
    results = []
    with cpu_threads(args.threads):
        for dim in dims:
            real, held_out = ixi_slices(dim)
            queries = np.ascontiguousarray(held_out[np.random.default_rng(args.seed).choice(len(held_out), args.queries, replace=False)])
            mixture = DiagonalMixture(real, seed=args.seed) if max(sizes) > len(real) else None
            for size in sizes:
                print(f"dim {dim}, {size} references ...", flush=True)
                results.append(run_one(dim, size, real, queries, mixture, args))
                row = results[-1]
                print(json.dumps({k: row[k] for k in ("qps", "speedup_vs_best_faiss_flat")}, indent=1), flush=True)
    report = {
        "benchmark": "monai_pso.index exact search vs faiss IndexFlatL2",
        "package_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "backend": args.backend,
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "memory_metric": "tracemalloc peak (Python/NumPy allocations) and peak RSS growth sampled from /proc/self/statm every 2 ms",
        "results": results,
    }
    if out.exists():  # the guard-path rows of benchmarks/index_guard_path.py live in the same file
        report.update({k: v for k, v in json.loads(out.read_text()).items() if k.startswith("guard_path")})
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_suffix(".json.tmp")
    staged.write_text(json.dumps(report, indent=1))
    staged.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
