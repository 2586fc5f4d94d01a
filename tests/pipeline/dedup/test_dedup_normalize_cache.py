"""The dedup normalizer's code-point tables (pipeline/dedup/normalize.py) come from a cache file between runs:
the cached tables are the built ones exactly, and a damaged or foreign cache file is rebuilt, never used."""

from __future__ import annotations

import numpy as np

from pipeline.dedup import normalize


def test_cached_tables_equal_the_built_ones_and_damage_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBREFINERY_CACHE", str(tmp_path))
    built = normalize._build_tables()
    first = normalize._load_or_build()  # builds and saves
    path = normalize._cache_path()
    assert path.startswith(str(tmp_path)) and [p.name for p in tmp_path.iterdir()] == [path.rsplit("/", 1)[-1]]
    second = normalize._load_or_build()  # loads
    for a, b, c in zip(built, first, second):
        assert a.dtype == b.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)
    with open(path, "r+b") as fh:  # damage: cut the file
        fh.truncate(1000)
    again = normalize._load_or_build()
    assert all(np.array_equal(a, b) for a, b in zip(built, again))
    np.savez(path, table=built[0][:10], lower=built[1][:10])  # wrong shape: not used
    assert all(np.array_equal(a, b) for a, b in zip(built, normalize._load_or_build()))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_cache_folder_still_gives_the_tables(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WEBREFINERY_CACHE", str(blocker / "sub"))
    table, lower = normalize._load_or_build()
    assert table.shape == (0x110000,) and lower[ord("A")] == ord("a") and table[ord(" ")] == normalize.SEP
