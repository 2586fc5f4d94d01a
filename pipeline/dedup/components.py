"""Connected components of a large edge list in Beam: alternating Large-Star / Small-Star.

The algorithm is Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in
MapReduce and Beyond" (SoCC 2014). Node ids are any totally ordered, hashable values (here 16-byte
strings). With Γ(u) the neighbours of u:

- **Large-Star**: for every node u, with m = min(Γ(u) ∪ {u}), connect every *larger* neighbour
  v > u of u to m (edges (v, m)); u's other edges are dropped (its smaller neighbours re-create them).
- **Small-Star**: for every node u, with N = {v ∈ Γ(u): v < u} and m = min(N ∪ {u}), connect every
  node of N ∪ {u} except m to m.

Both preserve connectivity; alternated, they turn every component into a star around its minimum
node in O(log^2 n) rounds (in practice a handful). The result is then a *converged* edge set: every
node is either a center (all its neighbours are larger) or a leaf (exactly one neighbour, which is
smaller). That property is checked locally at every node, so the number of violating nodes is a
cheap convergence test.

A Beam graph is static, so ``max_rounds`` rounds are unrolled. Each Large-Star step counts the
violating nodes of its input (free: it already groups each node's neighbours). The count of round k
is a side input of the router before round k + 2: once it is 0 the edges are already stars and are
routed around all remaining rounds (their GroupByKeys then see no data), so the rounds after
convergence cost next to nothing. A final labelling step checks the result once more: if nodes still
violate, the transform fails loudly (``on_unconverged="fail"``, the default) or, with
``"continue"``, labels each unconverged node with the minimum of its neighbourhood: every group is
then still connected (a correct but incomplete dedup: fewer duplicates removed).

Metrics (namespace ``webrefinery.dedup``): ``<name>|cc_rounds_needed`` (rounds whose input still had
violating nodes, i.e. the rounds until convergence), ``<name>|cc_unconverged_nodes`` (after the last
round; 0 when converged).
"""

from __future__ import annotations

from typing import Any, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.dedup.lsh import METRICS_NAMESPACE

VIOLATIONS_TAG = "violations"
DONE_TAG = "done"


class NotConvergedError(RuntimeError):
    """Connected components did not converge within ``max_rounds``."""


def both_directions(edge):
    u, v = edge
    yield (u, v)
    yield (v, u)


def is_converged_node(u, neighbours: set) -> bool:
    """True when u is a star center (all neighbours larger) or a leaf (one neighbour, smaller)."""
    if all(v > u for v in neighbours):
        return True
    return len(neighbours) == 1


class _LargeStarDoFn(beam.DoFn):
    """(u, neighbours) -> edges (v, m) for v > u, m = min(Γ(u) ∪ {u}); counts violating nodes."""

    def process(self, element):
        u, nbrs = element
        nbrs = set(nbrs)
        nbrs.discard(u)
        if not nbrs:
            return
        if not is_converged_node(u, nbrs):
            yield beam.pvalue.TaggedOutput(VIOLATIONS_TAG, 1)
        m = min(min(nbrs), u)
        for v in nbrs:
            if v > u:
                yield (v, m)


def small_star(element):
    """(u, smaller neighbours) -> edges (w, m) for w in N ∪ {u}, w != m, m = min(N ∪ {u})."""
    u, smaller = element
    nodes = set(smaller)
    nodes.add(u)
    m = min(nodes)
    for w in nodes:
        if w != m:
            yield (w, m)


def orient_larger_first(edge):
    u, v = edge
    return (u, v) if u > v else (v, u)


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
    """(u, neighbours) of the final edges -> (u, root); checks convergence at every node."""

    def __init__(self, name: str, max_rounds: int, on_unconverged: str):
        self.name, self.max_rounds, self.on_unconverged = name, max_rounds, on_unconverged

    def setup(self):
        self.unconverged = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_unconverged_nodes")
        self.nodes = Metrics.counter(METRICS_NAMESPACE, f"{self.name}|cc_nodes")

    def process(self, element):
        u, nbrs = element
        nbrs = set(nbrs)
        nbrs.discard(u)
        if not nbrs:
            return
        self.nodes.inc()
        m = min(nbrs)
        if not is_converged_node(u, nbrs):
            self.unconverged.inc()
            if self.on_unconverged == "fail":
                raise NotConvergedError(
                    f"{self.name}: connected components did not converge in max_rounds={self.max_rounds} "
                    f"rounds (node with {len(nbrs)} neighbours is neither a star center nor a leaf); "
                    "raise max_rounds, or set on_unconverged: continue to keep partial clusters"
                )
        yield (u, min(m, u))


class ConnectedComponents(beam.PTransform):
    """PCollection of edges (u, v) -> PCollection of (node, root) for every node of every edge.

    ``root`` is the minimum node of the component (when converged). Self-loops are ignored;
    duplicate edges are harmless."""

    def __init__(self, max_rounds: int = 20, on_unconverged: str = "fail", name: str = "cc"):
        super().__init__()
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        if on_unconverged not in ("fail", "continue"):
            raise ValueError(f"on_unconverged must be 'fail' or 'continue', got {on_unconverged!r}")
        self.max_rounds, self.on_unconverged, self.metric_name = max_rounds, on_unconverged, name

    def expand(self, edges):
        active = edges | "DropSelfLoops" >> beam.Filter(lambda e: e[0] != e[1])
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
                | f"LargeStar{k}:Both" >> beam.FlatMap(both_directions)
                | f"LargeStar{k}:Group" >> beam.GroupByKey()
                | f"LargeStar{k}" >> beam.ParDo(_LargeStarDoFn()).with_output_types(Tuple[Any, Any]).with_outputs(VIOLATIONS_TAG, main="edges")
            )
            previous = (
                large[VIOLATIONS_TAG]
                | f"Violations{k}" >> beam.CombineGlobally(sum)
                | f"RecordRound{k}" >> beam.ParDo(_RecordRound(self.metric_name))
            )
            active = (
                large.edges
                | f"SmallStar{k}:Orient" >> beam.Map(orient_larger_first)
                | f"SmallStar{k}:Group" >> beam.GroupByKey()
                | f"SmallStar{k}" >> beam.FlatMap(small_star)
            )
        final = (*done, active) | "FinalEdges" >> beam.Flatten()
        return (
            final
            | "Label:Both" >> beam.FlatMap(both_directions)
            | "Label:Group" >> beam.GroupByKey()
            | "Label" >> beam.ParDo(_LabelDoFn(self.metric_name, self.max_rounds, self.on_unconverged))
        )
