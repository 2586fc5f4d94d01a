"""Shared test fixtures: where the real shared data lives (one setting, WEBREFINERY_DATA, overridable)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipeline.paths import REPO, require_shared, shared_data_dir  # noqa: F401  (re-exported for tests)

SHARED_DATA = shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module: tiny models run many times faster on one thread than
    on two small, shared cores where OpenMP threads spin against other processes (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Trickle(io.RawIOBase):
    """A binary stream that returns at most ``n`` bytes per read (like a slow socket)."""

    def __init__(self, data: bytes, n: int):
        self.data, self.pos, self.n = data, 0, n

    def readable(self):
        return True

    def read(self, size=-1):
        out = self.data[self.pos:self.pos + self.n]
        self.pos += len(out)
        return out


@pytest.fixture
def trickle():
    """``trickle(data, n)``: a stream over ``data`` returning at most ``n`` bytes per read."""
    return _Trickle


def train_bpe(texts, vocab_size: int):
    """A byte-level BPE (``<|endoftext|>`` is id 0) trained on ``texts`` with Hugging Face ``tokenizers``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


@pytest.fixture(scope="session")
def make_bpe():
    """``make_bpe(texts, vocab_size)``: a byte-level BPE trained on ``texts`` (see ``train_bpe``)."""
    return train_bpe


@pytest.fixture(scope="session")
def shakespeare_bpe(tmp_path_factory) -> Path:
    """``tokenizer.json`` of a 512-token byte-level BPE trained once per test run (~0.1 s) on the first 200,000
    characters of tinyshakespeare, in 2,000-character pieces: the tokenizer of the model wing's unit tests."""
    text = require_shared("text", "tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    path = tmp_path_factory.mktemp("shakespeare-bpe") / "tokenizer.json"
    train_bpe([text[i:i + 2000] for i in range(0, len(text), 2000)], 512).save(str(path))
    return path


def _tiny_pretrained(out: Path, objective: str = "causal", steps: int = 150) -> Path:
    """A tiny model pretrained briefly on SST-2 training sentences (lower-cased) and WNUT-17 training
    text (cased social media, in the file's ~1,000 blank-line-separated chunks) with its own byte-level BPE (1,024 tokens): the base checkpoint
    of the fine-tuning and MLM tests. Returns the run directory."""
    import torch

    from model.corridor.token_shards import chunk_documents, write_token_set
    from model.train import TrainConfig, train

    lines = [l.split("\t")[0] for l in require_shared("finetune", "sst2", "train.tsv").read_text().splitlines()[1:]]
    held_out = lines[60000:61000]  # validation text, never trained on
    wnut = require_shared("finetune", "wnut17", "wnut17train.conll").read_text(encoding="utf-8").split("\n\n")
    cased = [" ".join(l.split("\t")[0] for l in block.splitlines() if l.strip()) for block in wnut]
    lines = [l for pair in zip(lines[:20000], cased + [""] * 20000) for l in pair if l][:24000]
    tok = train_bpe(lines, 1024)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    docs = [e.ids + [eot] for e in tok.encode_batch(lines)]
    val = [e.ids + [eot] for e in tok.encode_batch(held_out)]
    facts = dict(vocab_size=tok.get_vocab_size(), eot_id=eot)
    write_token_set(out / "tokens", {"train": chunk_documents(docs[:22000], 11000), "val": [val]},
                    tokenizer_json=(out / "tokenizer.json").read_text(), **facts)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = dict(tokens=str(out / "tokens"), out=str(out / "run"), preset="tiny", block_size=64, batch_size=16,
                   max_steps=steps, lr=3e-3, warmup=20, eval_every=0, ckpt_every=0, log_every=10, device="cpu",
                   dtype="float32", progress=False, seed=1)
        if objective != "causal":
            cfg["objective"] = objective
        train(TrainConfig(**cfg))
    finally:
        torch.set_num_threads(before)
    return out / "run"


@pytest.fixture(scope="session")
def tiny_causal_run(tmp_path_factory) -> Path:
    """Run directory of a tiny causal model pretrained on SST-2 sentences (see _tiny_pretrained)."""
    return _tiny_pretrained(tmp_path_factory.mktemp("tiny_causal"), "causal")


@pytest.fixture(scope="session")
def tiny_mlm_run(tmp_path_factory) -> Path:
    """Run directory of the same tiny model pretrained with --objective mlm (bidirectional, masked tokens)."""
    return _tiny_pretrained(tmp_path_factory.mktemp("tiny_mlm"), "mlm", steps=200)
