"""A run's shards open in the tools people already use: Hugging Face `datasets` (`load_dataset("arrow", ...)`),
polars and DuckDB (through a pyarrow dataset), with the row counts of report.json and the shards' columns."""

from __future__ import annotations

import json

import pyarrow.dataset as pds
import pytest

from pipeline.paths import require_shared
from pipeline.cli import main as refinery
from pipeline.io.shards import list_shards


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small real `refinery run rw_raw` (40 records of the news WARC: kept and rejected documents)."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert refinery(["run", "rw_raw", "--input", str(require_shared("warc", "news-articles-aeb.warc.gz")),
                     "--output", str(out), "--limit", "40"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["output_documents"] > 0 and report["rejected_documents"] > 0  # both folders have rows
    return out, report


@pytest.mark.parametrize("folder,count_key", [("documents", "output_documents"), ("rejected", "rejected_documents")])
def test_hugging_face_datasets_loads_the_shards(run, folder, count_key, tmp_path):
    import datasets

    out, report = run
    files = list_shards(str(out / folder))
    assert len(files) > 1
    reference = pds.dataset(files, format="ipc").to_table()
    loaded = datasets.load_dataset("arrow", data_files=files, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == report[count_key] == reference.num_rows
    assert loaded.column_names == reference.schema.names
    assert {"id", "url", "text", "source"} <= set(loaded.column_names)
    assert ("reason" in loaded.column_names) is (folder == "rejected")
    # the same rows, in shard order
    assert loaded["id"] == reference.column("id").to_pylist()
    assert loaded[0]["text"] == reference.column("text")[0].as_py()


def test_polars_and_duckdb_read_the_shards(run):
    import duckdb
    import polars as pl

    out, report = run
    files = list_shards(str(out / "documents"))
    counted = pl.scan_ipc(files).select(pl.len()).collect().item()
    assert counted == report["output_documents"]
    rejected = pds.dataset(list_shards(str(out / "rejected")), format="ipc")  # DuckDB queries it in place
    by_reason = dict(duckdb.sql("SELECT reason, count(*) FROM rejected GROUP BY reason").fetchall())
    expected = {}
    for stage in report["stages"]:
        for reason, n in stage["rejected"].items():
            expected[reason] = expected.get(reason, 0) + n
    assert by_reason == {r: n for r, n in expected.items() if n}
