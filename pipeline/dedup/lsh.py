"""MinHash LSH banding as Beam transforms: documents -> signatures -> band buckets -> candidate edges.

Each document gets a compact node id (``node_id``: 16-byte BLAKE2b of ``doc_key``, so a node is 16
bytes in every shuffle instead of a long key; collisions need ~2^64 documents). Each of its
``bands`` bands puts the document in the bucket (band index, 64-bit hash of the band's ``rows``
signature values; see ``minhash.band_hashes``, the same buckets as ``minhash.band_keys``).

Bucket entries do not travel one per Beam element: ``SignatureDoFn`` collects them into packed
numpy batches (``packed``), split by a shard of the band hash, and a GroupByKey on the shard brings
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

import hashlib
from typing import Iterable, Iterator, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup import packed
from pipeline.dedup.minhash import MinHasher, band_hashes, jaccard_of_hash_sets
from pipeline.document import Document, doc_key, text_of
from pipeline.stages.base import error_reason

METRICS_NAMESPACE = "webrefinery.dedup"

KEYED_TAG = "keyed"
INFO_TAG = "info"
BANDS_TAG = "bands"
SETS_TAG = "sets"
ERROR_TAG = "errors"


def node_id(key: str) -> bytes:
    """The 16-byte node id of a document key (what the dedup graph stores instead of the key)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def priority_of(doc: Document, keep: str) -> Tuple:
    """Sort key of a document for 'which copy to keep' (smallest wins; doc_key breaks ties).

    keep = "lowest_key": the lowest doc_key; "earliest_date": the earliest ``warc_date`` (missing dates
    last); "longest": the longest text.
    """
    key = doc_key(doc)
    if keep == "lowest_key":
        return (key,)
    if keep == "earliest_date":
        date = doc.get("warc_date")
        return (date is None or date == "", date or "", key)
    if keep == "longest":
        return (-len(doc.get("text") or ""), key)
    raise ValueError(f"unknown keep rule {keep!r}; expected lowest_key, earliest_date or longest")


KEEP_RULES = ("lowest_key", "earliest_date", "longest")


DEFAULT_SHARDS = 256  # shuffle keys of the packed batches (bucket entries, edges)
BATCH_RECORDS = 1 << 20  # bucket entries per packed batch before it is split by shard and emitted


class SignatureDoFn(beam.DoFn):
    """Document -> keyed document, priority, packed LSH bucket entries (and shingle sets for verification).

    Outputs (tags): ``keyed`` (node, the document as ``packed.pack_document`` bytes); ``info``
    (node, priority: ``priority_of``, whose last item is the doc_key); ``bands`` (shard, packed bucket
    records) once per shard and batch of ``BATCH_RECORDS`` entries, and at the end of each bundle;
    ``sets`` (node, sorted unique uint32 shingle hashes as bytes) when ``with_sets``; ``errors``
    (doc, reason) for a document whose hashing raised. Dedup runs in the global window (the batch
    flushed at the end of a bundle is emitted there)."""

    def __init__(self, stage: str, num_perm: int, bands: int, rows: int, ngram: int, seed: int, scheme: str,
                 shingle_hash: str, keep: str, with_sets: bool, shards: int = DEFAULT_SHARDS):
        self.stage, self.num_perm, self.bands, self.rows = stage, num_perm, bands, rows
        self.ngram, self.seed, self.scheme, self.shingle_hash = ngram, seed, scheme, shingle_hash
        self.keep, self.with_sets, self.shards = keep, with_sets, shards

    def setup(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"{self.bands} bands x {self.rows} rows need {self.bands * self.rows} hash values, signature has {self.num_perm}")
        if not 1 <= self.bands <= 0xFFFF:
            raise ValueError(f"bands must be in [1, 65535], got {self.bands}")
        self.hasher = MinHasher(self.num_perm, self.seed, self.ngram, self.scheme, self.shingle_hash)
        self.no_shingles = Metrics.counter(METRICS_NAMESPACE, f"{self.stage}|no_shingles")
        self.batch_docs = max(1, BATCH_RECORDS // self.bands)

    def start_bundle(self):
        self.nodes, self.hashes = [], []

    def _flush(self):
        if not self.nodes:
            return
        cols = packed.bucket_records(self.nodes, np.stack(self.hashes))
        self.nodes, self.hashes = [], []
        yield from packed.split_by_shard(packed.shard_of(cols[0], self.shards), cols)

    def process(self, doc: Document):
        try:
            key = doc_key(doc)
            node = node_id(key)
            text = text_of(doc)
            hashes = self.hasher.shingle_hashes(text)
            bands = band_hashes(self.hasher.signature_of_hashes(hashes), self.bands, self.rows) if hashes.size else None
            priority = priority_of(doc, self.keep)
            blob = packed.pack_document(doc)
        except Exception as exc:  # a dead letter, never a crashed run
            yield beam.pvalue.TaggedOutput(ERROR_TAG, (doc, error_reason(self.stage, exc)))
            return
        yield beam.pvalue.TaggedOutput(KEYED_TAG, (node, blob))
        yield beam.pvalue.TaggedOutput(INFO_TAG, (node, priority))
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
        for shard_batch in self._flush():
            yield beam.pvalue.TaggedOutput(BANDS_TAG, GlobalWindows.windowed_value(shard_batch))


def star_edges(bucket: Tuple[bytes, Iterable[bytes]]) -> Iterator[Tuple[bytes, bytes]]:
    """(bucket, members) -> one edge (member, min member) per other member (linear, not quadratic).

    The rule for one bucket as plain Python (tests, reference); the pipeline applies it to packed
    batches (``packed.star_edges_of_buckets``)."""
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
        edges, sizes = packed.star_edges_of_buckets(*packed.unpack_columns(blobs, packed.BUCKET_COLUMNS))
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
