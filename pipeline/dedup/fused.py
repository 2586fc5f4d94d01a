"""A run of consecutive dedup stages (exact, URL, MinHash; any order) as one Beam transform whose documents
cross a single shuffle: docs -> (kept, rejected (doc, reason)).

Chained, every stage of the run shuffles every document it sees (``exact.GroupDedup``,
``minhash.transform.MinhashDedup``). Fused, ``FusedDedup`` computes, once per document, what each
stage's decision needs (its group key and priority, or its MinHash band hashes and priority), sends the
document itself once, by its node shard (``packed.node_shard(node_id(doc_key))``), to the last join,
and makes the decisions on small records only:

    docs -> Prepare -> documents (node shard, [token + document] batches)  ------------------------.
                    -> inputs of stage i (node shard, [token, what stage i needs] batches)          |
                    -> errors (node shard, [token, stage index, reason]); a dead letter of the      |
                       first stage is rejected at once                                              |
    per stage i, in the pipeline's order:                                                           |
        {inputs i, outcomes of stages < i} -> CoGroupByKey(node shard) -> Active (drops what an     |
        earlier stage rejected) -> the stage's own decision shuffles -> outcomes i (node shard)     |
    {documents, errors, outcomes of every stage} -> CoGroupByKey(node shard) -> Apply  <------------'

A *token* is a document's node id (16 bytes) and the CRC-32 of its packed record (4 bytes): two records
with one ``doc_key`` but different contents stay apart; byte-identical records are interchangeable, so
outcomes are kept per token as a multiset. ``Apply`` walks the stages in order exactly as the chain
would: a document rejected by one stage (a duplicate, or a dead letter of that stage) takes no part in
the later ones, and the columns each stage writes (``<stage>_group_size``, ``minhash_cluster``,
``minhash_cluster_size``) are set as the chain sets them. The group decisions are those of
``exact._KeepOneDoFn`` (smallest ``priority_of`` per key; documents without a key kept and not
grouped), the MinHash decisions those of ``minhash.transform`` (its candidate edges, connected
components, ``_ToRootDoFn`` and ``_DecideDoFn``, run on the documents still active at that stage).

What differs from the chain is only the cost: each stage's inputs are computed from the document as it
came in (no stage key reads a column an earlier dedup stage writes), so MinHash signatures are also
computed for documents an earlier stage will reject, and the documents are encoded and decoded once.

``counters`` (optional, a callable ``stage name -> object with count(doc, what, reason="")``, e.g.
``pipeline.beam._Counters``) makes ``Apply`` (and ``Prepare``, for first-stage dead letters) count
every stage's ``in``, ``kept`` and ``rejected|<reason>``, as the graph builder counts around a single
collection stage.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup import packed
from pipeline.dedup.exact import TextKey, UrlKey
from pipeline.dedup.keys import METRICS_NAMESPACE, SHARDS, node_id, priority_of
from pipeline.dedup.stages import FUSABLE, fusable
from pipeline.document import doc_key, text_of
from pipeline.stages.base import error_reason, reason

REJECTED_TAG = "rejected"
DOCS_TAG = "docs"
ERRORS_TAG = "errors"
NODE = 16  # bytes of a node id
TOKEN = NODE + 4  # node id + CRC-32 of the packed record
_BANDS = np.dtype("<u8")


def _input_tag(i: int) -> str:
    return f"in{i}"


def _outcome_tag(i: int) -> str:
    return f"out{i}"


class _GroupSpec:
    """What exact and URL dedup need per document: the group key (None: not grouped) and priority."""

    kind = "group"

    def __init__(self, stage):
        params = stage.params
        params.validate()
        self.name = stage.name
        self.keep = params.keep
        self.column = f"{stage.name}_group_size"
        self.key_fn = TextKey(params.normalization) if stage.name == "exact_dedup" else UrlKey(params.normalize_url)

    def setup(self) -> None:
        pass

    def prepare(self, doc) -> Optional[List]:
        """[key, priority] of a grouped document, None for one without a group key (as ``exact._KeyDoFn``)."""
        key = self.key_fn(doc)
        if key is None:
            return None
        return [key.hex() if isinstance(key, bytes) else key, priority_of(doc, self.keep)]


class _MinhashSpec:
    """What MinHash dedup needs per document (as ``banding.SignatureDoFn``): priority, band hashes (None:
    no shingle) and, with ``verify``, the shingle-hash set."""

    kind = "minhash"

    def __init__(self, stage):
        params = stage.params
        params.validate()
        self.name, self.params = stage.name, params

    def setup(self) -> None:
        from pipeline.dedup.minhash.hashing import MinHasher

        p, lsh = self.params, self.params.lsh()
        self.bands, self.rows = lsh.bands, lsh.rows
        self.hasher = MinHasher(lsh.num_perm, p.seed, p.ngram, p.scheme, p.shingle_hash)

    def prepare(self, doc) -> List:
        from pipeline.dedup.minhash.hashing import band_hashes

        node_id(doc_key(doc))
        hashes = self.hasher.shingle_hashes(text_of(doc))
        bands = band_hashes(self.hasher.signature_of_hashes(hashes), self.bands, self.rows) if hashes.size else None
        priority = priority_of(doc, self.params.keep)
        return [priority,
                None if bands is None else bands.astype(_BANDS).tobytes(),
                np.unique(hashes).tobytes() if self.params.verify and bands is not None else None]


def _specs(stages) -> List[Any]:
    out = []
    for stage in stages:
        if not fusable(stage):
            raise ValueError(f"stage {stage.name!r} cannot be fused; fusable dedup stages: {', '.join(FUSABLE)}")
        out.append(_MinhashSpec(stage) if stage.name == "minhash_dedup" else _GroupSpec(stage))
    return out


def _node_shards(stages) -> int:
    """Shards of the node-sharded records: the MinHash stage's (its labels come out on them), else the default."""
    return next((s.params.shards for s in stages if s.name == "minhash_dedup"), SHARDS)


class _PrepareDoFn(beam.DoFn):
    """Document -> its token and packed record (``docs``), each stage's inputs (``in<i>``), dead letters of
    later stages (``errors``); a dead letter of the first stage (its inputs, or a record that cannot be
    packed) is rejected here. All outputs are record batches by node shard, emitted when full and at the
    end of the bundle."""

    def __init__(self, specs, shards: int, counters: Optional[Callable] = None):
        self.specs, self.shards, self.counter_factory = specs, shards, counters

    def setup(self):
        for spec in self.specs:
            spec.setup()
        self.first = self.counter_factory(self.specs[0].name) if self.counter_factory else None

    def start_bundle(self):
        self.out = {tag: packed.RecordBatches() for tag in [DOCS_TAG, ERRORS_TAG] + [_input_tag(i) for i in range(len(self.specs))]}

    def _reject_first(self, doc, exc):
        why = error_reason(self.specs[0].name, exc)
        if self.first is not None:
            self.first.count(doc, "in")
            self.first.count(doc, "rejected", why)
        return beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, why))

    def process(self, doc):
        inputs, error = [], None
        for i, spec in enumerate(self.specs):
            try:
                inputs.append(spec.prepare(doc))
            except Exception as exc:  # a dead letter of stage i (if the document gets that far)
                if i == 0:
                    yield self._reject_first(doc, exc)
                    return
                error = [i, error_reason(spec.name, exc)]
                break
        try:
            blob = packed.pack_record(doc)
        except Exception as exc:  # what cannot go through a shuffle: the first stage's dead letter, as chained
            yield self._reject_first(doc, exc)
            return
        node = node_id(doc_key(doc))
        token = node + zlib.crc32(blob).to_bytes(4, "big")
        shard = packed.node_shard(node, self.shards)
        records = [(DOCS_TAG, token + blob)]
        if error is not None:
            records.append((ERRORS_TAG, packed.pack_record([token] + error)))
        for i, value in enumerate(inputs):
            if value is not None:
                records.append((_input_tag(i), packed.pack_record([token] + value)))
        for tag, record in records:
            full = self.out[tag].add(shard, record)
            if full:
                yield beam.pvalue.TaggedOutput(tag, full)

    def finish_bundle(self):
        for tag, batches in self.out.items():
            for batch in batches.flush():
                yield beam.pvalue.TaggedOutput(tag, GlobalWindows.windowed_value(batch))


def _group_outcomes(records) -> Dict[bytes, List]:
    """[token, size, keep] records -> {token: [(size, keep), ...]} (a multiset per token)."""
    out: Dict[bytes, List] = {}
    for token, size, keep in records:
        out.setdefault(token, []).append((size, keep))
    return out


def _minhash_outcomes(records) -> Dict[str, List]:
    """``_DecideDoFn`` records [member key, representative key, size, keep] -> {member key: [rep, size, keep]}."""
    return {r[0]: r[1:] for r in records}


class _Inactive:
    """What earlier stages rejected, for one node shard: tokens (counted: byte-identical records are
    interchangeable) and MinHash nodes (a node's documents share their decision)."""

    def __init__(self, kinds: Sequence[str], grouped):
        self.tokens: Dict[bytes, int] = {}
        self.nodes = set()
        for i, kind in enumerate(kinds):
            for record in packed.records_of(grouped[_outcome_tag(i)]):
                if kind == "group":
                    if not record[2]:
                        self.tokens[record[0]] = self.tokens.get(record[0], 0) + 1
                elif not record[3]:
                    self.nodes.add(node_id(record[0]))

    def take(self, token: bytes) -> bool:
        """True when the document of ``token`` was rejected earlier (each rejection taken once)."""
        if self.nodes and token[:NODE] in self.nodes:
            return True
        n = self.tokens.get(token)
        if n:
            self.tokens[token] = n - 1
            return True
        return False


class _GroupActiveDoFn(beam.DoFn):
    """(node shard, {in<i>, out<j < i>}) -> [key, priority, token] batches by key shard, for the documents
    no earlier stage rejected."""

    def __init__(self, index: int, kinds: Sequence[str]):
        self.index, self.kinds = index, list(kinds)

    def start_bundle(self):
        self.out = packed.RecordBatches()

    def process(self, element):
        grouped = element[1]
        inactive = _Inactive(self.kinds, grouped)
        for token, key, priority in packed.records_of(grouped[_input_tag(self.index)]):
            if inactive.take(token):
                continue
            full = self.out.add(packed.key_shard(key, SHARDS), packed.pack_record([key, priority, token]))
            if full:
                yield full

    def finish_bundle(self):
        for batch in self.out.flush():
            yield GlobalWindows.windowed_value(batch)


class _GroupDecideDoFn(beam.DoFn):
    """(key shard, [key, priority, token] batches) -> [token, group size, keep] batches by node shard: per
    key the smallest priority is kept (the first one on a tie), as ``exact._KeepOneDoFn``."""

    def __init__(self, shards: int):
        self.shards = shards

    def start_bundle(self):
        self.out = packed.RecordBatches()

    def process(self, element):
        groups: Dict[str, List] = {}
        for key, priority, token in packed.records_of(element[1]):
            groups.setdefault(key, []).append((priority, token))
        for members in groups.values():
            best_index, best_priority = 0, members[0][0]
            for i, (priority, _) in enumerate(members):
                if priority < best_priority:
                    best_index, best_priority = i, priority
            size = len(members)
            for i, (_, token) in enumerate(members):
                full = self.out.add(packed.node_shard(token[:NODE], self.shards), packed.pack_record([token, size, i == best_index]))
                if full:
                    yield full

    def finish_bundle(self):
        for batch in self.out.flush():
            yield GlobalWindows.windowed_value(batch)


class _MinhashActiveDoFn(beam.DoFn):
    """(node shard, {in<i>, out<j < i>}) -> for the documents no earlier stage rejected, as
    ``banding.SignatureDoFn``: bucket entries (main, by band-hash shard), priorities (``info``, by node
    shard) and, with ``verify``, shingle sets (``sets``)."""

    def __init__(self, index: int, kinds: Sequence[str], stage: str, params):
        self.index, self.kinds, self.stage, self.params = index, list(kinds), stage, params

    def setup(self):
        from pipeline.dedup.minhash.banding import BATCH_RECORDS

        self.bands, self.shards = self.params.lsh().bands, self.params.shards
        self.no_shingles = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|no_shingles")
        self.batch_docs = max(1, BATCH_RECORDS // self.bands)

    def start_bundle(self):
        self.nodes, self.hashes = [], []
        self.infos = packed.RecordBatches()

    def _flush(self):
        from pipeline.dedup.minhash import graph

        if not self.nodes:
            return
        cols = graph.bucket_records(self.nodes, np.stack(self.hashes))
        self.nodes, self.hashes = [], []
        yield from packed.split_by_shard(packed.shard_of(cols[0], self.shards), cols)

    def process(self, element):
        from pipeline.dedup.minhash.banding import INFO_TAG, SETS_TAG

        shard, grouped = element
        inactive = _Inactive(self.kinds, grouped)
        for token, priority, bands, shingles in packed.records_of(grouped[_input_tag(self.index)]):
            if inactive.take(token):
                continue
            full = self.infos.add(shard, packed.pack_record(priority))
            if full:
                yield beam.pvalue.TaggedOutput(INFO_TAG, full)
            if bands is None:
                self.no_shingles.inc()
                continue
            node = token[:NODE]
            self.nodes.append(node)
            self.hashes.append(np.frombuffer(bands, dtype=_BANDS))
            if len(self.nodes) >= self.batch_docs:
                yield from self._flush()
            if shingles is not None:
                yield beam.pvalue.TaggedOutput(SETS_TAG, (node, shingles))

    def finish_bundle(self):
        from pipeline.dedup.minhash.banding import INFO_TAG

        for batch in self._flush():
            yield GlobalWindows.windowed_value(batch)
        for batch in self.infos.flush():
            yield beam.pvalue.TaggedOutput(INFO_TAG, GlobalWindows.windowed_value(batch))


class _MinhashDecisions(beam.PTransform):
    """(bucket entries, priorities, shingle sets) of the active documents -> ``_DecideDoFn`` decisions by node shard
    (the MinHash stage's graph from the candidate edges on, as ``minhash.transform.MinhashDedup``)."""

    def __init__(self, stage: str, params):
        super().__init__()
        self.stage, self.params = stage, params

    def expand(self, pcolls):
        from pipeline.dedup.minhash.banding import CandidateEdges, VerifyEdges
        from pipeline.dedup.minhash.components import PackedConnectedComponents, pack_edges, unpack_pairs
        from pipeline.dedup.minhash.transform import _VERIFIED_BATCH, _DecideDoFn, _ToRootDoFn

        p = self.params
        bands, info, sets = pcolls
        edges = bands | "Buckets" >> CandidateEdges(self.stage)
        if p.verify:
            edges = (
                (edges | "UnpackCandidates" >> beam.FlatMap(unpack_pairs), sets)
                | "Verify" >> VerifyEdges(self.stage, p.verify_threshold)
                | "BatchVerified" >> beam.BatchElements(min_batch_size=_VERIFIED_BATCH, max_batch_size=_VERIFIED_BATCH)
                | "PackVerified" >> beam.Map(pack_edges)
            )
        labels = edges | "Components" >> PackedConnectedComponents(p.max_rounds, p.on_unconverged, self.stage, p.shards)
        return (
            {"labels": labels, "info": info}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "ToRoot" >> beam.ParDo(_ToRootDoFn(p.shards))
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> beam.ParDo(_DecideDoFn(p.shards))
        )


class _ApplyDoFn(beam.DoFn):
    """(node shard, {docs, errors, out<i>}) -> kept documents and rejected (document, reason): every
    document walks the stages in order, takes each stage's outcome (columns, keep or reject) and stops at
    the first rejection."""

    def __init__(self, specs, counters: Optional[Callable] = None):
        self.names = [s.name for s in specs]
        self.kinds = [s.kind for s in specs]
        self.columns = [getattr(s, "column", None) for s in specs]
        self.counter_factory = counters

    def setup(self):
        from pipeline.dedup.minhash.transform import CLUSTER_COLUMN, SIZE_COLUMN

        self.cluster_column, self.size_column = CLUSTER_COLUMN, SIZE_COLUMN
        self.duplicate = [reason(name, "duplicate") for name in self.names]
        self.counters = [self.counter_factory(name) for name in self.names] if self.counter_factory else None

    def _count(self, i, doc, what, why=""):
        if self.counters is not None:
            self.counters[i].count(doc, what, why)

    def process(self, element):
        grouped = element[1]
        errors = {r[0]: (r[1], r[2]) for r in packed.records_of(grouped[ERRORS_TAG])}
        outcomes = [(_group_outcomes if kind == "group" else _minhash_outcomes)(packed.records_of(grouped[_outcome_tag(i)]))
                    for i, kind in enumerate(self.kinds)]
        for record in packed.raw_records_of(grouped[DOCS_TAG]):
            token = bytes(record[:TOKEN])
            doc = packed.unpack_record(record[TOKEN:])
            error = errors.get(token)
            why = None
            for i, kind in enumerate(self.kinds):
                self._count(i, doc, "in")
                if error is not None and error[0] == i:
                    why = error[1]
                elif kind == "group":
                    members = outcomes[i].get(token)
                    if members:
                        size, keep = members.pop()
                        doc[self.columns[i]] = size
                        if not keep:
                            why = self.duplicate[i]
                else:
                    key = doc_key(doc)
                    decision = outcomes[i].get(key)
                    if decision is None:
                        doc[self.cluster_column], doc[self.size_column] = key, 1
                    else:
                        doc[self.cluster_column], doc[self.size_column] = decision[0], decision[1]
                        if not decision[2]:
                            why = self.duplicate[i]
                if why is not None:
                    self._count(i, doc, "rejected", why)
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, why))
                    break
                self._count(i, doc, "kept")
            else:
                yield doc


class FusedDedup(beam.PTransform):
    """Docs -> (kept, rejected (doc, reason)): consecutive exact/URL/MinHash dedup stages, in their order,
    with the documents shuffled once (see the module docstring)."""

    def __init__(self, stages: Sequence[Any], counters: Optional[Callable] = None):
        super().__init__()
        self.stages = list(stages)
        self.specs = _specs(self.stages)
        self.counters = counters

    def expand(self, docs):
        specs, shards = self.specs, _node_shards(self.stages)
        tags = [DOCS_TAG, ERRORS_TAG] + [_input_tag(i) for i in range(len(specs))]
        prepared = docs | "Prepare" >> beam.ParDo(_PrepareDoFn(specs, shards, self.counters)).with_outputs(REJECTED_TAG, *tags)
        outcomes = []
        for i, spec in enumerate(specs):
            kinds = [s.kind for s in specs[:i]]
            joined = ({_input_tag(i): prepared[_input_tag(i)], **{_outcome_tag(j): o for j, o in enumerate(outcomes)}}
                      | f"{spec.name}:Join" >> beam.CoGroupByKey())
            if spec.kind == "group":
                outcome = (joined
                           | f"{spec.name}:Active" >> beam.ParDo(_GroupActiveDoFn(i, kinds))
                           | f"{spec.name}:Group" >> beam.GroupByKey()
                           | f"{spec.name}:Decide" >> beam.ParDo(_GroupDecideDoFn(shards)))
            else:
                from pipeline.dedup.minhash.banding import INFO_TAG, SETS_TAG

                active = joined | f"{spec.name}:Active" >> beam.ParDo(_MinhashActiveDoFn(i, kinds, spec.name, spec.params)).with_outputs(
                    INFO_TAG, SETS_TAG, main="bands")
                outcome = (active.bands, active[INFO_TAG], active[SETS_TAG]) | spec.name >> _MinhashDecisions(spec.name, spec.params)
            outcomes.append(outcome)
        final = {DOCS_TAG: prepared[DOCS_TAG], ERRORS_TAG: prepared[ERRORS_TAG], **{_outcome_tag(i): o for i, o in enumerate(outcomes)}}
        applied = (final
                   | "JoinDocuments" >> beam.CoGroupByKey()
                   | "Apply" >> beam.ParDo(_ApplyDoFn(specs, self.counters)).with_outputs(REJECTED_TAG, main="kept"))
        rejected = (applied[REJECTED_TAG], prepared[REJECTED_TAG]) | "FlattenRejected" >> beam.Flatten()
        return applied.kept, rejected
