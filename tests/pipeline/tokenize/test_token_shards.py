"""Token shards (pipeline/tokenize/encode.py, shards.py, stage.py): layout, round trip, determinism, dtype, errors."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from tests import memfs  # noqa: F401  (registers memfs://)
from apache_beam.testing.util import assert_that, equal_to

from pipeline.paths import require_shared
from pipeline.document import stable_hash64
from pipeline.stages.base import STAGES, ParamError
from pipeline.tokenize import EOT_TOKEN, UsageError
from pipeline.tokenize.cli import main as cli_main
from pipeline.tokenize.documents import write_document_shards
from pipeline.tokenize.encode import TokenizeParams, iter_pairs, run_tokenize_pipeline
from pipeline.tokenize.runner import make_pipeline
from pipeline.tokenize.shards import (UINT16_MAX_VOCAB, is_validation, read_token_shard, sha256_file,
                                      sort_rows, token_dtype_name)
from pipeline.tokenize.train import TrainTokenizerParams, new_byte_level_bpe, train_bpe_from_texts

VAL_FRACTION = 0.1
NUM_SHARDS = 3


@pytest.fixture(scope="module")
def docs():
    """Real multilingual CC documents (697: en, es, ru, zh, ko, ar, he, emoji ...), plus a repeated id with
    other text (ids repeat in real WARCs) and an empty document."""
    with gzip.open(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    # The first 2,000 characters of each document keep the test fast and every script still in.
    out = [{"id": r["id"], "text": r["text"][:2000], "url": r["metadata"].get("url"), "source": "cc",
            "record_offset": i} for i, r in enumerate(rows)]
    out.append({"id": out[0]["id"], "text": out[1]["text"], "source": "cc", "record_offset": len(rows)})
    out.append({"id": "empty-doc", "text": "", "source": "cc", "record_offset": len(rows) + 1})
    return out


@pytest.fixture(scope="module")
def doc_folder(docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refined") / "documents"
    write_document_shards(docs, str(folder), num_files=2, batch_rows=80)
    return folder


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    """A small byte-level BPE trained directly on botchan (fast)."""
    text = require_shared("text", "botchan.txt").read_text(encoding="utf-8")
    tok = train_bpe_from_texts(iter(text.split("\n\n")), None, TrainTokenizerParams(vocab_size=1024))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _tokenize(doc_folder, tokenizer_path, out, *extra):
    args = ["tokenize", "--input", str(doc_folder), "--tokenizer", str(tokenizer_path), "--output", str(out),
            "--val-fraction", str(VAL_FRACTION), "--num-shards", str(NUM_SHARDS), "--no-progress", *extra]
    assert cli_main(args) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def tokens_out(doc_folder, tokenizer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    return out, _tokenize(doc_folder, tokenizer_path, out)


def _all_files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_manifest_and_round_trip(tokens_out, docs, tokenizer_path):
    from tokenizers import Tokenizer

    out, manifest = tokens_out
    tok = Tokenizer.from_file(str(tokenizer_path))
    assert manifest["vocab_size"] == 1024 and manifest["dtype"] == "uint16"
    assert manifest["eot_id"] == tok.token_to_id(EOT_TOKEN) == 0
    assert manifest["tokenizer_sha256"] == sha256_file(str(tokenizer_path)) == sha256_file(str(out / "tokenizer.json"))
    assert [f["name"] for f in manifest["splits"]["train"]["files"]] == [
        f"part-{i:05d}-of-{NUM_SHARDS:05d}.arrow" for i in range(NUM_SHARDS)]
    assert [f["name"] for f in manifest["splits"]["val"]["files"]] == ["part-00000-of-00001.arrow"]

    expected = {}
    for d in docs:
        expected.setdefault(d["id"], []).append(d["text"])
    seen = {}
    for split, info in manifest["splits"].items():
        n_docs = n_tokens = 0
        for entry in info["files"]:
            path = out / entry["path"]
            assert path == out / split / entry["name"] and sha256_file(str(path)) == entry["sha256"]
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            assert reader.num_record_batches == 1
            assert reader.schema.field("id").type == pa.string()
            assert reader.schema.field("tokens").type == pa.large_list(pa.uint16())
            ids, values, offsets = read_token_shard(str(path))
            assert values.dtype == np.uint16 and len(ids) == entry["rows"] and len(values) == entry["tokens"]
            # Uncompressed: the token values sit in the file verbatim (what the trainer memory-maps).
            assert values.tobytes() in path.read_bytes()
            rows = list(zip(ids, (values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(ids)))))
            assert rows == sorted(rows), "rows must be sorted by id, then tokens"
            index = int(entry["name"][5:10])
            for doc_id, toks in rows:
                assert stable_hash64(doc_id) % (NUM_SHARDS if split == "train" else 1) == index
                assert is_validation(doc_id, VAL_FRACTION) == (split == "val")
                assert toks[-1] == manifest["eot_id"] and manifest["eot_id"] not in toks[:-1]
                seen.setdefault(doc_id, []).append(tok.decode(toks[:-1]))
            n_docs += entry["rows"]
            n_tokens += entry["tokens"]
        assert (n_docs, n_tokens) == (info["documents"], info["tokens"])
    # Every document is there exactly once and decodes to its text, byte for byte (multilingual, emoji, empty).
    assert {k: sorted(v) for k, v in seen.items()} == {k: sorted(v) for k, v in expected.items()}
    assert manifest["splits"]["val"]["documents"] > 0 and manifest["splits"]["train"]["documents"] > 0
    assert sum(s["documents"] for s in manifest["splits"].values()) == len(docs)


def test_rerun_is_byte_identical_with_more_workers_and_removes_stale_shards(tokens_out, doc_folder, tokenizer_path,
                                                                           tmp_path):
    out, _ = tokens_out
    again = tmp_path / "again"
    _tokenize(doc_folder, tokenizer_path, again, "--workers", "2", "--batch-size", "7")
    assert _all_files(again) == _all_files(out)
    # Re-running into the same folder with fewer shards leaves no stale part file behind.
    manifest = _tokenize(doc_folder, tokenizer_path, again, "--num-shards", "2")
    assert sorted(p.name for p in (again / "train").iterdir()) == ["part-00000-of-00002.arrow",
                                                                    "part-00001-of-00002.arrow"]
    assert sum(s["documents"] for s in manifest["splits"].values()) == sum(
        s["documents"] for s in json.loads((out / "manifest.json").read_text())["splits"].values())


def test_rows_sharing_an_id_are_ordered_by_token_ids_not_bytes():
    def row(doc_id, ids):
        return doc_id, np.array(ids, dtype=np.uint16).tobytes()

    # Little-endian bytes would put 256 (00 01) before 1 (01 00); the numeric order is what we promise.
    rows = [row("b", [256]), row("a", [5]), row("b", [1, 9]), row("b", [1])]
    assert sort_rows(rows, "uint16") == [row("a", [5]), row("b", [1]), row("b", [1, 9]), row("b", [256])]


def test_dtype_threshold():
    assert token_dtype_name(UINT16_MAX_VOCAB) == "uint16" == token_dtype_name(50_257)
    assert token_dtype_name(UINT16_MAX_VOCAB + 1) == "uint32" == token_dtype_name(100_000)


def _big_vocab_tokenizer(path, n_fillers):
    """A byte-level BPE with more than 65,535 entries, built in milliseconds: <|endoftext|> = 0, unused
    filler tokens, then the 256 byte symbols and a few merges at ids above 65,535 (so real output needs uint32)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    base = new_byte_level_bpe()
    vocab = {EOT_TOKEN: 0}
    vocab.update({f"<|unused_{i}|>": 1 + i for i in range(n_fillers)})
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer, tok.decoder, tok.post_processor = base.pre_tokenizer, base.decoder, base.post_processor
    tok.add_special_tokens([EOT_TOKEN])
    tok.save(str(path))
    return len(vocab)


def test_uint32_shards_when_vocab_exceeds_65535(docs, tmp_path):
    from tokenizers import Tokenizer

    size = _big_vocab_tokenizer(tmp_path / "big.json", 65_600)
    assert size > 65_535
    folder = tmp_path / "docs"
    sample = [d for d in docs[:40]] + [{"id": "the", "text": " the the"}]
    write_document_shards(sample, str(folder))
    manifest = run_tokenize_pipeline(str(folder), TokenizeParams(tokenizer=str(tmp_path / "big.json"),
                                                                 output=str(tmp_path / "out"), num_shards=2))
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] == size and manifest["eot_id"] == 0
    tok = Tokenizer.from_file(str(tmp_path / "big.json"))
    decoded = {}
    for entry in manifest["splits"]["train"]["files"] + manifest["splits"]["val"]["files"]:
        path = tmp_path / "out" / entry["path"]
        assert pa.ipc.open_file(pa.memory_map(str(path))).schema.field("tokens").type == pa.large_list(pa.uint32())
        ids, values, offsets = read_token_shard(str(path))
        assert values.dtype == np.uint32
        assert entry["rows"] == 0 or values.max() > 65_535
        for i, doc_id in enumerate(ids):
            decoded[doc_id] = tok.decode(values[offsets[i]:offsets[i + 1] - 1].tolist())
    assert decoded == {d["id"]: d["text"] for d in sample}
    assert tok.encode(" the").ids == [size - 1]  # the merges work at ids above the uint16 range


def test_stage_writes_the_same_shards_and_keeps_every_document(tokens_out, doc_folder, tokenizer_path, tmp_path):
    import pipeline.tokenize.stage  # noqa: F401  (registers the stage)

    out, _ = tokens_out
    stage_cls = STAGES["tokenize"]
    assert stage_cls.kind == "collection"
    with pytest.raises(ParamError, match="tokenizer"):
        stage_cls().beam_transform()
    params = stage_cls.Params(tokenizer=str(tokenizer_path), output=str(tmp_path / "stage"),
                              val_fraction=VAL_FRACTION, num_shards=NUM_SHARDS)
    params.validate()
    docs = [{"id": i, "text": t, "url": "u"} for i, t in iter_pairs(sorted(str(p) for p in doc_folder.glob("*.arrow")))]
    with make_pipeline() as pipe:
        kept, rejected = pipe | beam.Create(docs) | stage_cls(params).beam_transform()
        assert_that(kept | "Ids" >> beam.Map(lambda d: (d["id"], d["text"])),
                    equal_to([(d["id"], d["text"]) for d in docs]), label="KeptAll")
        assert_that(rejected, equal_to([]), label="NoneRejected")
    assert _all_files(tmp_path / "stage") == _all_files(out)


def test_clear_errors(doc_folder, tokenizer_path, tmp_path, capsys):
    def params(**kw):
        base = dict(tokenizer=str(tokenizer_path), output=str(tmp_path / "o"))
        base.update(kw)
        return TokenizeParams(**base)

    with pytest.raises(UsageError, match="tokenizer file .* does not exist"):
        run_tokenize_pipeline(str(doc_folder), params(tokenizer=str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not a tokenizers tokenizer.json"):
        run_tokenize_pipeline(str(doc_folder), params(tokenizer=str(tmp_path / "bad.json")))
    no_eot = new_byte_level_bpe()
    no_eot.save(str(tmp_path / "no_eot.json"))
    with pytest.raises(UsageError, match="has no '<\\|endoftext\\|>' token"):
        run_tokenize_pipeline(str(doc_folder), params(tokenizer=str(tmp_path / "no_eot.json")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .arrow document shards"):
        run_tokenize_pipeline(str(tmp_path / "empty"), params())
    with pytest.raises(UsageError, match="matches no .arrow"):
        run_tokenize_pipeline(str(tmp_path / "empty" / "*.arrow"), params())
    with pa.ipc.new_file(str(tmp_path / "notext.arrow"), pa.schema([("id", pa.string())])) as w:
        w.write_batch(pa.RecordBatch.from_pylist([{"id": "x"}], schema=pa.schema([("id", pa.string())])))
    with pytest.raises(UsageError, match="has no 'text' column"):
        run_tokenize_pipeline(str(tmp_path / "notext.arrow"), params())
    with pytest.raises(UsageError, match="val_fraction"):
        run_tokenize_pipeline(str(doc_folder), params(val_fraction=1.5))
    with pytest.raises(UsageError, match="memfs://bucket/none.json does not exist"):
        run_tokenize_pipeline(str(doc_folder), params(tokenizer="memfs://bucket/none.json"))
    with pytest.raises(UsageError, match="multi_threading"):
        run_tokenize_pipeline(str(doc_folder), params(), beam_args=["--direct_running_mode=multi_threading"])
    assert not (tmp_path / "o").exists()
    capsys.readouterr()
    assert cli_main(["tokenize", "--input", str(doc_folder), "--tokenizer", str(tmp_path / "missing.json"),
                     "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tokenizer file") and "\n" not in err and "Traceback" not in err


def test_trainer_reader_opens_what_tokenize_writes_and_its_checksums_hold(tokens_out):
    """The corridor: model/data.py reads the pipeline's token set with every check on (no Beam needed there)."""
    from model.data import open_token_split, verify_token_checksums

    out, manifest = tokens_out
    for split in ("train", "val"):
        shards = open_token_split(out, split)
        assert shards.total_tokens == manifest["splits"][split]["tokens"]
        assert shards.num_documents == manifest["splits"][split]["documents"]
        assert shards.vocab_size == manifest["vocab_size"] and shards.eot_id == manifest["eot_id"]
    assert verify_token_checksums(out) == NUM_SHARDS + 1
