"""Fuzzy (MinHash LSH) dedup as one Beam transform: docs -> (kept, rejected).

Graph:

    docs -> SignatureDoFn -> bands  (shard, packed bucket entries) -> GroupByKey(shard)
                                -> packed star edges [-> plain edges -> VerifyEdges -> packed]
                          -> info   (node, priority)
                          -> keyed  (node, doc)
    packed edges -> PackedConnectedComponents -> packed (node, root) -> plain (node, root)
    (node, root) + info -> CoGroupByKey(node) -> (root, member) -> GroupByKey(root)
         -> per member: (node, (representative doc_key, cluster size, keep?))
    keyed + decisions -> CoGroupByKey(node) -> kept / rejected ("<stage>:duplicate")

(``keyed`` carries each document as ``packed.pack_document`` bytes.)

One document per connected component is kept: the one with the smallest priority
(``lsh.priority_of``: lowest ``doc_key`` by default). Every document, kept or rejected, gets
``minhash_cluster`` (the kept document's ``doc_key``) and ``minhash_cluster_size`` (documents in the
component; 1 for a document with no near-duplicate). Only small tuples are shuffled until the last
join, which moves each document once; bucket entries and graph edges travel as packed numpy
batches (``packed``), not one Beam element each.

Documents sharing one ``doc_key`` (which should not happen: it is unique per input record) are one
node: they share a decision and are kept or rejected together, never silently dropped.
"""

from __future__ import annotations

import apache_beam as beam

from pipeline.dedup.components import DEFAULT_SHARDS, PackedConnectedComponents, pack_edges, unpack_pairs
from pipeline.dedup.lsh import BANDS_TAG, ERROR_TAG, INFO_TAG, KEYED_TAG, SETS_TAG, CandidateEdges, SignatureDoFn, VerifyEdges
from pipeline.dedup.minhash import LshPreset
from pipeline.dedup.packed import unpack_document
from pipeline.document import doc_key
from pipeline.stages.base import reason

REJECTED_TAG = "rejected"
_VERIFIED_BATCH = 65536  # verified plain edges per packed batch
CLUSTER_COLUMN = "minhash_cluster"
SIZE_COLUMN = "minhash_cluster_size"


def _to_root(element):
    """(node, {labels: [root], info: [priority...]}) -> (root, (priority, key, node)) per doc (key = priority[-1])."""
    node, grouped = element
    labels = list(grouped["labels"])
    if not labels:
        return
    root = labels[0]
    for priority in grouped["info"]:
        yield (root, (priority, priority[-1], node))


def _decide(element):
    """(root, members) -> (node, (representative key, size, keep)) for every member."""
    _, members = element
    members = list(members)
    best = min(members)
    rep_node, rep_key = best[2], best[1]
    size = len(members)
    for node in {m[2] for m in members}:
        yield (node, (rep_key, size, node == rep_node))


class _ApplyDecisionDoFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage
        self.why = reason(stage, "duplicate")

    def process(self, element):
        _, grouped = element
        decisions = list(grouped["decisions"])
        for blob in grouped["docs"]:
            doc = unpack_document(blob)
            if not decisions:
                doc[CLUSTER_COLUMN] = doc_key(doc)
                doc[SIZE_COLUMN] = 1
                yield doc
                continue
            rep_key, size, keep = decisions[0]
            doc[CLUSTER_COLUMN] = rep_key
            doc[SIZE_COLUMN] = size
            if keep:
                yield doc
            else:
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, self.why))


class MinhashDedup(beam.PTransform):
    """Docs -> (kept, rejected (doc, reason)): one document kept per near-duplicate cluster."""

    def __init__(self, stage: str, lsh: LshPreset, ngram: int = 5, seed: int = 1, scheme: str = "affine32",
                 shingle_hash: str = "sha1", max_rounds: int = 20, on_unconverged: str = "fail",
                 verify: bool = False, verify_threshold: float = 0.8, keep: str = "lowest_key",
                 shards: int = DEFAULT_SHARDS):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards
        self.stage, self.lsh, self.ngram, self.seed, self.scheme = stage, lsh, ngram, seed, scheme
        self.shingle_hash, self.max_rounds, self.on_unconverged = shingle_hash, max_rounds, on_unconverged
        self.verify, self.verify_threshold, self.keep = verify, verify_threshold, keep

    def expand(self, docs):
        sig = docs | "Signatures" >> beam.ParDo(
            SignatureDoFn(self.stage, self.lsh.num_perm, self.lsh.bands, self.lsh.rows, self.ngram, self.seed,
                          self.scheme, self.shingle_hash, self.keep, self.verify, self.shards)
        ).with_outputs(KEYED_TAG, INFO_TAG, BANDS_TAG, SETS_TAG, ERROR_TAG)
        edges = sig[BANDS_TAG] | "Buckets" >> CandidateEdges(self.stage)
        if self.verify:
            edges = (
                (edges | "UnpackCandidates" >> beam.FlatMap(unpack_pairs), sig[SETS_TAG])
                | "Verify" >> VerifyEdges(self.stage, self.verify_threshold)
                | "BatchVerified" >> beam.BatchElements(min_batch_size=_VERIFIED_BATCH, max_batch_size=_VERIFIED_BATCH)
                | "PackVerified" >> beam.Map(pack_edges)
            )
        labels = (
            edges
            | "Components" >> PackedConnectedComponents(self.max_rounds, self.on_unconverged, self.stage, self.shards)
            | "UnpackLabels" >> beam.FlatMap(unpack_pairs)
        )
        decisions = (
            {"labels": labels, "info": sig[INFO_TAG]}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "ToRoot" >> beam.FlatMap(_to_root)
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> beam.FlatMap(_decide)
        )
        applied = (
            {"docs": sig[KEYED_TAG], "decisions": decisions}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Apply" >> beam.ParDo(_ApplyDecisionDoFn(self.stage)).with_outputs(REJECTED_TAG, main="kept")
        )
        rejected = (applied[REJECTED_TAG], sig[ERROR_TAG]) | "FlattenRejected" >> beam.Flatten()
        return applied.kept, rejected
