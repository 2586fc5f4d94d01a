"""Tokenizer training (pipeline/tokenize/train.py): sampling, determinism, round trips, errors, GPT-2 yardstick.

Trains small (2,048-token) byte-level BPEs on real shared text written as refined document shards.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import unicodedata

import pytest

from pipeline.document import doc_key, stable_hash64
from pipeline.tokenize import EOT_TOKEN, UsageError
from pipeline.tokenize.cli import main as cli_main
from pipeline.tokenize.documents import write_document_shards
from pipeline.tokenize.train import (TrainTokenizerParams, cap_utf8, iter_spilled_texts, sample_documents,
                                     sample_limits, train_tokenizer)
from pipeline.paths import REPO, require_shared

VOCAB = 2048
SAMPLE_BYTES = 2_000_000


def _chunks(text: str, lines_per_chunk: int):
    lines = text.split("\n")
    for start in range(0, len(lines), lines_per_chunk):
        yield "\n".join(lines[start:start + lines_per_chunk])


def _cc_rows():
    with gzip.open(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _training_docs():
    docs = []
    for i, row in enumerate(_cc_rows()):
        docs.append({"id": row["id"], "text": row["text"], "url": row["metadata"].get("url"),
                     "source": "cc-main-2019-30-extracted.jsonl.gz", "record_offset": i})
    for name in ("ccnet-head-en-0091.jsonl.gz", "ccnet-head-en-0174.jsonl.gz"):
        with gzip.open(require_shared("cc", name), "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                docs.append({"id": json.loads(line)["id"], "text": json.loads(line)["text"], "source": name,
                             "record_offset": i})
    for name, lines in (("botchan.txt", 40), ("tinyshakespeare.txt", 60)):
        text = require_shared("text", name).read_text(encoding="utf-8")
        for i, chunk in enumerate(_chunks(text, lines)):
            docs.append({"id": f"{name}:{i}", "text": chunk, "source": name, "record_offset": i})
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refined") / "documents"
    docs = _training_docs()
    write_document_shards(docs, str(folder), num_files=3, batch_rows=100)
    return folder, docs


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tokenizer trained through the command-line entry point."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("tok")
    rc = cli_main(["train-tokenizer", "--input", str(folder), "--output", str(out), "--vocab-size", str(VOCAB),
                   "--sample-bytes", str(SAMPLE_BYTES), "--max-doc-bytes", "50000", "--seed", "7",
                   "--special-tokens", "<|pad|>", "--no-progress"])
    assert rc == 0
    return out


def _load(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _assert_round_trip(tok, texts, what):
    texts = [t for t in texts if t]
    assert texts, f"no {what} texts"
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    decoded = tok.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
    bad = [i for i, (a, b) in enumerate(zip(texts, decoded)) if a.encode("utf-8") != b.encode("utf-8")]
    assert not bad, f"{what}: {len(bad)} of {len(texts)} texts do not round-trip, first: {texts[bad[0]][:200]!r}"


def test_writes_loadable_tokenizer_and_report(trained, corpus):
    from transformers import PreTrainedTokenizerFast

    report = json.loads((trained / "tokenizer_report.json").read_text())
    tok = _load(trained / "tokenizer.json")
    assert tok.get_vocab_size() == VOCAB == report["vocab_size"]
    assert tok.token_to_id(EOT_TOKEN) == 0 == report["eot_id"]
    assert tok.token_to_id("<|pad|>") == 1
    assert report["special_tokens"] == {EOT_TOKEN: 0, "<|pad|>": 1}
    assert report["seed"] == 7
    assert 0 < report["trained_bytes"] <= SAMPLE_BYTES
    assert report["trained_documents"] < report["corpus_documents"] == len(corpus[1])
    held = report["heldout"]
    assert held["documents"] > 0 and 0.1 < held["tokens_per_byte"] < 1.0 and held["tokens_per_word"] > 1.0
    # Special tokens are atomic; the ByteLevel pieces give GPT-2's "Ġ" convention.
    assert tok.encode(f"a{EOT_TOKEN}b").ids[1] == 0
    assert tok.encode(" the").tokens == ["Ġthe"]
    # transformers reads the same file and encodes identically.
    hf = PreTrainedTokenizerFast(tokenizer_file=str(trained / "tokenizer.json"))
    sample = corpus[1][5]["text"][:2000]
    assert hf(sample)["input_ids"] == tok.encode(sample).ids
    assert hf.decode(hf(sample)["input_ids"]) == sample


def _eval_texts():
    eval_dir = require_shared("eval")
    texts = {}
    hs = [json.loads(l) for l in (eval_dir / "hellaswag_validation.jsonl").read_text(encoding="utf-8").splitlines()]
    hs = hs[::10]  # every 10th item (all its fields): keeps the test fast on 2 shared cores
    texts["hellaswag"] = [h["ctx"] for h in hs] + [e for h in hs for e in h["endings"]]
    lam = (eval_dir / "lambada_openai_test.jsonl").read_text(encoding="utf-8").splitlines()
    texts["lambada"] = [json.loads(l)["text"] for l in lam]
    for name in ("arc_easy_validation.jsonl", "arc_challenge_validation.jsonl"):
        rows = [json.loads(l) for l in (eval_dir / name).read_text(encoding="utf-8").splitlines()]
        texts[name] = [r["question"] for r in rows] + [c for r in rows for c in r["choices"]["text"]]
    piqa = [json.loads(l) for l in (eval_dir / "piqa_valid.jsonl").read_text(encoding="utf-8").splitlines()]
    texts["piqa"] = [p[k] for p in piqa for k in ("goal", "sol1", "sol2")]
    # newline="" keeps wikitext's CRLF line endings: they must survive too.
    with open(eval_dir / "wikitext-2-raw-test.txt", encoding="utf-8", newline="") as fh:
        wiki = fh.read()
    assert "\r\n" in wiki
    texts["wikitext"] = list(_chunks(wiki, 50))  # chunks joined by "\n" give the whole file back
    for name in ("botchan.txt", "tinyshakespeare.txt"):
        texts[name] = list(_chunks(require_shared("text", name).read_text(encoding="utf-8"), 50))
    return texts


def test_round_trip_on_every_eval_text(trained):
    tok = _load(trained / "tokenizer.json")
    for what, texts in _eval_texts().items():
        _assert_round_trip(tok, texts, what)


def _script_of(text):
    counts = {}
    for ch in text:
        if ord(ch) > 0x2FF and ch.isalpha():
            script = unicodedata.name(ch, "?").split()[0]
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else "LATIN"


def test_round_trip_on_non_latin_scripts_and_emoji(trained):
    tok = _load(trained / "tokenizer.json")
    rows = _cc_rows()
    by_script = {}
    for row in rows:
        by_script.setdefault(_script_of(row["text"]), []).append(row["text"])
    non_latin = {s: t for s, t in by_script.items() if s != "LATIN"}
    assert {"CYRILLIC", "CJK", "HANGUL", "ARABIC", "HEBREW"} <= set(non_latin), sorted(non_latin)
    for script, texts in non_latin.items():
        _assert_round_trip(tok, texts, f"cc {script}")
    emoji_docs = [r["text"] for r in rows if any(0x1F300 <= ord(c) <= 0x1FAFF or 0x2600 <= ord(c) <= 0x27BF
                                                 for c in r["text"])]
    assert len(emoji_docs) >= 5
    _assert_round_trip(tok, emoji_docs, "cc emoji")
    # Characters the small vocabulary never merged fall back to bytes and still come back intact,
    # including zero-width joiner sequences, flags, combining marks and a lone control character.
    tricky = ["👩‍👩‍👧‍👦 🇯🇵 e\u0301 \x00\x7f ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "  leading and trailing  \t\n", "\r\n\r\n"]
    _assert_round_trip(tok, tricky, "tricky")
    assert len(tok.encode(tricky[0]).ids) > 10  # byte fallback really happened


def test_same_input_and_seed_give_identical_tokenizer_json_in_another_process(trained, corpus, tmp_path):
    """Same input + seed -> byte-identical file, from a fresh process limited to one thread."""
    folder, _ = corpus
    env = dict(os.environ, RAYON_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pipeline.tokenize.cli", "train-tokenizer", "--input", str(folder),
           "--output", str(tmp_path / "again"), "--vocab-size", str(VOCAB), "--sample-bytes", str(SAMPLE_BYTES),
           "--max-doc-bytes", "50000", "--seed", "7", "--special-tokens", "<|pad|>", "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (trained / "tokenizer.json").read_bytes()
    # A different seed draws a different sample, hence (almost surely) a different tokenizer.
    other = train_tokenizer(str(folder), str(tmp_path / "seed8"),
                            TrainTokenizerParams(vocab_size=VOCAB, sample_bytes=SAMPLE_BYTES, max_doc_bytes=50000,
                                                 seed=8, special_tokens=("<|pad|>",)))
    first = json.loads((trained / "tokenizer_report.json").read_text())
    assert (other["trained_documents"], other["trained_bytes"]) != (first["trained_documents"], first["trained_bytes"])
    assert (tmp_path / "seed8" / "tokenizer.json").read_bytes() != (trained / "tokenizer.json").read_bytes()


def test_sample_is_the_bottom_k_by_seeded_hash_within_budget(corpus, tmp_path):
    folder, docs = corpus
    params = TrainTokenizerParams(sample_bytes=1_000_000, max_doc_bytes=20_000, seed=3, heldout_bytes=100_000)
    sample = sample_documents(sorted(str(p) for p in folder.glob("*.arrow")), params, str(tmp_path))
    # Independent computation of the expected sample from the documents themselves.
    capped = {doc_key(d): cap_utf8(d["text"].encode("utf-8"), params.max_doc_bytes) for d in docs}
    total = sum(len(v) for v in capped.values())
    assert (sample.total_docs, sample.total_bytes) == (len(docs), total)
    hashed = sorted((stable_hash64(f"3\x1f{k}"), k) for k in capped)
    train_below, heldout_from = sample_limits(len(docs), total, params)
    expected, used = [], 0
    for h, k in hashed:
        if h >= train_below or used + len(capped[k]) > params.sample_bytes:
            break
        expected.append(k)
        used += len(capped[k])
    got = [d.key.decode("utf-8") for d in sample.train]
    assert got == expected and 0.8 * params.sample_bytes < used <= params.sample_bytes
    held = {d.key.decode("utf-8") for d in sample.heldout}
    assert held and not held & set(got)
    assert all(stable_hash64(f"3\x1f{k}") >= heldout_from for k in held)
    # Spilled texts are the capped texts, never split inside a UTF-8 character.
    texts = list(iter_spilled_texts(sample.files, sample.train))
    by_key = {d.key.decode("utf-8"): t for d, t in zip(sorted(sample.train, key=lambda d: (d.file, d.offset)), texts)}
    assert all(by_key[k].encode("utf-8") == capped[k] for k in expected)
    assert max(len(t.encode("utf-8")) for t in texts) <= params.max_doc_bytes


def test_cap_utf8_never_splits_a_character():
    text = "ab€😀".encode("utf-8")  # 2 + 3 + 4 bytes
    assert [cap_utf8(text, n) for n in (1, 2, 3, 4, 5, 6, 8, 9, 20)] == [
        b"a", b"ab", b"ab", b"ab", "ab€".encode(), "ab€".encode(), "ab€".encode(), text, text]


def test_clear_errors(corpus, tmp_path, capsys):
    folder, _ = corpus
    with pytest.raises(UsageError, match="does not exist"):
        train_tokenizer(str(tmp_path / "nope"), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=300))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .arrow document shards"):
        train_tokenizer(str(tmp_path / "empty"), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=300))
    write_document_shards([], str(tmp_path / "zero"))
    with pytest.raises(UsageError, match="no documents"):
        train_tokenizer(str(tmp_path / "zero"), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=300))
    write_document_shards([{"id": "a", "text": ""}, {"id": "b", "text": None}], str(tmp_path / "blank"))
    with pytest.raises(UsageError, match="no text"):
        train_tokenizer(str(tmp_path / "blank"), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=300))
    with pytest.raises(UsageError, match="too small.*at least 258"):
        train_tokenizer(str(folder), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=257, special_tokens=("<x>",)))
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(UsageError, match="not an Arrow IPC file"):
        train_tokenizer(str(tmp_path / "junk.arrow"), str(tmp_path / "o"), TrainTokenizerParams(vocab_size=300))
    # The command prints one line, no traceback, and exits with 2.
    capsys.readouterr()
    assert cli_main(["train-tokenizer", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: input") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o" / "tokenizer.json").exists()


def test_fertility_against_gpt2_on_wikitext(trained):
    """Our 2,048-token BPE vs GPT-2's 50,257 on WikiText-2 test: tokens per UTF-8 byte."""
    from tokenizers import ByteLevelBPETokenizer

    gpt2_dir = require_shared("tokenizers", "gpt2")
    gpt2 = ByteLevelBPETokenizer(str(gpt2_dir / "encoder.json"), str(gpt2_dir / "vocab.bpe"))
    ours = _load(trained / "tokenizer.json")
    wiki = require_shared("eval", "wikitext-2-raw-test.txt").read_text(encoding="utf-8")
    lines = [l for l in wiki.splitlines(keepends=True) if l.strip()]
    n_bytes = sum(len(l.encode("utf-8")) for l in lines)

    def tokens_per_byte(tok):
        return sum(len(e.ids) for e in tok.encode_batch(lines)) / n_bytes

    ours_tpb, gpt2_tpb = tokens_per_byte(ours), tokens_per_byte(gpt2)
    print(f"\nwikitext-2 test tokens/byte: ours (vocab {VOCAB}) {ours_tpb:.4f}  GPT-2 (50,257) {gpt2_tpb:.4f}  "
          f"ratio {ours_tpb / gpt2_tpb:.3f}")
    assert 0.20 < gpt2_tpb < 0.30  # GPT-2 packs ~4 bytes of English per token
    # A vocabulary 25x smaller must need more tokens, but it is a real BPE: well under 1 token per byte.
    assert gpt2_tpb < ours_tpb < 0.5
