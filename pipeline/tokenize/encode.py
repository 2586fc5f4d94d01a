"""``refinery tokenize``: a Beam pipeline that encodes refined documents into token shards.

Graph: document shard files -> one element per record batch (reshuffled for parallelism) -> read
``id``/``text`` -> ``EncodeToShardRows`` (tokenizer loaded once per worker in ``setup``; texts encoded
with ``Tokenizer.encode_batch_fast``/``encode_batch`` in fixed-size batches; ``<|endoftext|>`` appended
to each document; train/val chosen by a stable hash of the id; shard = ``stable_hash64(id) % N``) ->
GroupByKey on (split, shard) -> ``WriteTokenShard`` (sort by id, write atomically) -> one final step
that writes empty shards, the manifest and the tokenizer copy (``shards.finalize_token_output``).

The same ``EncodeAndWriteTokenShards`` transform serves the ``tokenize`` pipeline stage (stage.py), fed
with lists of ``(id, text)`` pairs. The tokenizer's JSON travels inside the graph (workers never open its
file), and the output folder may be local or on a Beam filesystem (``gs://...``, e.g. from the ``tokenize``
stage on Dataflow); the trainer memory-maps local shards, so copy a remote folder down before training.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline.tokenize import EOT_TOKEN, UsageError
from pipeline.tokenize.documents import ShardBatchReader, list_batch_refs, resolve_document_files
from pipeline.tokenize.runner import DoFnProgress, make_pipeline, runs_in_this_process
from pipeline.io import fs
from pipeline.tokenize.shards import (MANIFEST_NAME, finalize_token_output, is_validation, load_manifest,
                                      shard_index, shard_metadata, tokenizer_facts, write_token_shard)

Pair = Tuple[str, str]  # (document id, text)


@dataclasses.dataclass
class TokenizeParams:
    """Parameters of ``refinery tokenize`` and of the ``tokenize`` stage (defaults go to pipelines.yaml)."""

    tokenizer: str = ""            # path of tokenizer.json (from `refinery train-tokenizer`)
    output: str = ""               # output folder (local or gs://...): manifest.json, train/, val/
    val_fraction: float = 0.005    # share of documents (by stable hash of id) in the validation split
    num_shards: int = 8            # train shards: document -> stable_hash64(id) % num_shards
    val_num_shards: int = 1        # validation shards
    batch_size: int = 256          # documents per Tokenizer.encode_batch call
    eot_token: str = EOT_TOKEN     # appended to every document; must exist in the tokenizer

    def problems(self) -> List[str]:
        """Human-readable problems with these values (empty when valid)."""
        out = []
        if not self.tokenizer:
            out.append("'tokenizer' (path of tokenizer.json) is required")
        if not self.output:
            out.append("'output' (token shard folder) is required")
        if not 0.0 <= self.val_fraction < 1.0:
            out.append(f"'val_fraction' = {self.val_fraction} must be in [0, 1)")
        if not 1 <= self.num_shards <= 99_999:
            out.append(f"'num_shards' = {self.num_shards} must be in [1, 99999]")
        if not 1 <= self.val_num_shards <= 99_999:
            out.append(f"'val_num_shards' = {self.val_num_shards} must be in [1, 99999]")
        if self.batch_size < 1:
            out.append(f"'batch_size' = {self.batch_size} must be >= 1")
        return out

    def shard_counts(self) -> Dict[str, int]:
        return {"train": self.num_shards, "val": self.val_num_shards}


class ReadIdTextPairs(beam.DoFn):
    """(path, batch_index) -> one list of (id, text) pairs for that record batch."""

    def __init__(self, progress_total: Optional[int] = None):
        self._progress = DoFnProgress(progress_total, "tokenize")

    def setup(self):
        self._reader = ShardBatchReader()

    def process(self, ref):
        cols = self._reader.read_columns(ref)
        self._progress.update()
        yield list(zip(cols["id"], cols["text"]))

    def teardown(self):
        self._progress.close()


class EncodeToShardRows(beam.DoFn):
    """Lists of (id, text) -> ((split, shard), [(id, token bytes), ...]) groups, one per destination."""

    def __init__(self, tokenizer_json: str, eot_id: int, dtype: str, params: TokenizeParams):
        # the tokenizer travels inside the graph: workers on Dataflow/Flink/Spark need no access to its file
        self.tokenizer_json, self.eot_id, self.dtype, self.params = tokenizer_json, eot_id, dtype, params
        self.documents = Metrics.counter("tokenize", "documents")
        self.tokens = Metrics.counter("tokenize", "tokens")

    def setup(self):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self._encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        self._np_dtype = np.dtype(self.dtype)

    def process(self, pairs: Sequence[Pair]):
        groups: Dict[Tuple[str, int], List[Tuple[str, bytes]]] = {}
        counts = self.params.shard_counts()
        bs = self.params.batch_size
        n_tokens = 0
        for start in range(0, len(pairs), bs):
            chunk = pairs[start:start + bs]
            encodings = self._encode([text or "" for _, text in chunk], add_special_tokens=False)
            for (doc_id, _), enc in zip(chunk, encodings):
                ids = enc.ids
                ids.append(self.eot_id)
                n_tokens += len(ids)
                split = "val" if is_validation(doc_id, self.params.val_fraction) else "train"
                key = (split, shard_index(doc_id, counts[split]))
                groups.setdefault(key, []).append((doc_id, np.array(ids, dtype=self._np_dtype).tobytes()))
        self.documents.inc(len(pairs))
        self.tokens.inc(n_tokens)
        for key in sorted(groups):
            yield key, groups[key]


class WriteTokenShard(beam.DoFn):
    """((split, shard), [[rows...], ...]) -> writes the shard file; yields its manifest entry."""

    def __init__(self, output_dir: str, counts: Mapping[str, int], dtype: str, metadata: Mapping[str, str]):
        self.output_dir, self.counts, self.dtype, self.metadata = output_dir, dict(counts), dtype, dict(metadata)

    def process(self, element):
        (split, index), groups = element
        rows = [row for group in groups for row in group]
        yield write_token_shard(self.output_dir, split, index, self.counts[split], rows, self.dtype, self.metadata)


class EncodeAndWriteTokenShards(beam.PTransform):
    """PCollection of lists of (id, text) -> token shards + manifest in ``params.output``.

    Returns the PCollection holding the final manifest (one element) once everything is written."""

    def __init__(self, params: TokenizeParams, facts: Optional[Mapping[str, object]] = None):
        super().__init__()
        problems = params.problems()
        if problems:
            raise UsageError(problems[0])
        self.params = params
        self.facts = dict(facts) if facts is not None else tokenizer_facts(params.tokenizer, params.eot_token)

    def expand(self, pair_lists):
        p, facts = self.params, self.facts
        counts = p.shard_counts()
        output = p.output if fs.is_remote(p.output) else os.path.abspath(p.output)
        tokenizer_path = p.tokenizer if fs.is_remote(p.tokenizer) else os.path.abspath(p.tokenizer)
        written = (
            pair_lists
            | "Encode" >> beam.ParDo(EncodeToShardRows(str(facts["tokenizer_json"]), int(facts["eot_id"]),
                                                       str(facts["dtype"]), p))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteTokenShard(output, counts, str(facts["dtype"]), shard_metadata(facts)))
        )
        return (
            written
            | "CollectEntries" >> beam.combiners.ToList()
            | "Finalize" >> beam.Map(lambda entries: finalize_token_output(
                output, tokenizer_path, facts, counts, entries, p.val_fraction))
        )


def run_tokenize_pipeline(input_spec: str, params: TokenizeParams, beam_args: Sequence[str] | None = None,
                          progress: bool = False) -> Dict[str, object]:
    """Tokenize the document shards named by ``input_spec`` into ``params.output``; return the manifest."""
    problems = params.problems()
    if problems:
        raise UsageError(problems[0])
    facts = tokenizer_facts(params.tokenizer, params.eot_token)
    files = resolve_document_files(input_spec)
    n_batches = len(list_batch_refs(files))  # also checks every file's schema up front
    show = progress and runs_in_this_process(beam_args)
    fs.delete([fs.join(params.output, MANIFEST_NAME)])  # never leave an old manifest beside shards being rewritten
    started = time.time()
    with make_pipeline(beam_args) as pipe:
        _ = (
            pipe
            | "Files" >> beam.Create(files)
            | "BatchRefs" >> beam.FlatMap(lambda path: list_batch_refs([path]))
            | "Reshuffle" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadIdTextPairs(n_batches if show else None))
            | "EncodeAndWrite" >> EncodeAndWriteTokenShards(params, facts)
        )
    manifest = load_manifest(params.output)
    manifest["seconds"] = round(time.time() - started, 3)  # returned only, never written (files stay identical)
    return manifest


def count_documents(manifest: Mapping[str, object]) -> Tuple[int, int]:
    """(documents, tokens) over all splits of a manifest."""
    splits = manifest["splits"]
    return (sum(s["documents"] for s in splits.values()), sum(s["tokens"] for s in splits.values()))


def iter_pairs(files: Iterable[str]):
    """(id, text) of every document of the given shards, in file/batch/row order (tests and benchmarks)."""
    reader = ShardBatchReader()
    for ref in list_batch_refs(list(files)):
        cols = reader.read_columns(ref)
        yield from zip(cols["id"], cols["text"])
