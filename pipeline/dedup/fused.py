"""A run of consecutive dedup stages (exact, URL, MinHash; any order) as one Beam transform whose documents
cross a single shuffle: docs -> (kept, rejected (doc, reason)).

Chained, every stage of the run shuffles every document it sees (``exact.GroupDedup``,
``minhash.transform.MinhashDedup``). Fused, ``FusedDedup`` computes, once per document, what every
stage's decision needs (group key and priority; MinHash priority and band hashes), sends the document
itself once, by its node shard (``packed.node_shard(node_id(doc_key))``), to the last join, and lets a
small *state* record travel from decision to decision instead:

    docs -> Prepare -> documents (node shard, zstd [token + document] batches) ---------------------.
                    -> state -> the first stage that needs a shuffle                                 |
    group stage i:   states (key shard) -> GroupByKey -> Decide: the kept member's state goes on,    |
                     the others end (fate: rejected here)                                           |
    MinHash stage i: bucket entries -> the stage's own graph (candidate edges, connected components,  |
                     ``_ToRootDoFn`` on the waiting states' priorities, ``_DecideDoFn``) ->         |
                     decisions (node shard); the states wait (node shard) and join the decisions    |
                     (Continue), or, when it is the last stage, go with them to the last join       |
    {documents, each stage's fates, first-stage dead letters, [last MinHash states and decisions]}
        -> CoGroupByKey(node shard) -> Apply (kept, rejected) <-------------------------------------'

A state is ``[token, outcomes, inputs]``: what the stages so far decided (a group size or None; a MinHash
[cluster, size]) and what the remaining ones need. "Going on" means: end with a dead letter at a stage whose
inputs could not be computed, else go to the next stage's shuffle (or end kept after the last stage); a
document without a group key crosses its stage's shuffle too (by its node shard) and comes out of it not
grouped and kept, as ``exact._KeyDoFn``, so that every stage's states come from one DoFn, the stage's before
(a Flatten of several, which the in-process runner runs as a stage of its own, is never needed). So a document
rejected by one stage takes no part in the later ones, exactly as chained; decisions are those of
``exact._KeepOneDoFn`` (smallest ``priority_of`` per key, the first one on a tie) and of
``minhash.transform`` (run on the documents still active at that stage).

A *token* is a document's node id (16 bytes) and the CRC-32 of its packed record (4 bytes): two records with
one ``doc_key`` but different contents stay apart; byte-identical records are interchangeable, so fates are
kept per token as a multiset. ``Apply`` walks the stages in the pipeline's order and sets the columns each
stage writes (``<stage>_group_size``, ``minhash_cluster``, ``minhash_cluster_size``) as chained.

What differs from the chain is only the cost: each stage's inputs are computed from the document as it came
in (no stage key reads a column an earlier dedup stage writes), so MinHash signatures are also computed for
documents an earlier stage will reject, and each document is encoded and decoded once. The normalized text
(``normalize.normalized_words``) that exact dedup's full normalization hashes and MinHash shingles is computed
once per document for both (``_words``), and so are its node id and priorities (``_node``, ``_priority``).

``counters`` (optional, a callable ``stage name -> object with count(doc, what, reason="")``, e.g.
``pipeline.beam._Counters``) makes ``Apply`` (and ``Prepare``, for first-stage dead letters) count every
stage's ``in``, ``kept`` and ``rejected|<reason>``, as the graph builder counts around a single collection
stage.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup import packed
from pipeline.dedup.exact import TextKey, UrlKey, key_of_bytes
from pipeline.dedup.keys import METRICS_NAMESPACE, SHARDS, node_id, priority_of
from pipeline.dedup.minhash.components import pardo
from pipeline.dedup.minhash.transform import _ToRootDoFn
from pipeline.dedup.stages import FUSABLE, fusable
from pipeline.document import doc_key, text_of
from pipeline.stages.base import error_reason, reason

REJECTED_TAG = "rejected"
DOCS_TAG = "docs"
FATES_TAG = "fates"
DEAD_TAG = "dead"  # the first stage's dead letters: (0, (doc, reason)), to the last join as they are
CARRY_TAG = "carry"
DECISIONS_TAG = "decisions"
NODE = 16  # bytes of a node id
TOKEN = NODE + 4  # node id + CRC-32 of the packed record
_BANDS = np.dtype("<u8")
DOC_BATCH_BYTES = 1 << 18  # a shard's document batch is compressed and emitted once it holds this many bytes


def _tag(what: str, i: int) -> str:
    return f"{what}{i}"


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
        self.shares_words = stage.name == "exact_dedup" and params.normalization == "full"

    def setup(self) -> None:
        pass

    def prepare(self, doc, shared: Dict) -> List:
        """[key, priority]; [None, None] for a document without a group key (as ``exact._KeyDoFn``). With the
        full normalization the key is that of the document's normalized words, computed once (``_words``)."""
        key = key_of_bytes(_words(doc, shared)[0].tobytes()) if self.shares_words else self.key_fn(doc)
        if key is None:
            return [None, None]
        return [key.hex() if isinstance(key, bytes) else key, _priority(doc, self.keep, shared)]


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

    def prepare(self, doc, shared: Dict) -> List:
        from pipeline.dedup.minhash.hashing import band_hashes

        _node(doc, shared)
        hashes = self.hasher.shingle_hashes_of_words(_words(doc, shared))
        bands = band_hashes(self.hasher.signature_of_hashes(hashes), self.bands, self.rows) if hashes.size else None
        priority = _priority(doc, self.params.keep, shared)
        return [priority,
                None if bands is None else bands.astype(_BANDS).tobytes(),
                np.unique(hashes).tobytes() if self.params.verify and bands is not None else None]


def _words(doc, shared: Dict):
    """``normalize.normalized_words`` of the document's text, computed once per document for the stages that
    need it (exact dedup's full normalization, MinHash shingles): ``shared`` is the document's own dict."""
    words = shared.get("words")
    if words is None:
        from pipeline.dedup.normalize import normalized_words

        words = shared["words"] = normalized_words(text_of(doc))
    return words


def _node(doc, shared: Dict) -> bytes:
    """``node_id(doc_key(doc))``, computed once per document (``shared``, as ``_words``)."""
    node = shared.get("node")
    if node is None:
        node = shared["node"] = node_id(doc_key(doc))
    return node


def _priority(doc, keep: str, shared: Dict):
    """``priority_of(doc, keep)``, computed once per document and keep rule (``shared``, as ``_words``)."""
    priority = shared.get(("priority", keep))
    if priority is None:
        priority = shared[("priority", keep)] = priority_of(doc, keep)
    return priority


def _specs(stages) -> List[Any]:
    out = []
    for stage in stages:
        if not fusable(stage):
            raise ValueError(f"stage {stage.name!r} cannot be fused; fusable dedup stages: {', '.join(FUSABLE)}")
        out.append(_MinhashSpec(stage) if stage.name == "minhash_dedup" else _GroupSpec(stage))
    return out


def _node_shards(stages) -> int:
    """Shards of the documents and fates: those of the last MinHash stage (its decisions join them), else the default."""
    return next((s.params.shards for s in reversed(stages) if s.name == "minhash_dedup"), SHARDS)


def _outputs_from(specs, start: int) -> List[str]:
    """The tags a DoFn that moves states on to stage ``start`` (or past the last one) writes to."""
    tags = [FATES_TAG]
    if start < len(specs):
        tags += [_tag("group", start)] if specs[start].kind == "group" else [_tag("bands", start), _tag("sets", start), _tag(CARRY_TAG, start)]
    return tags


class _Router:
    """Moves states on (see the module docstring): ``advance(state)`` and ``fate(state, ...)`` put the
    (tag, element) outputs that are full in ``out`` (a list the DoFn empties, ``_drain``), ``flush()`` the
    rest at the end of a bundle. Record batches are by key shard (group states) or node shard (fates,
    priorities, waiting states); bucket entries by band-hash shard, as ``banding.SignatureDoFn`` emits them."""

    def __init__(self, specs, shards: int):
        self.kinds = [s.kind for s in specs]
        self.names = [s.name for s in specs]
        self.bands = [s.params.lsh().bands if s.kind == "minhash" else 0 for s in specs]
        self.verify = [bool(s.kind == "minhash" and s.params.verify) for s in specs]
        self.minhash_shards = [s.params.shards if s.kind == "minhash" else 0 for s in specs]
        self.shards = shards

    def setup(self):
        from pipeline.dedup.minhash.banding import BATCH_RECORDS

        self.no_shingles = {i: Metrics.counter(METRICS_NAMESPACE, f"{self.names[i]}|no_shingles")
                            for i, kind in enumerate(self.kinds) if kind == "minhash"}
        self.batch_docs = {i: max(1, BATCH_RECORDS // self.bands[i]) for i in self.no_shingles}
        self.duplicate = [reason(name, "duplicate") for name in self.names]
        self.out: List = []

    def start_bundle(self):
        self.batches: Dict[str, packed.RecordBatches] = {}
        self.nodes: Dict[int, List] = {i: [] for i in self.no_shingles}
        self.hashes: Dict[int, List] = {i: [] for i in self.no_shingles}

    def _add(self, tag: str, shard: int, record):
        out = self.batches.get(tag)
        if out is None:
            out = self.batches[tag] = packed.RecordBatches()
        full = out.add(shard, packed.pack_record(record))
        if full:
            self.out.append((tag, full))

    def _bucket_batches(self, i: int):
        from pipeline.dedup.minhash import graph

        if not self.nodes[i]:
            return
        cols = graph.bucket_records(self.nodes[i], np.stack(self.hashes[i]))
        self.nodes[i], self.hashes[i] = [], []
        tag = _tag("bands", i)
        self.out.extend((tag, batch) for batch in packed.split_by_shard(packed.shard_of(cols[0], self.minhash_shards[i]), cols))

    def fate(self, state, reject: Optional[int] = None, why: Optional[str] = None):
        """End a state: [token, outcomes, index of the rejecting stage or None, reason or None]."""
        token = state[0]
        self._add(FATES_TAG, packed.node_shard(token[:NODE], self.shards), [token, state[1], reject, why])

    def advance(self, state):
        token, outcomes, inputs = state
        i = len(outcomes)
        if i < len(self.kinds):
            value = inputs[i]
            if isinstance(value, str):  # the stage's inputs raised: its dead letter
                self.fate(state, i, value)
                return
            if self.kinds[i] == "group":  # no group key: through the shuffle by node shard, not grouped
                shard = packed.node_shard(token[:NODE], SHARDS) if value[0] is None else packed.key_shard(value[0], SHARDS)
                self._add(_tag("group", i), shard, state)
                return
            priority, bands, shingles = value
            node = token[:NODE]
            shard = packed.node_shard(node, self.minhash_shards[i])  # where the stage's labels and decisions are
            if bands is None:
                self.no_shingles[i].inc()
            else:
                self.nodes[i].append(node)
                self.hashes[i].append(np.frombuffer(bands, dtype=_BANDS))
                if len(self.nodes[i]) >= self.batch_docs[i]:
                    self._bucket_batches(i)
                if shingles is not None:
                    self.out.append((_tag("sets", i), (node, shingles)))
            inputs[i] = None
            self._add(_tag(CARRY_TAG, i), shard, [token, outcomes, inputs, priority])
            return
        self.fate(state)

    def flush(self):
        for i in self.nodes:
            self._bucket_batches(i)
        batches, self.batches = self.batches, {}
        for tag, out in batches.items():
            self.out.extend((tag, batch) for batch in out.flush())


class _RoutingDoFn(beam.DoFn):
    """Base of the DoFns that move states on (``_Router``)."""

    def __init__(self, specs, shards: int):
        self.router = _Router(specs, shards)

    def setup(self):
        self.router.setup()

    def start_bundle(self):
        self.router.start_bundle()

    def _drain(self):
        """The router's full outputs as tagged outputs (and an empty ``out``)."""
        out, self.router.out = self.router.out, []
        for tag, element in out:
            yield beam.pvalue.TaggedOutput(tag, element)

    def finish_bundle(self):
        self.router.flush()
        out, self.router.out = self.router.out, []
        for tag, element in out:
            yield beam.pvalue.TaggedOutput(tag, GlobalWindows.windowed_value(element))


class _PrepareDoFn(_RoutingDoFn):
    """Document -> its token and packed record (``docs``, by node shard) and its state, moved on from the
    first stage; a dead letter of the first stage (its inputs, or a record that cannot be packed) is
    counted here and goes to the last join as it is (``dead``: Apply emits it rejected, so that all rejected
    documents come out of one DoFn and no Flatten, which the in-process runner materializes, gathers them)."""

    def __init__(self, specs, shards: int, counters: Optional[Callable] = None):
        super().__init__(specs, shards)
        self.specs, self.shards, self.counter_factory = specs, shards, counters

    def setup(self):
        super().setup()
        for spec in self.specs:
            spec.setup()
        self.first = self.counter_factory(self.specs[0].name) if self.counter_factory else None

    def start_bundle(self):
        super().start_bundle()
        self.docs = packed.RecordBatches(DOC_BATCH_BYTES)

    def _reject_first(self, doc, exc):
        why = error_reason(self.specs[0].name, exc)
        if self.first is not None:
            self.first.count(doc, "in")
            self.first.count(doc, "rejected", why)
        return beam.pvalue.TaggedOutput(DEAD_TAG, (0, (doc, why)))

    def process(self, doc):
        inputs: List[Any] = [None] * len(self.specs)
        shared: Dict = {}  # what several stages compute from the document (``_words``, ``_node``, ``_priority``)
        for i, spec in enumerate(self.specs):
            try:
                inputs[i] = spec.prepare(doc, shared)
            except Exception as exc:  # a dead letter of stage i (if the document gets that far)
                if i == 0:
                    yield self._reject_first(doc, exc)
                    return
                inputs[i] = error_reason(spec.name, exc)
                break
        try:
            blob = packed.pack_record(doc)
        except Exception as exc:  # what cannot go through a shuffle: the first stage's dead letter, as chained
            yield self._reject_first(doc, exc)
            return
        node = _node(doc, shared)
        token = node + zlib.crc32(blob).to_bytes(4, "big")
        full = self.docs.add(packed.node_shard(node, self.shards), token + blob)
        if full:
            yield beam.pvalue.TaggedOutput(DOCS_TAG, (full[0], packed.compress_batch(full[1])))
        router = self.router
        router.advance([token, [], inputs])
        if router.out:
            yield from self._drain()

    def finish_bundle(self):
        yield from super().finish_bundle()
        for shard, batch in self.docs.flush():
            yield beam.pvalue.TaggedOutput(DOCS_TAG, GlobalWindows.windowed_value((shard, packed.compress_batch(batch))))


class _GroupDecideDoFn(_RoutingDoFn):
    """(key shard, state batches) of group stage ``index`` -> per key, the state with the smallest priority
    moves on (the first one on a tie, as ``exact._KeepOneDoFn``), the others end rejected; every member's
    outcome is the group's size. A state without a group key moves on, not grouped (outcome None)."""

    def __init__(self, specs, shards: int, index: int):
        super().__init__(specs, shards)
        self.index = index

    def process(self, element):
        i, groups = self.index, {}
        router = self.router
        for state in packed.records_of(element[1]):
            key = state[2][i][0]
            if key is None:
                state[1].append(None)
                state[2][i] = None
                router.advance(state)
            else:
                groups.setdefault(key, []).append(state)
        why = router.duplicate[i]
        for members in groups.values():
            best_index, best_priority = 0, members[0][2][i][1]
            for m, state in enumerate(members):
                if state[2][i][1] < best_priority:
                    best_index, best_priority = m, state[2][i][1]
            size = len(members)
            for m, state in enumerate(members):
                state[1].append(size)
                state[2][i] = None
                if m == best_index:
                    router.advance(state)
                else:
                    router.fate(state, i, why)
        yield from self._drain()


def _decisions_of(batches) -> Dict[str, List]:
    """``_DecideDoFn`` records [member key, representative key, size, keep] -> {member key: [rep, size, keep]}."""
    return {r[0]: r[1:] for r in packed.records_of(batches)}


def _decide(carried, decisions, duplicate: str):
    """A waiting MinHash state [token, outcomes, inputs, priority] with its node's decision: (state with the
    outcome [cluster, size], rejected?); a node without a decision is its own cluster of one."""
    token, outcomes, inputs, priority = carried
    key = priority[-1]  # priority_of ends with the doc_key
    decision = decisions.get(key)
    if decision is None:
        outcomes.append([key, 1])
        return [token, outcomes, inputs], False
    outcomes.append([decision[0], decision[1]])
    return [token, outcomes, inputs], not decision[2]


class _ContinueDoFn(_RoutingDoFn):
    """(node shard, {carry, decisions}) of MinHash stage ``index`` (not the last) -> states move on or end."""

    def __init__(self, specs, shards: int, index: int):
        super().__init__(specs, shards)
        self.index = index

    def process(self, element):
        grouped = element[1]
        decisions = _decisions_of(grouped[DECISIONS_TAG])
        router = self.router
        why = router.duplicate[self.index]
        for carried in packed.records_of(grouped[CARRY_TAG]):
            state, rejected = _decide(carried, decisions, why)
            if rejected:
                router.fate(state, self.index, why)
            else:
                router.advance(state)
        yield from self._drain()


class _WaitingToRootDoFn(_ToRootDoFn):
    """``_ToRootDoFn`` on the waiting states (their last item is the priority) instead of priority records."""

    @staticmethod
    def node_and_priority(record):
        return record[0][:NODE], record[3]


class _MinhashDecisions(beam.PTransform):
    """(bucket entries, waiting states, shingle sets) of the active documents -> ``_DecideDoFn`` decisions by
    node shard (the MinHash stage's graph from the candidate edges on, as ``minhash.transform.MinhashDedup``)."""

    def __init__(self, stage: str, params):
        super().__init__()
        self.stage, self.params = stage, params

    def expand(self, pcolls):
        from pipeline.dedup.minhash.banding import CandidateEdges, VerifyEdges
        from pipeline.dedup.minhash.components import PackedConnectedComponents, pack_edges, unpack_pairs
        from pipeline.dedup.minhash.transform import _VERIFIED_BATCH, _DecideDoFn

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
            | "ToRoot" >> pardo(_WaitingToRootDoFn(p.shards))
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> pardo(_DecideDoFn(p.shards))
        )


class _ApplyDoFn(beam.DoFn):
    """(node shard, {docs, fates[, carry, decisions of a last MinHash stage]}) -> kept documents and rejected
    (document, reason): every document walks the stages in order, takes each stage's outcome (its columns)
    and stops at the stage that rejected it."""

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

    def process(self, element):
        grouped = element[1]
        for dead in grouped.get(DEAD_TAG, ()):  # counted where they were found (Prepare)
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, dead)
        fates: Dict[bytes, List] = {}
        for tag, batches in grouped.items():
            if tag.startswith(FATES_TAG):
                for token, outcomes, reject, why in packed.records_of(batches):
                    fates.setdefault(token, []).append((outcomes, reject, why))
        if CARRY_TAG in grouped:  # the last stage is MinHash: its waiting states and decisions
            last, decisions = len(self.kinds) - 1, _decisions_of(grouped[DECISIONS_TAG])
            for carried in packed.records_of(grouped[CARRY_TAG]):
                state, rejected = _decide(carried, decisions, self.duplicate[last])
                fates.setdefault(state[0], []).append((state[1], last, self.duplicate[last]) if rejected else (state[1], None, None))
        counters = self.counters
        for record in packed.raw_records_of(packed.decompress_batch(b) for b in grouped[DOCS_TAG]):
            token = bytes(record[:TOKEN])
            doc = packed.unpack_record(record[TOKEN:])
            outcomes, reject, why = fates[token].pop()
            for i, kind in enumerate(self.kinds):
                if counters is not None:
                    counters[i].count(doc, "in")
                if i < len(outcomes):
                    outcome = outcomes[i]
                    if kind == "minhash":
                        doc[self.cluster_column], doc[self.size_column] = outcome
                    elif outcome is not None:
                        doc[self.columns[i]] = outcome
                if i == reject:
                    if counters is not None:
                        counters[i].count(doc, "rejected", why)
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, why))
                    break
                if counters is not None:
                    counters[i].count(doc, "kept")
            else:
                yield doc


def _flatten(pcolls, label: str):
    return pcolls[0] if len(pcolls) == 1 else tuple(pcolls) | label >> beam.Flatten()


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
        upstream: Dict[str, List] = {}

        def collect(result, start):
            for tag in _outputs_from(specs, start):
                upstream.setdefault(tag, []).append(result[tag])

        prepared = docs | "Prepare" >> pardo(_PrepareDoFn(specs, shards, self.counters)).with_outputs(
            DEAD_TAG, DOCS_TAG, *_outputs_from(specs, 0))
        collect(prepared, 0)
        final = {DOCS_TAG: prepared[DOCS_TAG], DEAD_TAG: prepared[DEAD_TAG]}
        for i, spec in enumerate(specs):
            name = spec.name
            if spec.kind == "group":
                decided = (_flatten(upstream[_tag("group", i)], f"{name}:Gather")
                           | f"{name}:Group" >> beam.GroupByKey()
                           | f"{name}:Decide" >> pardo(_GroupDecideDoFn(specs, shards, i)).with_outputs(*_outputs_from(specs, i + 1)))
                collect(decided, i + 1)
                continue
            bands, sets, waiting = [_flatten(upstream[_tag(what, i)], f"{name}:Gather[{what}]") for what in ("bands", "sets", CARRY_TAG)]
            decisions = (bands, waiting, sets) | name >> _MinhashDecisions(name, spec.params)
            if i == len(specs) - 1:
                final[CARRY_TAG], final[DECISIONS_TAG] = waiting, decisions
            else:
                continued = ({CARRY_TAG: waiting, DECISIONS_TAG: decisions}
                             | f"{name}:Join" >> beam.CoGroupByKey()
                             | f"{name}:Continue" >> pardo(_ContinueDoFn(specs, shards, i)).with_outputs(*_outputs_from(specs, i + 1)))
                collect(continued, i + 1)
        # every stage's fates go to the join as their own input: its one Flatten gathers them (no Flatten of
        # their own, which the in-process runner would run as one more stage)
        final.update({_tag(FATES_TAG, j): fates for j, fates in enumerate(upstream[FATES_TAG])})
        applied = (final
                   | "JoinDocuments" >> beam.CoGroupByKey()
                   | "Apply" >> pardo(_ApplyDoFn(specs, self.counters)).with_outputs(REJECTED_TAG, main="kept"))
        return applied.kept, applied[REJECTED_TAG]
