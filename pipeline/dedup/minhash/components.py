"""Connected components of a large edge list in Beam: alternating Large-Star / Small-Star.

The algorithm is Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in
MapReduce and Beyond" (SoCC 2014). Nodes are 16-byte ids (``keys.node_id``), compared as bytes. With
Γ(u) the neighbours of u:

- **Large-Star**: for every node u, with m = min(Γ(u) ∪ {u}), connect every *larger* neighbour
  v > u of u to m (edges (v, m)); u's other edges are dropped (its smaller neighbours re-create them).
- **Small-Star**: for every node u, with N = {v ∈ Γ(u): v < u} and m = min(N ∪ {u}), connect every
  node of N ∪ {u} except m to m.

Both preserve connectivity; alternated, they turn every component into a star around its minimum
node in O(log^2 n) rounds (in practice a handful). The result is then a *converged* edge set: every
node is either a center (all its neighbours are larger) or a leaf (exactly one neighbour, which is
smaller). That property is checked locally at every node, so the number of violating nodes is a
cheap convergence test.

Edges travel as packed batches (``pipeline.dedup.packed``; the numpy steps are in ``graph``): elements ``(shard, bytes)`` whose records are grouped by
a shard of their source node, so one GroupByKey per step brings every node's whole neighbourhood
into one numpy batch, and a step costs a sort per shard instead of Python work per edge. Between
rounds the active edges are kept as directed pairs in both directions, sharded by source.

A Beam graph is static, so ``max_rounds`` rounds are unrolled. Each Large-Star step counts the
violating nodes of its input (free: it already groups each node's neighbours) and sends the count, as
one more group (key ``COUNT_KEY``, never a shard), through the Small-Star shuffle that follows it, whose
step sums that group: so a round is two runner stages (the two steps; the router runs fused with the
Small-Star step before it), with no global combine of its own. The count of round k is a side input of the router before round k + 2 (no
violating node gives no count, read as the side input's default 0): once it is 0 the edges were already
stars before round k, and stars stay the same stars under both steps, so they are routed around all
remaining rounds (their GroupByKeys then see no data); the rounds after convergence cost next to nothing
but their (empty) runner stages, and a round whose count is still being computed runs on stars to the
same stars. A final labelling step checks the result once more: if nodes still
violate, the transform fails loudly (``on_unconverged="fail"``, the default) or, with
``"continue"``, labels each unconverged node with the minimum of its neighbourhood: every group is
then still connected (a correct but incomplete dedup: fewer duplicates removed).

``PackedConnectedComponents`` maps packed edge batches to packed (node, root) batches;
``ConnectedComponents`` is the same on plain ``(u, v)`` elements (it packs and unpacks around it).

Metrics (namespace ``webrefinery.dedup``): ``<name>|cc_rounds_needed`` (rounds whose input still had
violating nodes, i.e. the rounds until convergence), ``<name>|cc_unconverged_nodes`` (after the last
round; 0 when converged), ``<name>|cc_nodes`` (nodes with at least one edge).
"""

from __future__ import annotations

from typing import Any, Iterable, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup import packed
from pipeline.dedup.keys import METRICS_NAMESPACE, SHARDS as DEFAULT_SHARDS
from pipeline.dedup.minhash import graph
from pipeline.dedup.minhash.graph import EDGE_COLUMNS

VIOLATIONS_TAG = "violations"
DONE_TAG = "done"
COUNT_KEY = -1  # the group of the Small-Star shuffle that carries Large-Star's violation counts (shards are >= 0)
_PACK_EDGES = 65536  # plain edges per packed batch in ConnectedComponents


def pardo(fn, *args):
    """``beam.ParDo(fn, *args)`` with its output type declared ``Any``: what Beam infers for these DoFns anyway
    (so the same coders), without inferring it from their bytecode at every graph construction (~2.5 ms per
    ParDo; a MinHash stage has ~60 of them)."""
    return beam.ParDo(fn, *args).with_output_types(Any)


class NotConvergedError(RuntimeError):
    """Connected components did not converge within ``max_rounds``."""


class _ShardedEdgesDoFn(beam.DoFn):
    """Base of the steps that re-shard edges: ``step(columns)`` gives the edge columns to send on (sharded by
    their source, column 1); they are collected over the bundle (``packed.ShardedColumns``) so that one
    bundle of many shard groups emits one element per shard, not one per group and shard."""

    def __init__(self, shards: int):
        self.shards = shards

    def start_bundle(self):
        self.out = packed.ShardedColumns(self.shards, key=1)

    def step(self, columns):  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, element):
        yield from self.out.add(self.step(packed.unpack_columns(element[1], EDGE_COLUMNS)))

    def finish_bundle(self):
        for element in self.out.flush():
            yield GlobalWindows.windowed_value(element)


class _DirectedDoFn(_ShardedEdgesDoFn):
    """Packed edges (u, v) -> directed pairs u -> v and v -> u, sharded by source (self-loops dropped)."""

    def step(self, columns):
        return graph.both_directions(*columns)


class _LargeStarDoFn(_ShardedEdgesDoFn):
    """(shard, directed pairs) -> Large-Star edges (v, m) sharded by v; the number of violating nodes (when
    not 0) as ``(COUNT_KEY, count)``, in the same output (the Small-Star step sums them)."""

    def process(self, element):
        edges, violations = graph.large_star(*packed.unpack_columns(element[1], EDGE_COLUMNS))
        if violations:
            yield COUNT_KEY, violations
        yield from self.out.add(edges)


class _SmallStarDoFn(_ShardedEdgesDoFn):
    """(shard, edges (u, w), u > w) -> Small-Star edges as directed pairs, both directions, sharded by source;
    the ``COUNT_KEY`` group (the Large-Star step's violation counts) -> their sum to ``violations`` (and the
    round counted in ``<name>|cc_rounds_needed``)."""

    def __init__(self, shards: int, name: str):
        super().__init__(shards)
        self.name = name

    def setup(self):
        self.rounds = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_rounds_needed")

    def process(self, element):
        if element[0] == COUNT_KEY:
            violations = sum(element[1])
            if violations > 0:
                self.rounds.inc()
            yield beam.pvalue.TaggedOutput(VIOLATIONS_TAG, violations)
            return
        yield from super().process(element)

    def step(self, columns):
        return graph.both_directions(*graph.small_star(*columns))


class _RouteDoFn(beam.DoFn):
    """Edges -> main output while the graph is still changing, ``done`` once it had converged."""

    def process(self, edge, violations):
        if violations == 0:
            yield beam.pvalue.TaggedOutput(DONE_TAG, edge)
        else:
            yield edge


class _LabelDoFn(beam.DoFn):
    """(shard, directed pairs of the final edges) -> packed (node, root); checks convergence at every node."""

    def __init__(self, name: str, max_rounds: int, on_unconverged: str):
        self.name, self.max_rounds, self.on_unconverged = name, max_rounds, on_unconverged

    def setup(self):
        self.unconverged = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_unconverged_nodes")
        self.nodes = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_nodes")

    def process(self, element):
        shard, blobs = element
        cols, unconverged = graph.labels(*packed.unpack_columns(blobs, EDGE_COLUMNS))
        if unconverged:
            self.unconverged.inc(unconverged)
            if self.on_unconverged == "fail":
                raise NotConvergedError(
                    f"{self.name}: connected components did not converge in max_rounds={self.max_rounds} "
                    f"rounds ({unconverged} nodes are neither a star center nor a leaf); "
                    "raise max_rounds, or set on_unconverged: continue to keep partial clusters"
                )
        if len(cols[0]):
            self.nodes.inc(len(cols[0]))
            yield shard, packed.pack_columns(cols)


class PackedConnectedComponents(beam.PTransform):
    """PCollection of (any key, packed edges (u, v)) -> PCollection of (shard, packed (node, root)).

    Every node of every edge gets one label; ``root`` is the minimum node of the component (when
    converged). Self-loops are ignored; duplicate edges are harmless."""

    def __init__(self, max_rounds: int = 20, on_unconverged: str = "fail", name: str = "cc", shards: int = DEFAULT_SHARDS):
        super().__init__()
        self.max_rounds, self.on_unconverged, self.metric_name, self.shards = max_rounds, on_unconverged, name, shards

    def expand(self, edges):
        active = edges | "Directed" >> pardo(_DirectedDoFn(self.shards))
        done = []
        counts = []  # per round: the violating nodes of its Large-Star step's input (no element: none)
        for k in range(1, self.max_rounds + 1):
            if k >= 3:
                # round k - 2's count: it comes out of an earlier runner stage than the edges routed here (round
                # k - 1's, whose Small-Star step emits the count of round k - 1), so the router stays fused with
                # that step; no count (no violating node): 0, the AsSingleton default
                routed = active | f"Route{k}" >> pardo(_RouteDoFn(), beam.pvalue.AsSingleton(counts[k - 3], default_value=0)).with_outputs(
                    DONE_TAG, main="active"
                )
                done.append(routed[DONE_TAG])
                active = routed.active
            small = (
                active
                | f"LargeStar{k}:Group" >> beam.GroupByKey()
                | f"LargeStar{k}" >> pardo(_LargeStarDoFn(self.shards))
                | f"SmallStar{k}:Group" >> beam.GroupByKey()
                | f"SmallStar{k}" >> pardo(_SmallStarDoFn(self.shards, self.metric_name)).with_outputs(VIOLATIONS_TAG, main="edges")
            )
            counts.append(small[VIOLATIONS_TAG])
            active = small.edges
        final = (*done, active) | "FinalEdges" >> beam.Flatten()
        return (
            final
            | "Label:Group" >> beam.GroupByKey()
            | "Label" >> pardo(_LabelDoFn(self.metric_name, self.max_rounds, self.on_unconverged))
        )


def pack_edges(edges) -> Tuple[int, bytes]:
    """A list of (u, v) 16-byte node pairs -> (0, packed edges)."""
    u_hi, u_lo = packed.nodes_to_columns([u for u, _ in edges])
    v_hi, v_lo = packed.nodes_to_columns([v for _, v in edges])
    return 0, packed.pack_columns((u_hi, u_lo, v_hi, v_lo))


def unpack_pairs(element) -> Iterable[Tuple[bytes, bytes]]:
    """(key, packed (node, root) or edge records) -> plain (16-byte node, 16-byte node) pairs."""
    u_hi, u_lo, v_hi, v_lo = packed.unpack_columns(element[1], EDGE_COLUMNS)
    return zip(packed.columns_to_nodes(u_hi, u_lo), packed.columns_to_nodes(v_hi, v_lo))


class ConnectedComponents(beam.PTransform):
    """PCollection of edges (u, v) of 16-byte node ids -> PCollection of (node, root) for every node of every edge.

    ``root`` is the minimum node of the component (when converged). Self-loops are ignored;
    duplicate edges are harmless. (``PackedConnectedComponents`` on packed batches of the edges.)"""

    def __init__(self, max_rounds: int = 20, on_unconverged: str = "fail", name: str = "cc", shards: int = DEFAULT_SHARDS):
        super().__init__()
        self.max_rounds, self.on_unconverged, self.metric_name, self.shards = max_rounds, on_unconverged, name, shards

    def expand(self, edges):
        return (
            edges
            | "Batch" >> beam.BatchElements(min_batch_size=_PACK_EDGES, max_batch_size=_PACK_EDGES)
            | "Pack" >> beam.Map(pack_edges)
            | "Packed" >> PackedConnectedComponents(self.max_rounds, self.on_unconverged, self.metric_name, self.shards)
            | "Unpack" >> beam.FlatMap(unpack_pairs)
        )
