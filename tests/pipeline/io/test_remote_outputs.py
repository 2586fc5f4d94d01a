"""A run whose output folder is on an object store (``memfs://``, standing in for gs://) keeps every contract
of a local run: manifest cross-check, report.json, funnel.png, stale shards removed, resume detection, and
shards that read back identical to the local run's, also to the tokenizer's training and encoding."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests import memfs  # noqa: F401  (registers memfs://)
from tests.memfs import MemoryFileSystem
from pipeline.html_report import render
from pipeline.io import fs
from pipeline.io import shards as shard_io
from pipeline.report import load_report
from pipeline.run import run_pipeline
from pipeline.tokenize.encode import TokenizeParams, run_tokenize_pipeline
from pipeline.tokenize.train import TrainTokenizerParams, train_tokenizer
from pipeline.paths import require_shared


@pytest.fixture()
def store():
    MemoryFileSystem.objects.clear()
    yield MemoryFileSystem.objects
    MemoryFileSystem.objects.clear()


def test_run_into_an_object_store_matches_a_local_run(tmp_path, store):
    inputs = [str(require_shared("warc", "news-articles-aeb.warc.gz")),
              str(require_shared("warc", "truncated-record.warc.gz"))]
    local = str(tmp_path / "local")
    remote = "memfs://bucket/runs/a"
    overrides = ["output.num_shards=3"]
    r_local = run_pipeline("rw_raw", inputs, local, overrides=overrides)
    r_remote = run_pipeline("rw_raw", inputs, remote, overrides=overrides)
    assert not os.path.exists("memfs:") and not os.path.exists("bucket")  # nothing leaked onto local disk
    # double entry ran against the object store, and the reports agree
    assert r_remote["written"] == r_local["written"] and r_remote["written"]["documents_rows"] > 100
    assert r_remote["stages"] == r_local["stages"]
    assert load_report(remote)["output_documents"] == r_local["output_documents"]
    png = store[f"{remote}/funnel.png"][0]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not [p for p in store if p.endswith(".tmp")]  # every upload was renamed into place
    # byte-identical shards, listed and read back through the same helpers
    remote_docs = shard_io.list_shards(f"{remote}/documents")
    assert [fs.basename(p) for p in remote_docs] == [os.path.basename(p) for p in
                                                      shard_io.list_shards(os.path.join(local, "documents"))]
    for path in remote_docs:
        assert store[path][0] == open(os.path.join(local, "documents", fs.basename(path)), "rb").read()
    assert shard_io.read_table(f"{remote}/documents").equals(shard_io.read_table(os.path.join(local, "documents")))
    assert sum(1 for _ in shard_io.iter_rows(f"{remote}/rejected", columns=["reason"])) == \
        r_local["rejected_documents"]
    manifest = json.loads(fs.read_bytes(f"{remote}/manifest.json"))
    assert [e["name"] for e in manifest["documents"]] == [fs.basename(p) for p in remote_docs]

    # the tokenizer reads refined shards straight from the object store: the same tokenizer, the same tokens
    params = TrainTokenizerParams(vocab_size=400, sample_bytes=200_000, seed=3)
    train_tokenizer(remote, str(tmp_path / "tok_remote"), params)  # a run folder: its documents/ are used
    train_tokenizer(os.path.join(local, "documents"), str(tmp_path / "tok_local"), params)
    tok_json = (tmp_path / "tok_remote" / "tokenizer.json").read_bytes()
    assert tok_json == (tmp_path / "tok_local" / "tokenizer.json").read_bytes()
    for name, src in (("ids_remote", f"{remote}/documents/*.arrow"), ("ids_local", os.path.join(local, "documents"))):
        run_tokenize_pipeline(src, TokenizeParams(tokenizer=str(tmp_path / "tok_local" / "tokenizer.json"),
                                                  output=str(tmp_path / name), num_shards=2))
    token_files = sorted(p.relative_to(tmp_path / "ids_local") for p in (tmp_path / "ids_local").rglob("*.arrow"))
    assert len(token_files) == 3  # 2 train shards + 1 val shard
    for split_file in token_files:
        assert (tmp_path / "ids_remote" / split_file).read_bytes() == (tmp_path / "ids_local" / split_file).read_bytes()
    # ... and writes token shards to the object store, with a tokenizer that lives there too
    store["memfs://bucket/tok/tokenizer.json"] = (tok_json, 0.0)
    remote_tokens = "memfs://bucket/tokens"
    manifest = run_tokenize_pipeline(os.path.join(local, "documents"), TokenizeParams(
        tokenizer="memfs://bucket/tok/tokenizer.json", output=remote_tokens, num_shards=2))
    local_manifest = json.loads((tmp_path / "ids_local" / "manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "seconds"} == local_manifest
    for split_file in token_files:
        assert store[f"{remote_tokens}/{split_file.as_posix()}"][0] == (tmp_path / "ids_local" / split_file).read_bytes()
    assert store[f"{remote_tokens}/tokenizer.json"][0] == tok_json

    # `refinery report` on the object-store run: a local page with the same funnel and rejected samples
    page = Path(render(remote, str(tmp_path / "page_remote")))
    local_page = Path(render(local, str(tmp_path / "page_local")))
    timeless = lambda html: re.sub(r"\([\d.]+ s,", "(s,", html)  # noqa: E731  (the runs' own durations)
    assert timeless(page.read_text()) == timeless(local_page.read_text().replace(local, remote))
    assert sorted(p.name for p in page.parent.glob("*.png")) == sorted(p.name for p in local_page.parent.glob("*.png"))
    assert "read:truncated" in page.read_text()

    # a rerun on the same inputs finds the complete run on the object store and skips
    assert run_pipeline("rw_raw", inputs, remote, overrides=overrides).get("skipped") is True
    # ... but not when a listed shard has gone missing
    del store[remote_docs[0]]
    again = run_pipeline("rw_raw", inputs, remote, overrides=overrides)
    assert not again.get("skipped") and remote_docs[0] in store

    # a rerun with fewer shards removes the old run's shards that are not part of the new one
    run_pipeline("rw_raw", inputs, remote, overrides=["output.num_shards=2"])
    names = sorted(fs.basename(p) for p in shard_io.list_shards(f"{remote}/documents"))
    assert names == ["part-00000-of-00002.arrow", "part-00001-of-00002.arrow"]


def test_missing_remote_files_give_clear_errors(store):
    with pytest.raises(FileNotFoundError, match="memfs://bucket/nowhere/report.json"):
        load_report("memfs://bucket/nowhere")
    with pytest.raises(FileNotFoundError, match="no Arrow shards"):
        shard_io.list_shards("memfs://bucket/nowhere/documents")
    assert fs.list_files("memfs://bucket/nowhere/*") == [] and not fs.exists("memfs://bucket/x")
