"""Tests of input expansion (pipeline/io/inputs.py): Common Crawl path lists, folders, globs, duplicates."""

from __future__ import annotations

import gzip

import pytest

from pipeline.errors import UserValueError
from pipeline.io.inputs import detect_format, expand_inputs, is_path_list, is_supported, read_path_list


def test_path_lists_plain_and_gzipped(tmp_path):
    lines = "# a comment\n\ncrawl-data/a.warc.gz\n/crawl-data/b.warc.gz\n  https://mirror.example/c.warc.gz  \n"
    plain = tmp_path / "warc.paths"
    plain.write_text(lines)
    gz = tmp_path / "warc.paths.gz"
    gz.write_bytes(gzip.compress(lines.encode()))
    want = ["https://cc.example/x/crawl-data/a.warc.gz", "https://cc.example/x/crawl-data/b.warc.gz",
            "https://mirror.example/c.warc.gz"]
    assert read_path_list(str(plain), "https://cc.example/x") == want
    assert read_path_list(str(gz), "https://cc.example/x/") == want
    assert expand_inputs([str(gz), str(plain)], commoncrawl_base_url="https://cc.example/x") == want  # deduped


def test_path_list_errors(tmp_path):
    bad = tmp_path / "bad.paths"
    bad.write_text("crawl-data/a.warc.gz\ncrawl-data/index.html\n")
    with pytest.raises(UserValueError, match="index.html"):
        read_path_list(str(bad))
    empty = tmp_path / "empty.paths"
    empty.write_text("# nothing\n")
    with pytest.raises(UserValueError, match="empty"):
        read_path_list(str(empty))


def test_folders_skip_hidden_entries_and_path_lists(tmp_path):
    for rel in ("b.warc.gz", "sub/a.jsonl", ".hidden/x.warc", "_tmp/y.warc", "sub/.z.warc", "list.paths",
                "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert expand_inputs(str(tmp_path)) == [str(tmp_path / "b.warc.gz"), str(tmp_path / "sub/a.jsonl")]
    assert expand_inputs([str(tmp_path / "**/*.jsonl"), str(tmp_path / "sub")]) == [str(tmp_path / "sub/a.jsonl")]


def test_names():
    assert is_path_list("https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-10/warc.paths.gz?x=1")
    assert detect_format("https://host/a.WARC.GZ#frag") == "warc" and detect_format("s3://b/x.warc.wat.gz") == "warc"
    assert not is_supported("a.txt") and is_supported("a.ndjson.gz")
    with pytest.raises(UserValueError, match="zst compression"):
        detect_format("a.parquet.zst")
