"""MinHash LSH banding as Beam transforms: documents -> signatures -> band buckets -> candidate edges.

Each document gets a compact node id (``keys.node_id``: 16-byte BLAKE2b of ``doc_key``). Each of its
``bands`` bands puts the document in the bucket (band index, 64-bit hash of the band's ``rows``
signature values; see ``hashing.band_hashes``, the same buckets as ``hashing.band_keys``).

Bucket entries do not travel one per Beam element: ``SignatureDoFn`` collects them into packed
numpy batches (``pipeline.dedup.packed``), split by a shard of the band hash, and a GroupByKey on the shard brings
every bucket's entries together (one element per shard and batch, ~26 bytes per entry instead of a
Python tuple per entry).

A bucket with members m_1..m_k yields *star* edges ``(m_i, min(m))``: k - 1 edges, never k^2/2, so a
boilerplate bucket holding a million pages costs a million edges. Stars keep connectivity, which
is all that connected components need. Documents without any word have no shingle and are put in
no bucket (all-empty signatures would otherwise make every empty page one cluster).

Optional verification (``VerifyEdges``) removes LSH false positives: each candidate edge is kept
only if the true Jaccard similarity of the two documents' shingle-hash sets reaches a threshold.
Because edges are stars, what gets verified is member-to-bucket-minimum: two members that are similar
to each other but not to the bucket minimum lose that bucket's link, and stay linked only through
another band they share (likely for truly similar pairs, which share many bands).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup import packed
from pipeline.dedup.keys import METRICS_NAMESPACE, node_id, priority_of
from pipeline.dedup.minhash import graph
from pipeline.dedup.minhash.hashing import MinHasher, band_hashes, jaccard_of_hash_sets
from pipeline.dedup.minhash.stage import MinhashDedupParams
from pipeline.document import Document, doc_key, text_of
from pipeline.stages.base import error_reason

KEYED_TAG = "keyed"
INFO_TAG = "info"
BANDS_TAG = "bands"
SETS_TAG = "sets"
ERROR_TAG = "errors"

BATCH_RECORDS = 1 << 20  # bucket entries per packed batch before it is split by shard and emitted


class SignatureDoFn(beam.DoFn):
    """Document -> the document, its priority, packed LSH bucket entries (and shingle sets for verification).

    Outputs (tags): ``keyed`` (node shard, record batch of documents as ``packed.pack_record`` records);
    ``info`` (node shard, record batch of priorities: ``priority_of``, whose last item is the doc_key, so
    the node is ``node_id(priority[-1])``); ``bands`` (shard, packed bucket records) once per shard and
    batch of ``BATCH_RECORDS`` entries; ``sets`` (node, sorted unique uint32 shingle hashes as bytes)
    when ``verify``; ``errors`` (doc, reason) for a document whose hashing raised. Batches are emitted
    when full and at the end of each bundle; dedup runs in the global window (what is flushed at the end
    of a bundle is emitted there)."""

    def __init__(self, stage: str, params: MinhashDedupParams):
        self.stage, self.params = stage, params

    def setup(self):
        p, lsh = self.params, self.params.lsh()
        self.bands, self.rows, self.keep, self.shards = lsh.bands, lsh.rows, p.keep, p.shards
        self.with_sets = p.verify
        self.hasher = MinHasher(lsh.num_perm, p.seed, p.ngram, p.scheme, p.shingle_hash)
        self.no_shingles = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|no_shingles")
        self.batch_docs = max(1, BATCH_RECORDS // self.bands)

    def start_bundle(self):
        self.nodes, self.hashes = [], []
        self.docs, self.infos = packed.RecordBatches(), packed.RecordBatches()

    def _flush(self):
        if not self.nodes:
            return
        cols = graph.bucket_records(self.nodes, np.stack(self.hashes))
        self.nodes, self.hashes = [], []
        yield from packed.split_by_shard(packed.shard_of(cols[0], self.shards), cols)

    def process(self, doc: Document):
        try:
            key = doc_key(doc)
            node = node_id(key)
            text = text_of(doc)
            hashes = self.hasher.shingle_hashes(text)
            bands = band_hashes(self.hasher.signature_of_hashes(hashes), self.bands, self.rows) if hashes.size else None
            info = packed.pack_record(priority_of(doc, self.keep))
            blob = packed.pack_record(doc)
        except Exception as exc:  # a dead letter, never a crashed run
            yield beam.pvalue.TaggedOutput(ERROR_TAG, (doc, error_reason(self.stage, exc)))
            return
        shard = packed.node_shard(node, self.shards)
        full = self.docs.add(shard, blob)
        if full:
            yield beam.pvalue.TaggedOutput(KEYED_TAG, full)
        full = self.infos.add(shard, info)
        if full:
            yield beam.pvalue.TaggedOutput(INFO_TAG, full)
        if bands is None:
            self.no_shingles.inc()
            return
        self.nodes.append(node)
        self.hashes.append(bands)
        if len(self.nodes) >= self.batch_docs:
            for shard_batch in self._flush():
                yield beam.pvalue.TaggedOutput(BANDS_TAG, shard_batch)
        if self.with_sets:
            yield beam.pvalue.TaggedOutput(SETS_TAG, (node, np.unique(hashes).tobytes()))

    def finish_bundle(self):
        for tag, batches in ((BANDS_TAG, self._flush()), (KEYED_TAG, self.docs.flush()), (INFO_TAG, self.infos.flush())):
            for batch in batches:
                yield beam.pvalue.TaggedOutput(tag, GlobalWindows.windowed_value(batch))


def star_edges(bucket: Tuple[bytes, Iterable[bytes]]) -> Iterator[Tuple[bytes, bytes]]:
    """(bucket, members) -> one edge (member, min member) per other member (linear, not quadratic).

    The rule for one bucket as plain Python (tests, reference); the pipeline applies it to packed
    batches (``graph.star_edges_of_buckets``)."""
    _, members = bucket
    nodes = set(members)
    if len(nodes) < 2:
        return
    root = min(nodes)
    for node in nodes:
        if node != root:
            yield (node, root)


class _StarEdgesDoFn(beam.DoFn):
    """(shard, packed bucket records) -> (shard, packed star edges) of its buckets with >= 2 members."""

    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.buckets = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|candidate_buckets")
        self.edges = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|star_edges")
        self.largest = Metrics.distribution(METRICS_NAMESPACE, f"{self.stage}|largest_bucket")

    def process(self, element):
        shard, blobs = element
        edges, sizes = graph.star_edges_of_buckets(*packed.unpack_columns(blobs, graph.BUCKET_COLUMNS))
        if len(sizes):
            self.buckets.inc(len(sizes))
            self.edges.inc(int(sizes.sum()) - len(sizes))
            self.largest.update(int(sizes.max()))
        if len(edges[0]):
            yield shard, packed.pack_columns(edges)


class CandidateEdges(beam.PTransform):
    """(shard, packed bucket records) -> (shard, packed star edges (node, bucket minimum)) of every bucket
    with >= 2 members.

    Metrics: ``<stage>|candidate_buckets`` (buckets with >= 2 members), ``<stage>|star_edges``
    (edges before removing repeats across bands), ``<stage>|largest_bucket`` (a distribution of the
    largest bucket per shard group: its max is the largest bucket)."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def expand(self, bands):
        return (
            bands
            | "GroupBuckets" >> beam.GroupByKey()
            | "StarEdges" >> beam.ParDo(_StarEdgesDoFn(self.stage))
        )


class _AttachSourceSet(beam.DoFn):
    """(x, {edges: [m...], sets: [set_x]}) -> (m, (x, set_x)) once per distinct m."""

    def process(self, element):
        x, grouped = element
        sets = list(grouped["sets"])
        set_x = sets[0] if sets else b""
        for m in set(grouped["edges"]):
            yield (m, (x, set_x))


class _CheckJaccard(beam.DoFn):
    """(m, {queries: [(x, set_x)], sets: [set_m]}) -> edge (x, m) when Jaccard(set_x, set_m) >= threshold."""

    def __init__(self, stage: str, threshold: float):
        self.stage, self.threshold = stage, threshold

    def setup(self):
        self.kept = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|verified_edges")
        self.dropped = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|false_positive_edges")

    def process(self, element):
        m, grouped = element
        sets = list(grouped["sets"])
        set_m = np.frombuffer(sets[0], dtype=np.uint32) if sets else np.empty(0, np.uint32)
        for x, set_x in grouped["queries"]:
            j = jaccard_of_hash_sets(np.frombuffer(set_x, dtype=np.uint32), set_m)
            if j >= self.threshold:
                self.kept.inc()
                yield (x, m)
            else:
                self.dropped.inc()


class VerifyEdges(beam.PTransform):
    """Keep candidate edges whose true shingle-set Jaccard similarity is >= threshold (two joins)."""

    def __init__(self, stage: str, threshold: float):
        super().__init__()
        self.stage, self.threshold = stage, threshold

    def expand(self, pcolls):
        edges, sets = pcolls
        queries = (
            {"edges": edges, "sets": sets}
            | "JoinSourceSets" >> beam.CoGroupByKey()
            | "AttachSourceSet" >> beam.ParDo(_AttachSourceSet())
        )
        return (
            {"queries": queries, "sets": sets}
            | "JoinTargetSets" >> beam.CoGroupByKey()
            | "CheckJaccard" >> beam.ParDo(_CheckJaccard(self.stage, self.threshold))
        )
