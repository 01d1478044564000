"""A 2-process gloo group on localhost, each rank holding some shards, answers as one process does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ddp_support import free_port
from monai_pso.embed.base import Embedding
from monai_pso.index import ReferenceIndex, shards_for_rank

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch.distributed as dist
    from monai_pso.embed.base import Embedding
    from monai_pso.index import DistributedIndex

    folder, inputs, output, port, rank = sys.argv[1:6]
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=int(rank), world_size=2)
    except Exception as error:  # cannot start a group here: the test is skipped
        print("INIT FAILED", error)
        sys.exit(3)
    data = np.load(inputs)
    index = DistributedIndex.load(folder)
    d1, r1 = index.nearest(data["queries"], k=1)
    d3, r3 = index.nearest(data["queries"], k=3)
    hits = index.any_within(data["queries"], float(data["tau"]))
    embedding = Embedding(data["vectors"], data["valid"])
    items = index.nearest_items(embedding)
    close = index.any_item_within(embedding, float(data["tau"]))
    if int(rank) == 0:
        np.savez(output, d1=d1, r1=r1, d3=d3, r3=r3, hits=hits, item=items.item, distance=items.distance, close=close,
                 local_rows=index.local.n_rows)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_round_robin_assignment():
    assert shards_for_rank(5, 0, 2) == [0, 2, 4] and shards_for_rank(5, 1, 2) == [1, 3] and shards_for_rank(1, 1, 2) == []


def test_two_process_gloo_group_equals_single_process(tmp_path):
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(900, 130)).astype(np.float32)
    index = ReferenceIndex.from_vectors(refs, np.arange(900) // 2, [f"i{i}" for i in range(450)], ["p"] * 450, shard_rows=300, backend="faiss-cpu")
    folder = index.save(tmp_path / "index")
    queries = np.concatenate([rng.normal(size=(20, 130)), refs[[5, 400, 899]] + 0.01]).astype(np.float32)
    vectors = rng.normal(size=(4, 2, 130)).astype(np.float32)
    vectors[1, 1] = refs[650]
    valid = np.ones((4, 2), bool)
    d1, r1 = index.nearest(queries, k=1)
    tau = float(np.median(d1))
    np.savez(tmp_path / "inputs.npz", queries=queries, tau=tau, vectors=vectors, valid=valid)

    port, script = free_port(), tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    args = [str(folder), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz"), str(port)]
    workers = [subprocess.Popen([sys.executable, str(script), *args, str(rank)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        logs = [w.communicate(timeout=240)[0] for w in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
        pytest.skip("the gloo group did not finish in time on this machine")
    if any(w.returncode == 3 for w in workers):
        pytest.skip(f"cannot start a gloo process group here: {logs}")
    assert all(w.returncode == 0 for w in workers), logs

    out = np.load(tmp_path / "out.npz")
    assert int(out["local_rows"]) == 600  # rank 0 holds shards 0 and 2
    d3, r3 = index.nearest(queries, k=3)
    np.testing.assert_array_equal(out["d1"], d1)
    np.testing.assert_array_equal(out["r1"], r1)
    np.testing.assert_array_equal(out["d3"], d3)
    np.testing.assert_array_equal(out["r3"], r3)
    np.testing.assert_array_equal(out["hits"], index.any_within(queries, tau))
    embedding = Embedding(vectors, valid)
    found = index.nearest_items(embedding)
    np.testing.assert_array_equal(out["item"], found.item)
    np.testing.assert_array_equal(out["distance"], found.distance)
    assert found.item[1] == 325
    np.testing.assert_array_equal(out["close"], index.any_item_within(embedding, tau))
