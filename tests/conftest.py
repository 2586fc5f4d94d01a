"""Shared test fixtures: where the real shared data lives (one setting, WEBREFINERY_DATA, overridable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.paths import REPO, require_shared, shared_data_dir  # noqa: F401  (re-exported for tests)

SHARED_DATA = shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()
