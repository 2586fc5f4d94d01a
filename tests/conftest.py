"""Shared test fixtures: where the real shared data lives (one setting, overridable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()


def require_shared(*parts: str) -> Path:
    """Path inside the shared data folder; a missing file is an error (never a skip)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"shared data file {path} is missing: set WEBREFINERY_DATA to the folder that holds "
            "warc/, cc/, html/, eval/ ... (default: ../shared/data beside the repository)"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()
