"""Tests of model/data.py: zero-copy shard reading, window order, rank split, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from model.corridor.token_shards import chunk_documents, write_token_set
from model.data import TokenDataError, TokenShards, WindowLoader, open_token_split, split_files

EOT = 60000


def counting_documents(n_tokens: int, doc_len: int = 37):
    """Documents whose tokens are 0, 1, 2, ... in stream order (EOT at each document's end), so a
    window's first token tells where it starts."""
    docs, pos = [], 0
    while pos < n_tokens:
        length = min(doc_len, n_tokens - pos)
        doc = list(range(pos, pos + length))
        doc[-1] = EOT
        docs.append(doc)
        pos += length
    return docs


def stream_of(docs):
    return np.concatenate([np.asarray(d) for d in docs])


@pytest.fixture()
def tokens_dir(tmp_path):
    docs = counting_documents(5000)
    write_token_set(tmp_path, {"train": chunk_documents(docs, 40), "val": [counting_documents(700)]},
                    vocab_size=60001, eot_id=EOT)
    return tmp_path


def window_id(x_row: torch.Tensor, y_row: torch.Tensor, stream: np.ndarray, block: int) -> int:
    """The window index a sample came from, checked against the true stream."""
    first = int(x_row[0]) if int(x_row[0]) != EOT else int(x_row[1]) - 1
    w = first // block
    expected = stream[w * block: w * block + block + 1]
    assert np.array_equal(x_row.numpy(), expected[:-1]) and np.array_equal(y_row.numpy(), expected[1:])
    return w


def test_shards_are_memory_mapped_views_of_the_stream(tokens_dir):
    shards = open_token_split(tokens_dir, "train")
    stream = stream_of(counting_documents(5000))
    assert len(shards.files) > 3 and shards.total_tokens == 5000 == len(stream)
    assert shards.vocab_size == 60001 and shards.eot_id == EOT and shards.dtype == np.uint16
    assert shards.resident_bytes == 0  # uncompressed IPC: views into the page cache, no heap copy
    assert np.array_equal(shards.read(0, 5000), stream)
    # reads that cross shard and record-batch boundaries
    for start, length in ((35, 100), (1470, 90), (4990, 10)):
        assert np.array_equal(shards.read(start, length), stream[start:start + length])
    with pytest.raises(IndexError):
        shards.read(4995, 10)


def test_manifest_listing_and_directory_scan_agree(tokens_dir):
    listed = split_files(tokens_dir, "train")
    (tokens_dir / "manifest.json").unlink()
    scanned = split_files(tokens_dir, "train")
    assert listed == scanned
    with pytest.warns(UserWarning, match="inferred"):
        shards = open_token_split(tokens_dir, "train")  # no manifest: vocab from the data
    assert shards.vocab_size == EOT + 1


def test_uint32_and_compressed_shards(tmp_path):
    docs = [[70000, 5, 80000, 99999], [1, 2, 99999]]
    write_token_set(tmp_path / "a", {"train": [docs]}, vocab_size=100000, eot_id=99999)
    shards = open_token_split(tmp_path / "a", "train")
    assert shards.dtype == np.uint32 and shards.read(0, 7).tolist() == [70000, 5, 80000, 99999, 1, 2, 99999]
    # a zstd-compressed shard still reads correctly (decompressed into memory, and reported as such)
    table = pa.table({"id": ["a"], "tokens": pa.array([list(range(20000))], pa.large_list(pa.uint16()))})
    path = tmp_path / "z.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(
            sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    z = TokenShards([path], vocab_size=20000)
    assert z.read(19990, 10).tolist() == list(range(19990, 20000))
    assert z.resident_bytes >= 40000


def test_bad_shards_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.arrow"
    table = pa.table({"tokens": pa.array([[1.5, 2.0]], pa.large_list(pa.float32()))})
    with pa.OSFile(str(bad), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(TokenDataError, match="uint16"):
        TokenShards([bad])
    (tmp_path / "junk.arrow").write_bytes(b"not arrow")
    with pytest.raises(TokenDataError, match="not a readable Arrow"):
        TokenShards([tmp_path / "junk.arrow"])
    with pytest.raises(TokenDataError, match="no token shards"):
        open_token_split(tmp_path, "train")
    with pytest.raises(ValueError, match="end-of-text"):
        write_token_set(tmp_path / "w", {"train": [[[1, 2, 3]]]}, vocab_size=10, eot_id=9)


def test_epoch_covers_every_window_once_in_a_seeded_order(tokens_dir):
    shards = open_token_split(tokens_dir, "train")
    stream = stream_of(counting_documents(5000))
    loader = WindowLoader(shards, block_size=64, batch_size=4, seed=3)
    n = loader.n_windows
    assert n == (5000 - 1) // 64
    seen = []
    for _ in range(loader.rounds_per_epoch):
        x, y = loader.next_batch()
        assert x.shape == (4, 64) and x.dtype == torch.int64
        seen += [window_id(x[i], y[i], stream, 64) for i in range(4)]
    assert len(seen) == len(set(seen)) == loader.rounds_per_epoch * 4 and set(seen) <= set(range(n))
    assert loader.epoch == 1 and loader.position == 0
    assert seen != sorted(seen)  # shuffled
    again = WindowLoader(shards, 64, 4, seed=3)
    assert [window_id(*(t[0] for t in again.next_batch()), stream, 64)] == seen[:1]  # same seed, same order
    other = WindowLoader(shards, 64, 4, seed=4)
    assert not np.array_equal(other.window_order(0), loader.window_order(0))
    assert not np.array_equal(loader.window_order(0), loader.window_order(1))  # new order each epoch


def collect(loaders, rounds, stream, block):
    got = []
    for _ in range(rounds):
        for ld in loaders:
            x, y = ld.next_batch()
            got.append([window_id(x[i], y[i], stream, block) for i in range(x.shape[0])])
    return got


@pytest.mark.parametrize("prefetch", [0, 3])
def test_two_ranks_and_resume_never_repeat_or_skip_a_window(tokens_dir, prefetch):
    shards = open_token_split(tokens_dir, "train")
    stream = stream_of(counting_documents(5000))
    block, batch = 32, 3

    def make(rank, world=2):
        return WindowLoader(shards, block, batch, rank=rank, world_size=world, seed=11, prefetch=prefetch)

    ranks = [make(0), make(1)]
    rounds = ranks[0].rounds_per_epoch
    first = collect(ranks, 5, stream, block)
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict() and state["position"] == 5 * 2 * batch
    for ld in ranks:
        ld.close()
    resumed = [make(0), make(1)]
    for ld in resumed:
        ld.load_state_dict(json.loads(json.dumps(state)))
    rest = collect(resumed, rounds - 5, stream, block)
    windows = [w for b in first + rest for w in b]
    assert len(windows) == len(set(windows)) == rounds * 2 * batch  # no repeat, no gap within the epoch
    # identical to one uninterrupted pair of ranks
    straight = collect([make(0), make(1)], rounds, stream, block)
    assert first + rest == straight
    # and the two ranks together see exactly what one process sees with a doubled batch
    single = WindowLoader(shards, block, 2 * batch, rank=0, world_size=1, seed=11)
    merged = collect([single], rounds, stream, block)
    assert [a + b for a, b in zip(straight[0::2], straight[1::2])] == merged
    for ld in resumed:
        ld.close()


def test_state_mismatch_and_too_little_data_are_errors(tokens_dir):
    shards = open_token_split(tokens_dir, "train")
    loader = WindowLoader(shards, 64, 4, seed=1)
    state = loader.state_dict()
    with pytest.raises(TokenDataError, match="seed"):
        WindowLoader(shards, 64, 4, seed=2).load_state_dict(state)
    with pytest.raises(TokenDataError, match="block_size"):
        WindowLoader(shards, 32, 4, seed=1).load_state_dict(state)
    with pytest.raises(TokenDataError, match="fewer than one round"):
        WindowLoader(shards, 1024, 8, world_size=2)


def test_unshuffled_loader_is_sequential_and_repeatable(tokens_dir):
    shards = open_token_split(tokens_dir, "val")
    stream = stream_of(counting_documents(700))
    loader = WindowLoader(shards, 50, 2, shuffle=False)
    first = collect([loader], 3, stream, 50)
    assert first == [[0, 1], [2, 3], [4, 5]]
    loader.load_state_dict({"epoch": 0, "position": 0})
    assert collect([loader], 3, stream, 50) == first
