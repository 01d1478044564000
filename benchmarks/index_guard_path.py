"""The guard's whole search path against faiss flat search, on image view sets with real neighbours.

What the guard runs for one image and one check: the query vectors of every view (``--check pixel``:
:func:`~monai_pso.embed.views.default_query_views` of the ``pixel`` embedder, 53 views x 2 flips = 106 vectors in
2D; ``--check copy``: the copy check's aligned embedder, 746 poses x 2 flips = 1,492 vectors), their exact
smallest distance to the reference rows and the row attaining it (:meth:`monai_pso.index.ReferenceIndex.nearest_items`,
grouped search); the decision is ``distance >= tau``.

- Images: IXI T1 axial slices (``/work/shared/data/ixi_t1_2mm``), resampled to 32x32, in ``[0, 1]``.
- References (``--sizes``): embeddings (``pixel``, grid 16 -> D = 256, grid 32 -> D = 1024; ``copy``: D = 256) of the slices
  of the first 165 subjects, shuffled, then augmented copies of them (random shifts up to 4 pixels, turns up
  to 8 degrees, gain 0.85-1.15, offset +-0.05, Gaussian noise up to 0.02) until the size is reached: every
  row is a real image or a transformed real image, none is synthetic filler.
- Queries (``--images``): three quarters slices of the 20 held-out subjects, one quarter near-copies of
  reference slices (shifted 1 pixel, turned 2 degrees, gain 1.05), each as its 106 view vectors.
- Baseline: ``faiss.IndexFlatL2.search(k=1)`` on the same query vectors (``faiss.knn``, its kernel, on the
  shard rows in place above ``--flat-copy-gb``), the minimum per image taken after; faiss's default kernel
  choice (up to ``--default-kernel-max`` references: above, its BLAS kernel is the faster one, see
  ``benchmarks/index.py``) and its BLAS kernel forced, the faster counts. Ours and faiss are timed alternately
  (``--repeat`` rounds, best of each), so machine load hits both.
- Exactness: every image's distance and row against a float64 brute force over every vector and row
  (float64 products, candidates within their float64 error bound re-measured canonically); a mismatch is
  an image whose distance (to the last bit), row or decision at ``tau`` differs. ``tau`` is the 5th
  percentile of the held-out images' distances.
- Memory: peak resident set size of the process (``/proc/self/statm`` sampled every 2 ms) during our call.

Writes the ``guard_path`` rows of ``benchmarks/results/index_cpu.json`` (``index_gpu.json`` with a GPU
backend), keeping the file's other keys.

Usage::

    python benchmarks/index_guard_path.py --sizes 1e4 --dims 256 --images 8   # small, about a minute
    python benchmarks/index_guard_path.py                                     # 1e4,1e5,1e6 x 256,1024
    python benchmarks/index_guard_path.py --check copy --dims 256 --images 8  # the copy check's views
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index import SHARED, FlatBaseline, _rss_bytes, add_run_arguments, run_settings  # noqa: E402 (the flat benchmark's baseline, RSS reader, options)

from monai_pso import __version__  # noqa: E402
from monai_pso.embed.aligned import AlignedEmbedder  # noqa: E402
from monai_pso.embed.base import Embedding  # noqa: E402
from monai_pso.embed.pixel import PixelEmbedder  # noqa: E402
from monai_pso.embed.views import default_query_views  # noqa: E402
from monai_pso.index import ReferenceIndex  # noqa: E402
from monai_pso.index.exact import pair_distances  # noqa: E402
from monai_pso.io import write_json_atomically  # noqa: E402
from monai_pso.threads import cpu_threads  # noqa: E402

SIDE = 32
HELD_OUT_SUBJECTS = 20
GRIDS = {256: 16, 1024: 32}
AUGMENT_BATCH = 2048


# -- data ------------------------------------------------------------------------------------------


def axial_slices() -> list[np.ndarray]:
    """Per subject: its non-blank axial slices ``(n, SIDE, SIDE)`` in ``[0, 1]`` (cached in the temp folder)."""
    cache = Path(tempfile.gettempdir()) / f"monai_pso_guard_ixi_axial_{SIDE}.npz"
    if not cache.exists():
        import nibabel as nib

        files = sorted(glob.glob(str(SHARED / "ixi_t1_2mm" / "t1" / "*.nii.gz")))
        if not files:
            raise SystemExit(f"{SHARED / 'ixi_t1_2mm'}: no IXI volumes")
        subjects = []
        for path in tqdm(files, desc="IXI slices"):
            volume = np.asarray(nib.load(path).dataobj, np.float32)
            volume = np.clip(volume / np.percentile(volume, 99.5), 0.0, 1.0)
            slices = torch.from_numpy(np.moveaxis(volume, 2, 0).copy())[:, None]
            slices = F.interpolate(slices, size=(SIDE, SIDE), mode="area")[:, 0]
            subjects.append(slices[slices.flatten(1).mean(1) > 0.05].numpy())
        np.savez(cache, *subjects)
    with np.load(cache) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


def augment(images: torch.Tensor, rng: np.random.Generator, shift: float, degrees: float, gain: tuple[float, float], offset: float, noise: float) -> torch.Tensor:
    """Random shift (pixels), turn (degrees), intensity change and noise of each image ``(B, 1, H, W)``."""
    n = len(images)
    angle = np.radians(rng.uniform(-degrees, degrees, n))
    move = rng.uniform(-shift, shift, (n, 2)) * 2.0 / images.shape[-1]
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    theta[:, :, 2] = move
    grid = F.affine_grid(torch.from_numpy(theta), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    scale = torch.from_numpy(rng.uniform(*gain, (n, 1, 1, 1)).astype(np.float32))
    shift_value = torch.from_numpy(rng.uniform(-offset, offset, (n, 1, 1, 1)).astype(np.float32))
    sigma = torch.from_numpy(rng.uniform(0.0, noise, (n, 1, 1, 1)).astype(np.float32))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noisy = moved * scale + shift_value + sigma * torch.randn(moved.shape, generator=generator)
    return noisy.clamp(0.0, 1.0)


def check_embedder(check: str, dim: int) -> Any:
    """The embedder of a guard check at dimension ``dim``: ``pixel`` (grid 16 or 32) or ``copy`` (the aligned
    embedder of the copy check, 16 x 16 equalised samples: D = 256 only)."""
    if check == "copy":
        if dim != 256:
            raise SystemExit(f"--check copy: the copy check's vectors have 256 dimensions, not {dim}")
        return AlignedEmbedder()
    return PixelEmbedder(grid=GRIDS[dim])


def reference_vectors(train: np.ndarray, size: int, dims: list[int], seed: int, check: str) -> dict[int, np.ndarray]:
    """Per dimension: ``(size, D)`` memory-mapped embeddings, real slices first (shuffled), then augmented copies."""
    folder = Path(tempfile.gettempdir()) / "monai_pso_guard_refs"
    folder.mkdir(exist_ok=True)
    paths = {d: folder / f"refs_{check}_{size}_{d}_{seed}.npy" for d in dims}
    if all(p.exists() for p in paths.values()):
        return {d: np.load(p, mmap_mode="r") for d, p in paths.items()}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    outputs = {d: np.lib.format.open_memmap(folder / f"partial_{p.name}", mode="w+", dtype=np.float32, shape=(size, d)) for d, p in paths.items()}
    embedders = {d: check_embedder(check, d) for d in dims}
    for start in tqdm(range(0, size, AUGMENT_BATCH), desc=f"{size} references"):
        count = min(size, start + AUGMENT_BATCH) - start
        source = torch.from_numpy(train[order[np.arange(start, start + count) % len(train)]])[:, None]
        real = np.arange(start, start + count) < len(train)
        images = source if real.all() else torch.where(torch.from_numpy(real)[:, None, None, None], source, augment(source, rng, 4.0, 8.0, (0.85, 1.15), 0.05, 0.02))
        for d, embedder in embedders.items():
            outputs[d][start : start + count] = embedder.embed(images).vectors[:, 0]
    for d, path in paths.items():
        outputs[d].flush()
        del outputs[d]
        (folder / f"partial_{path.name}").replace(path)
    return {d: np.load(p, mmap_mode="r") for d, p in paths.items()}


def query_images(held_out: np.ndarray, train: np.ndarray, n_images: int, seed: int) -> torch.Tensor:
    """``(n_images, 1, SIDE, SIDE)``: held-out slices, and a quarter of near-copies of training slices."""
    rng = np.random.default_rng(seed + 1)
    n_copies = n_images // 4
    fresh = torch.from_numpy(held_out[rng.choice(len(held_out), n_images - n_copies, replace=False)])[:, None]
    picked = torch.from_numpy(train[rng.choice(len(train), n_copies, replace=False)])[:, None]
    copies = augment(picked, rng, 1.0, 2.0, (1.05, 1.05), 0.0, 0.0)
    return torch.cat([fresh, copies])


# -- measuring -------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident set size of the process while the block runs, sampled every 2 ms (MiB)."""

    def __enter__(self) -> PeakRss:
        self.peak, self._done = _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()
        self.mib = self.peak / 2**20


def faiss_per_image(flat: FlatBaseline, rows: np.ndarray, owner: np.ndarray, blas: bool) -> tuple[np.ndarray, np.ndarray]:
    """faiss 1-NN of every query vector, then the smallest float32 value per image and its row."""
    squared, hits = flat.search(rows, blas=blas)
    order = np.lexsort((hits, squared, owner))
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
    return np.sqrt(np.maximum(squared[first], 0.0)), hits[first]


def brute_force(index: ReferenceIndex, rows: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: canonical float64 smallest distance over all its vectors and all rows, and the (smallest) row.

    Float64 products ``|q|^2 + |r|^2 - 2 q.r`` over every pair; every pair within twice their float64 error
    bound ``2 (D + 8) 2^-53 (|q| + |r|)^2`` of an image's smallest value is re-measured canonically.
    """
    n_images = int(owner[-1]) + 1
    best, best_row = np.full(n_images, np.inf), np.full(n_images, -1, np.int64)
    queries64 = torch.from_numpy(rows.astype(np.float64))
    query_sq = (queries64 * queries64).sum(1)
    query_norm = query_sq.sqrt()
    gamma = 2.0 * (index.dim + 8) * 2.0**-53
    for shard in index.shards:
        for start in range(0, shard.n_rows, 1 << 13):
            block = torch.from_numpy(np.asarray(shard.vectors[start : start + (1 << 13)], np.float64))
            block_sq = (block * block).sum(1)
            squared = torch.addmm(block_sq.unsqueeze(0), queries64, block.T, alpha=-2.0).add_(query_sq.unsqueeze(1))
            error = (query_norm.unsqueeze(1) + block_sq.sqrt().unsqueeze(0)).square_().mul_(gamma)
            low, high = (squared - error).numpy(), squared.add_(error).numpy()
            image_high = np.full(n_images, np.inf)
            np.minimum.at(image_high, owner, high.min(1))
            limit = np.minimum(image_high, best**2) * (1 + 1e-12)
            q, r = np.nonzero(low <= limit[owner][:, None])
            exact = pair_distances(rows, np.asarray(shard.vectors), q, start + r)
            global_rows = shard.row_offset + shard.row_id[start + r]
            for image, distance, row in zip(owner[q], exact, global_rows):
                if distance < best[image] or (distance == best[image] and row < best_row[image]):
                    best[image], best_row[image] = distance, row
    return best, best_row


def timed_call(call) -> float:
    """Seconds one ``call()`` takes."""
    tick = time.perf_counter()
    call()
    return time.perf_counter() - tick


# -- one configuration -----------------------------------------------------------------------------


def run_one(dim: int, size: int, vectors: np.ndarray, embedding: Embedding, n_fresh: int, args) -> dict[str, Any]:
    """One row: the guard's path on ``size`` references of dimension ``dim`` against faiss flat search."""
    start = time.perf_counter()
    index = ReferenceIndex.from_vectors(np.asarray(vectors[:size]), np.arange(size), [str(i) for i in range(size)], ["p"] * size, source=f"IXI axial slices, {size} rows")
    index.use_backend(args.backend)
    index.searchers()
    build_s = time.perf_counter() - start
    rows, owner = embedding.rows(), embedding.row_owner()
    flat = FlatBaseline(index, args.flat_copy_gb * 2**30)
    ours_s, faiss_s, faiss_default_s = [], [], []
    for _ in range(args.repeat):  # alternately, so that load changes hit both
        tick = time.perf_counter()
        found = index.nearest_items(embedding)
        ours_s.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        faiss_distance, faiss_rows = faiss_per_image(flat, rows, owner, blas=True)
        faiss_s.append(time.perf_counter() - tick)
    if size <= args.default_kernel_max:
        tick = time.perf_counter()
        faiss_per_image(flat, rows, owner, blas=False)
        faiss_default_s.append(time.perf_counter() - tick)
    strategy_s = {}
    if size <= args.strategy_max:  # grouping against a flat pass of our own (both exact): where the grouping pays
        for strategy in ("flat", "pruned"):
            strategy_s[strategy] = min(timed_call(lambda s=strategy: index.nearest_per_image(rows, owner, s)) for _ in range(args.repeat))
    searchers = index.searchers()
    for searcher in searchers:
        searcher.pairs_scanned = searcher.projected_pairs_scanned = searcher.pairs_remeasured = 0
    with PeakRss() as ours_rss:
        index.nearest_items(embedding)
    scanned = sum(s.pairs_scanned for s in searchers)
    projected = sum(s.projected_pairs_scanned for s in searchers)
    remeasured = sum(s.pairs_remeasured for s in searchers)
    with PeakRss() as faiss_rss:
        faiss_per_image(flat, rows, owner, blas=True)
    start = time.perf_counter()
    truth, truth_rows = brute_force(index, rows, owner)
    brute_s = time.perf_counter() - start
    tau = float(np.percentile(truth[:n_fresh], 5.0))
    mismatched = (found.distance != truth) | (found.row != truth_rows) | ((found.distance >= tau) != (truth >= tau))
    n_images = len(embedding)
    best_faiss = min(faiss_s + faiss_default_s)
    return {
        "check": args.check,
        "references": size,
        "dim": dim,
        "images": n_images,
        "vectors_per_image": len(rows) / n_images,
        "queries_per_s": n_images / min(ours_s),
        "faiss_flat_queries_per_s": n_images / best_faiss,
        "faiss_flat_default_kernel_queries_per_s": n_images / min(faiss_default_s) if faiss_default_s else None,
        "speedup_vs_faiss_flat": best_faiss / min(ours_s),
        "flat_queries_per_s": n_images / strategy_s["flat"] if strategy_s else None,
        "grouped_queries_per_s": n_images / strategy_s["pruned"] if strategy_s else None,
        "mismatches": int(mismatched.sum()),
        "faiss_float32_distance_max_abs_error": float(np.max(np.abs(faiss_distance - truth))),
        "faiss_row_differs": int((faiss_rows != truth_rows).sum()),
        "tau": tau,
        "images_within_tau": int((truth < tau).sum()),
        "near_copies_within_tau": int((truth[n_fresh:] < tau).sum()),
        "peak_rss_mb": ours_rss.mib,
        "faiss_flat_peak_rss_mb": faiss_rss.mib,
        "fraction_of_pairs_scanned": scanned / (len(rows) * size),
        "fraction_of_pairs_scanned_projected": projected / (len(rows) * size),
        "projection_dim": index.shards[0].projection_dim,
        "pairs_remeasured_float64_per_image": remeasured / n_images,
        "build_s": build_s,
        "brute_force_s": brute_s,
        "seconds": {"ours": ours_s, "faiss_flat_blas": faiss_s, "faiss_flat_default": faiss_default_s},
        "baseline": flat.impl,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, "256 and/or 1024 (pixel grids 16 and 32)")
    parser.add_argument("--images", type=int, default=16, help="query images (a quarter of them near-copies)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating timing rounds (best of each side)")
    parser.add_argument("--default-kernel-max", type=float, default=1e5, help="also time faiss's default kernel choice up to this many references")
    parser.add_argument("--strategy-max", type=float, default=1e5, help="also time our flat and grouped strategies apart up to this many references")
    parser.add_argument("--check", default="pixel", choices=["pixel", "copy"], help="whose embedding and views: the pixel check's or the copy check's")
    args = parser.parse_args()
    sizes, dims, gpu, out = run_settings(args)
    sizes.sort()
    subjects = axial_slices()
    train, held_out = np.concatenate(subjects[:-HELD_OUT_SUBJECTS]), np.concatenate(subjects[-HELD_OUT_SUBJECTS:])
    images = query_images(held_out, train, args.images, args.seed)
    n_fresh = args.images - args.images // 4
    rows: list[dict[str, Any]] = []
    with cpu_threads(args.threads):
        vectors = reference_vectors(train, max(sizes), dims, args.seed, args.check)
        for dim in dims:
            embedder = check_embedder(args.check, dim)
            embedding = default_query_views(embedder, 2).embed(embedder, images)
            for size in sizes:
                print(f"{args.check} check, dim {dim}, {size} references ...", flush=True)
                rows.append(run_one(dim, size, vectors[dim], embedding, n_fresh, args))
                print(json.dumps({k: rows[-1][k] for k in ("queries_per_s", "faiss_flat_queries_per_s", "speedup_vs_faiss_flat", "mismatches", "peak_rss_mb")}), flush=True)
                write_rows(out, rows, args, len(train), gpu)  # after every row: a long run keeps what it measured


def write_rows(out: Path, rows: list[dict[str, Any]], args: argparse.Namespace, real_slices: int, gpu: bool) -> None:
    """Write ``rows`` into the ``guard_path`` of ``out``, replacing the rows of the same size and dimension
    and keeping the others (a run of one dimension keeps the other's) and the file's other keys."""
    report = json.loads(out.read_text()) if out.exists() else {"benchmark": "monai_pso.index exact search vs faiss IndexFlatL2"}
    def key(row: dict[str, Any]) -> tuple[str, int, int]:
        return row.get("check", "pixel"), row["dim"], row["references"]

    measured = {key(r) for r in rows}
    kept = [r for r in report.get("guard_path", []) if key(r) not in measured]
    report["guard_path"] = sorted(kept + rows, key=key)
    report["guard_path_setup"] = {
        "package_version": __version__,
        "platform": platform.platform(),
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "backend": args.backend,
        "images": args.images,
        "image_side": SIDE,
        "views": default_query_views(PixelEmbedder(), 2).to_dict(),
        "copy_check_embedder": AlignedEmbedder().settings,
        "reference_augmentation": {"shift_px": 4.0, "turn_degrees": 8.0, "gain": [0.85, 1.15], "offset": 0.05, "noise_std": 0.02},
        "real_reference_slices": real_slices,
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
    }
    write_json_atomically(out, report)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
