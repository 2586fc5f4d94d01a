"""Shared test fixtures: where the real shared data lives (one setting, WEBREFINERY_DATA, overridable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.paths import REPO, require_shared, shared_data_dir  # noqa: F401  (re-exported for tests)

SHARED_DATA = shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module: tiny models run many times faster on one thread than
    on two small, shared cores where OpenMP threads spin against other processes (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
