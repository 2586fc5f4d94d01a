"""The token-shard format has one definition (model/corridor/token_shards.py): the Beam pipeline's writer and the
small local writer produce the same bytes, and the trainer's reader (model/data.py) refuses what it cannot
trust (unknown format or version, a file of the wrong size or content) with a user error naming the file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from model.corridor.token_shards import (FORMAT_VERSION, chunk_documents, shard_metadata, token_dtype_name,
                                   write_token_set)
from model.data import TokenDataError, open_token_split, verify_token_checksums
from model.errors import UserError

TOKENIZER = '{"model": {"type": "bytes"}}'


def _docs(n=60, seed=0, vocab=257):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, vocab - 1, size=int(rng.integers(5, 40)))) + [vocab - 1] for _ in range(n)]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pipeline_writer_and_local_writer_write_identical_token_sets(tmp_path):
    from pipeline.tokenize.shards import finalize_token_output, write_token_shard

    train, val = chunk_documents(_docs(60), 25), [_docs(7, seed=1)]
    local = tmp_path / "local"
    write_token_set(local, {"train": train, "val": val}, vocab_size=257, eot_id=256, tokenizer_json=TOKENIZER)

    tok = tmp_path / "tokenizer.json"
    tok.write_text(TOKENIZER)
    facts = {"vocab_size": 257, "eot_id": 256, "eot_token": "<|endoftext|>", "dtype": token_dtype_name(257),
             "tokenizer_sha256": hashlib.sha256(TOKENIZER.encode()).hexdigest(), "tokenizer_json": TOKENIZER}
    beam_side = tmp_path / "pipeline"
    written, n = [], {"train": 0, "val": 0}
    for split, shards in (("train", train), ("val", val)):
        for index, docs in enumerate(shards):
            rows = []
            for doc in docs:
                rows.append((f"{split}-{n[split]:09d}", np.asarray(doc, dtype="<u2").tobytes()))
                n[split] += 1
            written.append(write_token_shard(str(beam_side), split, index, len(shards), rows[::-1], "uint16",
                                             shard_metadata(facts)))
    finalize_token_output(str(beam_side), str(tok), facts, {"train": len(train), "val": 1}, written, 0.0)
    assert _files(beam_side) == _files(local)  # every shard, the tokenizer copy and the manifest, byte for byte
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["version"] == FORMAT_VERSION and manifest["splits"]["train"]["documents"] == 60
    assert all(e["bytes"] == (local / e["path"]).stat().st_size for e in manifest["splits"]["train"]["files"])


@pytest.fixture()
def token_set(tmp_path):
    docs = _docs(80)
    write_token_set(tmp_path / "tokens", {"train": chunk_documents(docs, 20), "val": [_docs(10, seed=2)]},
                    vocab_size=257, eot_id=256, tokenizer_json=TOKENIZER)
    return tmp_path / "tokens", docs


def test_reader_reads_the_written_stream_and_verifies_checksums(token_set):
    folder, docs = token_set
    shards = open_token_split(folder, "train")
    stream = np.concatenate([np.asarray(d) for d in docs])
    assert shards.total_tokens == len(stream) and np.array_equal(shards.read(0, len(stream)), stream)
    assert shards.num_documents == 80 and shards.vocab_size == 257 and shards.eot_id == 256
    assert verify_token_checksums(folder) == 5


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1, "1"])
def test_unknown_manifest_version_is_refused(token_set, version):
    folder, _ = token_set
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenDataError, match=f"version {version!r}") as err:
        open_token_split(folder, "train")
    assert isinstance(err.value, UserError) and "manifest.json" in str(err.value)


def test_manifest_of_the_old_model_side_writer_is_refused(token_set):
    folder, _ = token_set
    (folder / "manifest.json").write_text(json.dumps(
        {"vocab_size": 257, "eot_id": 256, "dtype": "uint16", "splits": {"train": {"files": ["train/00000.arrow"]}}}))
    with pytest.raises(TokenDataError, match="not a webrefinery-token-shards manifest"):
        open_token_split(folder, "train")


def test_truncated_swapped_or_altered_shards_are_errors_naming_the_file(token_set):
    folder, docs = token_set
    first, second = folder / "train" / "part-00000-of-00004.arrow", folder / "train" / "part-00001-of-00004.arrow"
    original = first.read_bytes()
    first.write_bytes(original[:-100])  # truncated: caught when the split is opened (size)
    with pytest.raises(TokenDataError, match="part-00000-of-00004.arrow has .* bytes"):
        open_token_split(folder, "train")
    # another shard of the set moved over it: caught at open (size, or its row/token counts)
    first.write_bytes(second.read_bytes())
    with pytest.raises(TokenDataError, match="part-00000-of-00004.arrow"):
        open_token_split(folder, "train")
    # one token id changed in place (same size, same counts): only the sha256 pass sees it
    data = bytearray(original)
    pos = data.find(np.asarray(docs[0], "<u2").tobytes())  # the first document's tokens in the values buffer
    assert pos > 0
    data[pos] ^= 0x01
    first.write_bytes(bytes(data))
    open_token_split(folder, "train")
    with pytest.raises(TokenDataError, match="part-00000-of-00004.arrow fails its sha256"):
        verify_token_checksums(folder)


def test_trainer_refuses_a_token_set_of_unknown_version(token_set, tmp_path):
    from model.train import TrainConfig, train

    folder, _ = token_set
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="version 99"):
        train(TrainConfig(tokens=str(folder), out=str(tmp_path / "run"), preset="tiny", block_size=16, max_steps=1,
                          device="cpu", dtype="float32", progress=False))


def test_writer_refuses_documents_without_end_of_text_or_out_of_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="end-of-text"):
        write_token_set(tmp_path / "a", {"train": [[[1, 2, 3]]]}, vocab_size=10, eot_id=9)
    with pytest.raises(ValueError, match="outside"):
        write_token_set(tmp_path / "b", {"train": [[[1, 12, 9]]]}, vocab_size=10, eot_id=9)
