"""Fuzzy (MinHash LSH) dedup as one Beam transform: docs -> (kept, rejected).

Graph (every arrow between ParDos carries *batches*, one element per shard, never one per document):

    docs -> SignatureDoFn -> bands (shard, packed bucket entries) -> GroupByKey(shard)
                                -> packed star edges [-> plain edges -> VerifyEdges -> packed]
                          -> info  (node shard, priorities)   keyed (node shard, documents)
    packed edges -> PackedConnectedComponents -> (node shard, packed (node, root))
    labels + info -> CoGroupByKey(node shard) -> (root shard, (root, member priority)) -> GroupByKey
         -> per root: (node shard, (member key, representative doc_key, cluster size, keep?))
    keyed + decisions -> CoGroupByKey(node shard) -> kept / rejected ("<stage>:duplicate")

Only keys and the fields a decision needs (priorities, labels) travel through the decision shuffles;
each document is encoded once (``pipeline.dedup.packed.pack_record``), shuffled once, and
decoded once at the last join. The node shard of a document is ``packed.node_shard(node_id(doc_key))``,
the shard the connected-components labels come out on, so labels, priorities, decisions and documents
of one node always meet in one shard group.

One document per connected component is kept: the one with the smallest priority
(``keys.priority_of``: lowest ``doc_key`` by default). Every document, kept or rejected, gets
``minhash_cluster`` (the kept document's ``doc_key``) and ``minhash_cluster_size`` (documents in the
component; 1 for a document with no near-duplicate).

Documents sharing one ``doc_key`` (which should not happen: it is unique per input record) are one
node: they share a decision and are kept or rejected together, never silently dropped.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup.minhash.banding import BANDS_TAG, ERROR_TAG, INFO_TAG, KEYED_TAG, SETS_TAG, CandidateEdges, SignatureDoFn, VerifyEdges
from pipeline.dedup.minhash.components import PackedConnectedComponents, pack_edges, unpack_pairs
from pipeline.dedup.minhash.graph import EDGE_COLUMNS
from pipeline.dedup.minhash.stage import MinhashDedupParams
from pipeline.dedup import packed
from pipeline.dedup.keys import node_id
from pipeline.document import doc_key
from pipeline.stages.base import reason

REJECTED_TAG = "rejected"
_VERIFIED_BATCH = 65536  # verified plain edges per packed batch
CLUSTER_COLUMN = "minhash_cluster"
SIZE_COLUMN = "minhash_cluster_size"


class _RecordBatchesDoFn(beam.DoFn):
    """Base of the DoFns whose output is record batches by node shard (``packed.RecordBatches``): ``emit``
    returns a full batch to yield (or None); the rest is emitted at the end of the bundle."""

    def __init__(self, shards: int):
        self.shards = shards

    def start_bundle(self):
        self.out = packed.RecordBatches()

    def emit(self, node: bytes, record):
        return self.out.add(packed.node_shard(node, self.shards), packed.pack_record(record))

    def finish_bundle(self):
        for batch in self.out.flush():
            yield GlobalWindows.windowed_value(batch)


class _ToRootDoFn(_RecordBatchesDoFn):
    """(node shard, {labels: [packed (node, root)], info: [priority batches]}) -> (root shard, [root, priority])
    record batches for every document whose node has a label (is in a cluster)."""

    @staticmethod
    def node_and_priority(record):
        """(node id, priority) of one ``info`` record: here the priority itself, its doc_key last."""
        return node_id(record[-1]), record

    def process(self, element):
        _, grouped = element
        nodes_hi, nodes_lo, roots_hi, roots_lo = packed.unpack_columns(list(grouped["labels"]), EDGE_COLUMNS)
        root_of = dict(zip(packed.columns_to_nodes(nodes_hi, nodes_lo), packed.columns_to_nodes(roots_hi, roots_lo)))
        if not root_of:
            return
        for record in packed.records_of(grouped["info"]):
            node, priority = self.node_and_priority(record)
            root = root_of.get(node)
            if root is not None:
                full = self.emit(root, [root.hex(), priority])
                if full:
                    yield full


class _DecideDoFn(_RecordBatchesDoFn):
    """(root shard, [[root, priority] batches]) -> (node shard, [member key, representative key, size, keep])
    record batches: per cluster, the member with the smallest priority is kept; size counts documents."""

    def process(self, element):
        clusters = {}
        for root, priority in packed.records_of(element[1]):
            clusters.setdefault(root, []).append(priority)
        for members in clusters.values():
            rep_key, size = min(members)[-1], len(members)
            for key in {m[-1] for m in members}:
                full = self.emit(node_id(key), [key, rep_key, size, key == rep_key])
                if full:
                    yield full


class _ApplyDecisionDoFn(beam.DoFn):
    """(node shard, {docs: [document batches], decisions: [decision batches]}) -> kept documents and
    rejected (document, "<stage>:duplicate")."""

    def __init__(self, stage: str):
        self.stage = stage
        self.why = reason(stage, "duplicate")

    def process(self, element):
        _, grouped = element
        decisions = {d[0]: d[1:] for d in packed.records_of(grouped["decisions"])}
        for doc in packed.records_of(grouped["docs"]):
            key = doc_key(doc)
            decision = decisions.get(key)
            if decision is None:
                doc[CLUSTER_COLUMN] = key
                doc[SIZE_COLUMN] = 1
                yield doc
                continue
            rep_key, size, keep = decision
            doc[CLUSTER_COLUMN] = rep_key
            doc[SIZE_COLUMN] = size
            if keep:
                yield doc
            else:
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, self.why))


class MinhashDedup(beam.PTransform):
    """Docs -> (kept, rejected (doc, reason)): one document kept per near-duplicate cluster."""

    def __init__(self, stage: str, params: MinhashDedupParams):
        super().__init__()
        params.validate()
        self.stage, self.params = stage, params

    def expand(self, docs):
        p = self.params
        sig = docs | "Signatures" >> beam.ParDo(SignatureDoFn(self.stage, p)).with_outputs(KEYED_TAG, INFO_TAG, BANDS_TAG, SETS_TAG, ERROR_TAG)
        edges = sig[BANDS_TAG] | "Buckets" >> CandidateEdges(self.stage)
        if p.verify:
            edges = (
                (edges | "UnpackCandidates" >> beam.FlatMap(unpack_pairs), sig[SETS_TAG])
                | "Verify" >> VerifyEdges(self.stage, p.verify_threshold)
                | "BatchVerified" >> beam.BatchElements(min_batch_size=_VERIFIED_BATCH, max_batch_size=_VERIFIED_BATCH)
                | "PackVerified" >> beam.Map(pack_edges)
            )
        labels = edges | "Components" >> PackedConnectedComponents(p.max_rounds, p.on_unconverged, self.stage, p.shards)
        decisions = (
            {"labels": labels, "info": sig[INFO_TAG]}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "ToRoot" >> beam.ParDo(_ToRootDoFn(p.shards))
            | "GroupClusters" >> beam.GroupByKey()
            | "Decide" >> beam.ParDo(_DecideDoFn(p.shards))
        )
        applied = (
            {"docs": sig[KEYED_TAG], "decisions": decisions}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Apply" >> beam.ParDo(_ApplyDecisionDoFn(self.stage)).with_outputs(REJECTED_TAG, main="kept")
        )
        rejected = (applied[REJECTED_TAG], sig[ERROR_TAG]) | "FlattenRejected" >> beam.Flatten()
        return applied.kept, rejected
