"""Shared test fixtures: the real data beside the checkout (skipped when absent), tiny phantoms, one thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MONAI_PSO_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; the test is skipped when it is absent (e.g. on a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_2d_source() -> str:
    """A tiny 2D phantom SOURCE: 12 patients x 3 acquisitions at 32x32."""
    return "phantom:2d?patients=12&acquisitions=3&size=32&seed=0"


@pytest.fixture(scope="session")
def phantom_3d_source() -> str:
    """A tiny 3D phantom SOURCE: 8 patients x 2 acquisitions at 16^3."""
    return "phantom:3d?patients=8&acquisitions=2&size=16&seed=0"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch, faiss and BLAS on one thread for a whole test module, restored after it.

    Tiny tensors and arrays run many times faster on one thread than on two fighting over a busy 2-core
    machine. A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    from monai_pso.threads import cpu_threads

    with cpu_threads(1):
        yield
