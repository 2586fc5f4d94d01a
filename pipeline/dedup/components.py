"""Connected components of a large edge list in Beam: alternating Large-Star / Small-Star.

The algorithm is Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in
MapReduce and Beyond" (SoCC 2014). Nodes are 16-byte ids (``lsh.node_id``), compared as bytes. With
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

Edges travel as packed batches (``packed``): elements ``(shard, bytes)`` whose records are grouped by
a shard of their source node, so one GroupByKey per step brings every node's whole neighbourhood
into one numpy batch, and a step costs a sort per shard instead of Python work per edge. Between
rounds the active edges are kept as directed pairs in both directions, sharded by source.

A Beam graph is static, so ``max_rounds`` rounds are unrolled. Each Large-Star step counts the
violating nodes of its input (free: it already groups each node's neighbours). The count of round k
is a side input of the router before round k + 2: once it is 0 the edges are already stars and are
routed around all remaining rounds (their GroupByKeys then see no data), so the rounds after
convergence cost next to nothing. A final labelling step checks the result once more: if nodes still
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

from typing import Iterable, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.dedup import packed
from pipeline.dedup.lsh import DEFAULT_SHARDS, METRICS_NAMESPACE

VIOLATIONS_TAG = "violations"
DONE_TAG = "done"
_PACK_EDGES = 65536  # plain edges per packed batch in ConnectedComponents


class NotConvergedError(RuntimeError):
    """Connected components did not converge within ``max_rounds``."""


def directed_by_source(blob: bytes, shards: int) -> Iterable[Tuple[int, bytes]]:
    """Packed edges (u, v) -> packed directed pairs u -> v and v -> u, sharded by source (self-loops dropped)."""
    cols = packed.both_directions(*packed.unpack_columns(blob, packed.EDGE_COLUMNS))
    return packed.split_by_shard(packed.shard_of(cols[1], shards), cols)


class _DirectedDoFn(beam.DoFn):
    def __init__(self, shards: int):
        self.shards = shards

    def process(self, element):
        yield from directed_by_source(element[1], self.shards)


class _LargeStarDoFn(beam.DoFn):
    """(shard, directed pairs) -> Large-Star edges (v, m) sharded by v; violating nodes to ``violations``."""

    def __init__(self, shards: int):
        self.shards = shards

    def process(self, element):
        edges, violations = packed.large_star(*packed.unpack_columns(element[1], packed.EDGE_COLUMNS))
        if violations:
            yield beam.pvalue.TaggedOutput(VIOLATIONS_TAG, violations)
        yield from packed.split_by_shard(packed.shard_of(edges[1], self.shards), edges)


class _SmallStarDoFn(beam.DoFn):
    """(shard, edges (u, w), u > w) -> Small-Star edges as directed pairs, both directions, sharded by source."""

    def __init__(self, shards: int):
        self.shards = shards

    def process(self, element):
        cols = packed.both_directions(*packed.small_star(*packed.unpack_columns(element[1], packed.EDGE_COLUMNS)))
        yield from packed.split_by_shard(packed.shard_of(cols[1], self.shards), cols)


class _RouteDoFn(beam.DoFn):
    """Edges -> main output while the graph is still changing, ``done`` once it had converged."""

    def process(self, edge, violations):
        if violations == 0:
            yield beam.pvalue.TaggedOutput(DONE_TAG, edge)
        else:
            yield edge


class _RecordRound(beam.DoFn):
    def __init__(self, name: str):
        self.name = name

    def setup(self):
        self.rounds = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_rounds_needed")

    def process(self, violations):
        if violations > 0:
            self.rounds.inc()
        yield violations


class _LabelDoFn(beam.DoFn):
    """(shard, directed pairs of the final edges) -> packed (node, root); checks convergence at every node."""

    def __init__(self, name: str, max_rounds: int, on_unconverged: str):
        self.name, self.max_rounds, self.on_unconverged = name, max_rounds, on_unconverged

    def setup(self):
        self.unconverged = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_unconverged_nodes")
        self.nodes = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_nodes")

    def process(self, element):
        shard, blobs = element
        cols, unconverged = packed.labels(*packed.unpack_columns(blobs, packed.EDGE_COLUMNS))
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


def _check_options(max_rounds: int, on_unconverged: str, shards: int) -> None:
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if on_unconverged not in ("fail", "continue"):
        raise ValueError(f"on_unconverged must be 'fail' or 'continue', got {on_unconverged!r}")
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")


class PackedConnectedComponents(beam.PTransform):
    """PCollection of (any key, packed edges (u, v)) -> PCollection of (shard, packed (node, root)).

    Every node of every edge gets one label; ``root`` is the minimum node of the component (when
    converged). Self-loops are ignored; duplicate edges are harmless."""

    def __init__(self, max_rounds: int = 20, on_unconverged: str = "fail", name: str = "cc", shards: int = DEFAULT_SHARDS):
        super().__init__()
        _check_options(max_rounds, on_unconverged, shards)
        self.max_rounds, self.on_unconverged, self.metric_name, self.shards = max_rounds, on_unconverged, name, shards

    def expand(self, edges):
        active = edges | "Directed" >> beam.ParDo(_DirectedDoFn(self.shards))
        done = []
        previous = None  # violations of the input of the previous round's Large-Star
        for k in range(1, self.max_rounds + 1):
            if previous is not None:
                routed = active | f"Route{k}" >> beam.ParDo(_RouteDoFn(), beam.pvalue.AsSingleton(previous)).with_outputs(
                    DONE_TAG, main="active"
                )
                done.append(routed[DONE_TAG])
                active = routed.active
            large = (
                active
                | f"LargeStar{k}:Group" >> beam.GroupByKey()
                | f"LargeStar{k}" >> beam.ParDo(_LargeStarDoFn(self.shards)).with_outputs(VIOLATIONS_TAG, main="edges")
            )
            previous = (
                large[VIOLATIONS_TAG]
                | f"Violations{k}" >> beam.CombineGlobally(sum)
                | f"RecordRound{k}" >> beam.ParDo(_RecordRound(self.metric_name))
            )
            active = (
                large.edges
                | f"SmallStar{k}:Group" >> beam.GroupByKey()
                | f"SmallStar{k}" >> beam.ParDo(_SmallStarDoFn(self.shards))
            )
        final = (*done, active) | "FinalEdges" >> beam.Flatten()
        return (
            final
            | "Label:Group" >> beam.GroupByKey()
            | "Label" >> beam.ParDo(_LabelDoFn(self.metric_name, self.max_rounds, self.on_unconverged))
        )


def pack_edges(edges) -> Tuple[int, bytes]:
    """A list of (u, v) 16-byte node pairs -> (0, packed edges)."""
    u_hi, u_lo = packed.nodes_to_columns([u for u, _ in edges])
    v_hi, v_lo = packed.nodes_to_columns([v for _, v in edges])
    return 0, packed.pack_columns((u_hi, u_lo, v_hi, v_lo))


def unpack_pairs(element) -> Iterable[Tuple[bytes, bytes]]:
    """(key, packed (node, root) or edge records) -> plain (16-byte node, 16-byte node) pairs."""
    u_hi, u_lo, v_hi, v_lo = packed.unpack_columns(element[1], packed.EDGE_COLUMNS)
    return zip(packed.columns_to_nodes(u_hi, u_lo), packed.columns_to_nodes(v_hi, v_lo))


class ConnectedComponents(beam.PTransform):
    """PCollection of edges (u, v) of 16-byte node ids -> PCollection of (node, root) for every node of every edge.

    ``root`` is the minimum node of the component (when converged). Self-loops are ignored;
    duplicate edges are harmless. (``PackedConnectedComponents`` on packed batches of the edges.)"""

    def __init__(self, max_rounds: int = 20, on_unconverged: str = "fail", name: str = "cc", shards: int = DEFAULT_SHARDS):
        super().__init__()
        _check_options(max_rounds, on_unconverged, shards)
        self.max_rounds, self.on_unconverged, self.metric_name, self.shards = max_rounds, on_unconverged, name, shards

    def expand(self, edges):
        return (
            edges
            | "Batch" >> beam.BatchElements(min_batch_size=_PACK_EDGES, max_batch_size=_PACK_EDGES)
            | "Pack" >> beam.Map(pack_edges)
            | "Packed" >> PackedConnectedComponents(self.max_rounds, self.on_unconverged, self.metric_name, self.shards)
            | "Unpack" >> beam.FlatMap(unpack_pairs)
        )
