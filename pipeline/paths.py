"""Where the project's shared data lives: one setting (WEBREFINERY_DATA), default ../shared/data.

Tests, benchmarks and pipelines.yaml find real archives, block lists and eval sets through this. A missing
file is an error that says how to point the setting elsewhere, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()


def require_shared(*parts: str) -> Path:
    """Path inside the shared data folder; raises FileNotFoundError with a hint when it is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"shared data file {path} is missing: set WEBREFINERY_DATA to the folder that holds "
            "warc/, cc/, html/, eval/ ... (default: ../shared/data beside the repository)"
        )
    return path
