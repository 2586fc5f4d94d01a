"""``refinery train-tokenizer``: a GPT-2-style byte-level BPE trained on a seeded sample of refined documents.

1. Sample (a Beam pipeline, so it scales like the rest): every document gets
   ``h = stable_hash64(f"{seed}\\x1f{doc_key}")``. One pass sums the (per-document capped) text bytes; from
   that total, documents with ``h`` below a threshold (``oversample`` x the byte budget's share) are
   training candidates and documents with ``h`` in the top ``heldout`` share form a held-out set. Each
   worker spills its candidates to a temp folder (one file per bundle, written then renamed). The folder
   (``--temp-dir``) must be reachable by the workers and the driver: local with the in-process runner,
   a shared mount with a distributed one.
2. Cut (driver): candidates sorted by ``(h, doc_key)``; the training sample is the longest prefix that
   fits ``sample_bytes`` (a bottom-k by hash: a uniform sample of documents, the same for the same input
   and seed whatever the worker count or bundle order). Only a small index is held in memory; texts are
   streamed back from the spill files.
3. Train ``tokenizers`` BPE from that iterator: ByteLevel pre-tokenizer (GPT-2 regex, no prefix space),
   ByteLevel decoder and post-processor, the 256 byte symbols as initial alphabet. Special tokens come
   first: ``<|endoftext|>`` is id 0, extra special tokens follow in the order given.
4. Write ``tokenizer.json`` (atomically) and ``tokenizer_report.json`` (sizes, seed, fertility on the
   held-out documents: tokens per byte and per whitespace word).

Determinism: with the same input files and seed, ``tokenizer.json`` is byte-identical. Checked here
with tokenizers 0.23: BPE training with a byte-level alphabet gives identical output across runs,
processes and thread counts (the alphabet is sorted before ids are assigned, pair counts are sums,
and ties between merges break on pair ids). The known non-determinism (tokenizers issue #1794) concerns
``continuing_subword_prefix``/``end_of_word_suffix``, which we do not use. So no thread setting is forced;
``RAYON_NUM_THREADS`` may be set to bound CPU use.
Memory: the trainer keeps a count per distinct pre-token, so it grows with the sample, not with the
corpus; ``max_doc_bytes`` and ``sample_bytes`` bound it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import struct
import tempfile
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.document import stable_hash64
from pipeline.tokenize import EOT_TOKEN, UsageError
from pipeline.tokenize.documents import ShardBatchReader, batch_doc_keys, list_batch_refs, resolve_document_files
from pipeline.tokenize.runner import DoFnProgress, make_pipeline, runs_in_this_process
from pipeline.tokenize.shards import write_bytes_atomically

BYTE_ALPHABET_SIZE = 256
TOKENIZER_FILE = "tokenizer.json"
REPORT_FILE = "tokenizer_report.json"
_SPILL_HEADER = struct.Struct("<BQII")  # kind (0 train, 1 held-out), hash, key bytes, text bytes
_KIND_TRAIN, _KIND_HELDOUT = 0, 1
_HASH_SPACE = 2**64


@dataclasses.dataclass
class TrainTokenizerParams:
    """Parameters of ``refinery train-tokenizer`` (defaults go to pipelines.yaml)."""

    vocab_size: int = 32_768               # final vocabulary incl. 256 byte symbols and special tokens
    sample_bytes: int = 1_000_000_000      # training text budget (UTF-8 bytes, after the per-doc cap)
    max_doc_bytes: int = 100_000           # each document's text is cut to this many bytes
    seed: int = 0                          # selects the sample: same input + seed -> same tokenizer
    special_tokens: Tuple[str, ...] = ()   # extra special tokens, after <|endoftext|> (id 0)
    min_frequency: int = 2                 # a pair must occur this often to be merged
    heldout_bytes: int = 2_000_000         # text kept out of training to measure fertility (0: none)
    max_heldout_fraction: float = 0.05     # ... but never more than this share of the corpus
    oversample: float = 1.25               # candidate share = oversample x budget share (then cut exactly)

    def all_special_tokens(self) -> List[str]:
        """``<|endoftext|>`` first, then the extra tokens in order, without repeats."""
        out: List[str] = [EOT_TOKEN]
        for tok in self.special_tokens:
            if tok not in out:
                out.append(tok)
        return out

    def problems(self) -> List[str]:
        out = []
        specials = self.all_special_tokens()
        if any(not t for t in specials):
            out.append("special tokens must be non-empty strings")
        need = BYTE_ALPHABET_SIZE + len(specials)
        if self.vocab_size < need:
            out.append(f"vocab size {self.vocab_size} is too small: the 256 byte symbols plus {len(specials)} "
                       f"special token(s) need at least {need}")
        if self.vocab_size > 2**32:
            out.append(f"vocab size {self.vocab_size} is larger than 2**32")
        if self.sample_bytes < 1:
            out.append(f"sample bytes {self.sample_bytes} must be >= 1")
        if self.max_doc_bytes < 1:
            out.append(f"max doc bytes {self.max_doc_bytes} must be >= 1")
        if self.min_frequency < 0:
            out.append(f"min frequency {self.min_frequency} must be >= 0")
        if self.heldout_bytes < 0:
            out.append(f"held-out bytes {self.heldout_bytes} must be >= 0")
        if not 0.0 <= self.max_heldout_fraction < 1.0:
            out.append(f"max held-out fraction {self.max_heldout_fraction} must be in [0, 1)")
        if self.oversample < 1.0:
            out.append(f"oversample {self.oversample} must be >= 1")
        return out


# ----------------------------------------------------------------------------------------------- sampling

def sample_limits(total_docs: int, total_bytes: int, params: TrainTokenizerParams) -> Tuple[int, int]:
    """(train_below, heldout_from) in hash space: hashes < train_below are training candidates, hashes >=
    heldout_from are held out. The held-out share is reserved first, so the two never overlap."""
    if total_docs <= 0 or total_bytes <= 0:
        return 0, _HASH_SPACE
    held_share = min(params.max_heldout_fraction, params.heldout_bytes / total_bytes)
    train_share = min(1.0 - held_share, params.oversample * params.sample_bytes / total_bytes)
    heldout_from = _HASH_SPACE - int(held_share * _HASH_SPACE) if held_share > 0 else _HASH_SPACE
    train_below = min(int(train_share * _HASH_SPACE), heldout_from)
    return train_below, heldout_from


def batch_size_totals(batch: pa.RecordBatch, max_doc_bytes: int) -> Tuple[int, int]:
    """(documents, text bytes after ``cap_utf8``) of one record batch (vectorized; exact)."""
    text = batch.column(batch.schema.get_field_index("text"))
    lengths = pc.binary_length(text).cast(pa.int64())
    over = pc.greater(lengths, pa.scalar(max_doc_bytes, pa.int64()))
    total = int(pc.sum(pc.if_else(over, 0, lengths)).as_py() or 0)
    long_rows = pc.indices_nonzero(pc.fill_null(over, False))
    if len(long_rows):  # the few over-long documents: cap at a character boundary, like the spill does
        for data in text.take(long_rows).cast(pa.binary()).to_pylist():
            total += len(cap_utf8(data, max_doc_bytes))
    return batch.num_rows, total


def add_pairs(pairs) -> Tuple[int, int]:
    """Sum of (documents, bytes) pairs (a CombineGlobally function: associative, handles empty input)."""
    docs = size = 0
    for d, b in pairs:
        docs += d
        size += b
    return docs, size


def cap_utf8(data: bytes, max_bytes: int) -> bytes:
    """``data`` cut to at most ``max_bytes`` without splitting a UTF-8 character."""
    if len(data) <= max_bytes:
        return data
    end = max_bytes
    while end > 0 and (data[end] & 0xC0) == 0x80:  # data[end] continues a character: step back
        end -= 1
    return data[:end]


class SizeBatches(beam.DoFn):
    """(path, batch) -> (documents, capped bytes) of that record batch."""

    def __init__(self, max_doc_bytes: int):
        self.max_doc_bytes = max_doc_bytes

    def setup(self):
        self._reader = ShardBatchReader()

    def process(self, ref):
        yield batch_size_totals(self._reader.read(ref), self.max_doc_bytes)


class SpillSampledDocuments(beam.DoFn):
    """(path, batch) + corpus totals -> appends the batch's sampled documents to this bundle's spill file."""

    def __init__(self, params: TrainTokenizerParams, spill_dir: str, progress_total: Optional[int] = None):
        self.params, self.spill_dir = params, spill_dir
        self._progress = DoFnProgress(progress_total, "sampling")

    def setup(self):
        self._reader = ShardBatchReader()

    def start_bundle(self):
        self._fh = None
        self._tmp_path = None

    def _file(self):
        if self._fh is None:
            self._tmp_path = os.path.join(self.spill_dir, f"spill-{uuid.uuid4().hex}.bin.tmp")
            self._fh = open(self._tmp_path, "wb")
        return self._fh

    def process(self, ref, totals):
        train_below, heldout_from = sample_limits(totals[0], totals[1], self.params)
        batch = self._reader.read(ref)
        seed = self.params.seed
        picked: List[Tuple[int, int, bytes, int]] = []
        for row, key_text in enumerate(batch_doc_keys(batch)):
            h = stable_hash64(f"{seed}\x1f{key_text}")
            key = key_text.encode("utf-8", "surrogatepass")
            if h < train_below:
                picked.append((row, _KIND_TRAIN, key, h))
            elif h >= heldout_from:
                picked.append((row, _KIND_HELDOUT, key, h))
        if picked:
            rows = pa.array([r for r, _, _, _ in picked], type=pa.int64())
            texts = batch.column(batch.schema.get_field_index("text")).take(rows).cast(pa.binary()).to_pylist()
            fh = self._file()
            for (_, kind, key, h), text in zip(picked, texts):
                data = cap_utf8(text or b"", self.params.max_doc_bytes)
                fh.write(_SPILL_HEADER.pack(kind, h, len(key), len(data)))
                fh.write(key)
                fh.write(data)
        self._progress.update()

    def finish_bundle(self):
        if self._fh is not None:
            self._fh.close()
            os.replace(self._tmp_path, self._tmp_path[: -len(".tmp")])
            self._fh = None

    def teardown(self):
        self._progress.close()


@dataclasses.dataclass
class SpilledDoc:
    hash: int
    key: bytes
    file: int
    offset: int
    length: int


@dataclasses.dataclass
class DocumentSample:
    """The documents chosen for training and for the held-out measurement (pointers into spill files)."""

    files: List[str]
    train: List[SpilledDoc]
    heldout: List[SpilledDoc]
    total_docs: int
    total_bytes: int

    @property
    def train_bytes(self) -> int:
        return sum(d.length for d in self.train)

    @property
    def heldout_bytes(self) -> int:
        return sum(d.length for d in self.heldout)


def index_spill_files(spill_dir: str) -> Tuple[List[str], Dict[int, List[SpilledDoc]]]:
    """Sorted complete spill files and their records by kind (headers only; texts are skipped)."""
    files = sorted(glob.glob(os.path.join(spill_dir, "spill-*.bin")))
    by_kind: Dict[int, List[SpilledDoc]] = {_KIND_TRAIN: [], _KIND_HELDOUT: []}
    for fi, path in enumerate(files):
        with open(path, "rb") as fh:
            while True:
                head = fh.read(_SPILL_HEADER.size)
                if not head:
                    break
                kind, h, key_len, text_len = _SPILL_HEADER.unpack(head)
                key = fh.read(key_len)
                offset = fh.tell()
                fh.seek(text_len, os.SEEK_CUR)
                by_kind[kind].append(SpilledDoc(h, key, fi, offset, text_len))
    return files, by_kind


def bottom_k_within_budget(docs: List[SpilledDoc], budget: int) -> List[SpilledDoc]:
    """Documents in (hash, key) order while their bytes fit ``budget``; duplicate keys (a retried bundle)
    count once. The first document that does not fit ends the sample."""
    chosen, used, seen = [], 0, set()
    for doc in sorted(docs, key=lambda d: (d.hash, d.key)):
        if doc.key in seen:
            continue
        seen.add(doc.key)
        if used + doc.length > budget:
            break
        chosen.append(doc)
        used += doc.length
    return chosen


def iter_spilled_texts(files: Sequence[str], docs: Sequence[SpilledDoc]) -> Iterator[str]:
    """Texts of ``docs`` read back from the spill files, file by file in offset order (sequential reads)."""
    ordered = sorted(docs, key=lambda d: (d.file, d.offset))
    handle, current = None, -1
    try:
        for doc in ordered:
            if doc.file != current:
                if handle is not None:
                    handle.close()
                handle, current = open(files[doc.file], "rb"), doc.file
            handle.seek(doc.offset)
            yield handle.read(doc.length).decode("utf-8", "replace")
    finally:
        if handle is not None:
            handle.close()


def sample_documents(files: Sequence[str], params: TrainTokenizerParams, spill_dir: str,
                     beam_args: Sequence[str] | None = None, progress: bool = False) -> DocumentSample:
    """Run the Beam sampling pipeline over ``files`` into ``spill_dir`` and cut the sample to budget."""
    n_batches = len(list_batch_refs(files))  # checks schemas before any work starts
    show = progress and runs_in_this_process(beam_args)
    totals_dir = tempfile.mkdtemp(prefix="totals-", dir=spill_dir)
    with make_pipeline(beam_args) as pipe:
        refs = (
            pipe
            | "Files" >> beam.Create(list(files))
            | "BatchRefs" >> beam.FlatMap(lambda path: list_batch_refs([path]))
            | "Reshuffle" >> beam.Reshuffle()
        )
        totals = (
            refs
            | "Size" >> beam.ParDo(SizeBatches(params.max_doc_bytes))
            | "Total" >> beam.CombineGlobally(add_pairs)
        )
        _ = totals | "KeepTotals" >> beam.Map(_write_json, os.path.join(totals_dir, "totals.json"))
        _ = refs | "Spill" >> beam.ParDo(SpillSampledDocuments(params, spill_dir, n_batches if show else None),
                                         totals=beam.pvalue.AsSingleton(totals))
    with open(os.path.join(totals_dir, "totals.json"), encoding="utf-8") as fh:
        total_docs, total_bytes = json.load(fh)
    spill_files, by_kind = index_spill_files(spill_dir)
    return DocumentSample(
        files=spill_files,
        train=bottom_k_within_budget(by_kind[_KIND_TRAIN], params.sample_bytes),
        heldout=bottom_k_within_budget(by_kind[_KIND_HELDOUT], params.heldout_bytes),
        total_docs=total_docs,
        total_bytes=total_bytes,
    )


def _write_json(value, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(list(value), fh)


# ----------------------------------------------------------------------------------------------- training

def new_byte_level_bpe():
    """An untrained GPT-2-style byte-level BPE tokenizer (pre-tokenizer, decoder, post-processor set)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _batched(texts: Iterator[str], size: int = 1000) -> Iterator[List[str]]:
    batch: List[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_bpe_from_texts(texts: Iterator[str], n_texts: Optional[int], params: TrainTokenizerParams,
                         show_progress: bool = False):
    """Train the byte-level BPE on an iterator of texts; returns the trained ``tokenizers.Tokenizer``."""
    from tokenizers import pre_tokenizers, trainers

    tokenizer = new_byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        special_tokens=params.all_special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(_batched(texts), trainer=trainer, length=n_texts)
    return tokenizer


def measure_fertility(tokenizer, texts: Sequence[str], batch_size: int = 256) -> Dict[str, object]:
    """Tokens per UTF-8 byte and per whitespace-separated word of ``texts``."""
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    n_tokens = 0
    for start in range(0, len(texts), batch_size):
        for enc in tokenizer.encode_batch(list(texts[start:start + batch_size]), add_special_tokens=False):
            n_tokens += len(enc.ids)
    return {
        "documents": len(texts),
        "bytes": n_bytes,
        "words": n_words,
        "tokens": n_tokens,
        "tokens_per_byte": round(n_tokens / n_bytes, 6) if n_bytes else None,
        "tokens_per_word": round(n_tokens / n_words, 6) if n_words else None,
        "bytes_per_token": round(n_bytes / n_tokens, 6) if n_tokens else None,
    }


def train_tokenizer(input_spec: str, output_dir: str, params: TrainTokenizerParams,
                    beam_args: Sequence[str] | None = None, temp_dir: Optional[str] = None,
                    progress: bool = False) -> Dict[str, object]:
    """Sample, train, write ``output_dir/tokenizer.json`` and ``tokenizer_report.json``; return the report."""
    problems = params.problems()
    if problems:
        raise UsageError(problems[0])
    files = resolve_document_files(input_spec)
    os.makedirs(output_dir, exist_ok=True)
    started = time.time()
    spill_dir = tempfile.mkdtemp(prefix="tokenizer-sample-", dir=temp_dir)
    try:
        sample = sample_documents(files, params, spill_dir, beam_args, progress)
        if sample.total_docs == 0:
            raise UsageError(f"input {input_spec} holds no documents")
        if sample.total_bytes == 0 or not sample.train:
            raise UsageError(f"input {input_spec} holds {sample.total_docs} document(s) but no text to train on")
        sampled = time.time()
        tokenizer = train_bpe_from_texts(iter_spilled_texts(sample.files, sample.train), len(sample.train),
                                         params, show_progress=progress)
        trained = time.time()
        heldout_texts = list(iter_spilled_texts(sample.files, sample.heldout))
        fertility = measure_fertility(tokenizer, heldout_texts)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    tokenizer_path = os.path.join(output_dir, TOKENIZER_FILE)
    write_bytes_atomically(tokenizer_path, tokenizer.to_str(pretty=True).encode("utf-8"))
    report = {
        "tokenizer": TOKENIZER_FILE,
        "model": "byte-level BPE (tokenizers), GPT-2 pre-tokenizer regex, no prefix space",
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": params.vocab_size,
        "special_tokens": {tok: tokenizer.token_to_id(tok) for tok in params.all_special_tokens()},
        "eot_token": EOT_TOKEN,
        "eot_id": tokenizer.token_to_id(EOT_TOKEN),
        "seed": params.seed,
        "min_frequency": params.min_frequency,
        "sample_bytes": params.sample_bytes,
        "max_doc_bytes": params.max_doc_bytes,
        "input_files": [os.path.abspath(f) for f in files],
        "corpus_documents": sample.total_docs,
        "corpus_bytes_capped": sample.total_bytes,
        "trained_documents": len(sample.train),
        "trained_bytes": sample.train_bytes,
        "heldout": fertility,
        "tokenizers_version": _tokenizers_version(),
        "seconds": {"sample": round(sampled - started, 3), "train": round(trained - sampled, 3),
                    "total": round(time.time() - started, 3)},
    }
    write_bytes_atomically(os.path.join(output_dir, REPORT_FILE),
                           (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report


def _tokenizers_version() -> str:
    import tokenizers

    return tokenizers.__version__
