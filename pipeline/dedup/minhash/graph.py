"""numpy steps of MinHash dedup over packed column batches: LSH bucket records, star edges, and the
connected-components steps (Large-Star, Small-Star, labels; the algorithm is in ``components``).

Record layouts (``n`` records, columns back to back, see ``pipeline.dedup.packed``):

- bucket records: band hash (u8), node hi (u8), node lo (u8), band index (u2): 26 bytes each;
- edges and labels: source hi, source lo, target hi, target lo (u8 each): 32 bytes each.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from pipeline.dedup.packed import U16, U64, Columns, nodes_to_columns

BUCKET_COLUMNS = (U64, U64, U64, U16)
EDGE_COLUMNS = (U64, U64, U64, U64)


def less(a_hi, a_lo, b_hi, b_lo) -> np.ndarray:
    """Element-wise (a_hi, a_lo) < (b_hi, b_lo) for 128-bit values split in two uint64 columns."""
    return (a_hi < b_hi) | ((a_hi == b_hi) & (a_lo < b_lo))


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose ``keys`` differ from the previous row (row 0 included)."""
    n = len(keys[0])
    mask = np.zeros(n, dtype=bool)
    if n:
        mask[0] = True
        for k in keys:
            mask[1:] |= k[1:] != k[:-1]
    return mask


# ---------------------------------------------------------------------------------------------
# LSH buckets
# ---------------------------------------------------------------------------------------------


def bucket_records(nodes: Sequence[bytes], band_hashes: np.ndarray) -> Columns:
    """Bucket records of documents: ``band_hashes`` is (len(nodes), bands) uint64, one row per node."""
    hi, lo = nodes_to_columns(nodes)
    docs, bands = band_hashes.shape
    return (
        np.ascontiguousarray(band_hashes, dtype=U64).reshape(-1),
        np.repeat(hi, bands),
        np.repeat(lo, bands),
        np.tile(np.arange(bands, dtype=U16), docs),
    )


def star_edges_of_buckets(bhash, hi, lo, band) -> Tuple[Columns, np.ndarray]:
    """Bucket records -> (star edges (member, bucket minimum) as edge columns, sizes of the buckets with >= 2 members).

    A bucket is a (band index, band hash) pair; its members are distinct nodes; a bucket with k
    members gives k - 1 edges. Edges repeated within the batch are dropped."""
    if len(bhash) == 0:
        return tuple(np.empty(0, U64) for _ in range(4)), np.empty(0, np.int64)
    order = np.lexsort((lo, hi, band, bhash))
    bhash, hi, lo, band = bhash[order], hi[order], lo[order], band[order]
    distinct = _starts(bhash, band, hi, lo)
    bhash, hi, lo, band = bhash[distinct], hi[distinct], lo[distinct], band[distinct]
    new_bucket = _starts(bhash, band)
    first = np.flatnonzero(new_bucket)
    sizes = np.diff(np.append(first, len(bhash)))
    head = np.repeat(first, sizes)  # row of each record's bucket minimum
    member = ~new_bucket
    edges = (hi[member], lo[member], hi[head[member]], lo[head[member]])
    return unique_edges(*edges), sizes[sizes >= 2]


# ---------------------------------------------------------------------------------------------
# Graph steps (Kiveris et al., see components.py)
# ---------------------------------------------------------------------------------------------


def unique_edges(u_hi, u_lo, v_hi, v_lo) -> Columns:
    """Edges without repeats, sorted by (u, v)."""
    if len(u_hi) == 0:
        return u_hi, u_lo, v_hi, v_lo
    order = np.lexsort((v_lo, v_hi, u_lo, u_hi))
    cols = [c[order] for c in (u_hi, u_lo, v_hi, v_lo)]
    keep = _starts(*cols)
    return tuple(c[keep] for c in cols)


def both_directions(u_hi, u_lo, v_hi, v_lo) -> Columns:
    """Every edge (u, v) as the directed pairs u -> v and v -> u, self-loops dropped."""
    keep = (u_hi != v_hi) | (u_lo != v_lo)
    u_hi, u_lo, v_hi, v_lo = u_hi[keep], u_lo[keep], v_hi[keep], v_lo[keep]
    return (np.concatenate((u_hi, v_hi)), np.concatenate((u_lo, v_lo)), np.concatenate((v_hi, u_hi)), np.concatenate((v_lo, u_lo)))


def larger_first(u_hi, u_lo, v_hi, v_lo) -> Columns:
    """Every edge oriented (larger node, smaller node), self-loops dropped."""
    keep = (u_hi != v_hi) | (u_lo != v_lo)
    u_hi, u_lo, v_hi, v_lo = u_hi[keep], u_lo[keep], v_hi[keep], v_lo[keep]
    swap = less(u_hi, u_lo, v_hi, v_lo)
    return (np.where(swap, v_hi, u_hi), np.where(swap, v_lo, u_lo), np.where(swap, u_hi, v_hi), np.where(swap, u_lo, v_lo))


def _neighbourhoods(a_hi, a_lo, b_hi, b_lo):
    """Directed pairs a -> b, deduplicated and sorted: (columns, first row of each a, rows per a)."""
    cols = unique_edges(a_hi, a_lo, b_hi, b_lo)
    first = np.flatnonzero(_starts(cols[0], cols[1]))
    counts = np.diff(np.append(first, len(cols[0])))
    return cols, first, counts


def large_star(a_hi, a_lo, b_hi, b_lo) -> Tuple[Columns, int]:
    """Directed pairs (all of each source's neighbours) -> (Large-Star edges (v, m), violating nodes).

    For every node u with neighbours Γ(u) and m = min(Γ(u) ∪ {u}): an edge (v, m) for every v > u in
    Γ(u). A node violates convergence unless all its neighbours are larger or it has exactly one."""
    (a_hi, a_lo, b_hi, b_lo), first, counts = _neighbourhoods(a_hi, a_lo, b_hi, b_lo)
    if len(first) == 0:
        return (a_hi, a_lo, b_hi, b_lo), 0
    u_hi, u_lo = a_hi[first], a_lo[first]
    minb_hi, minb_lo = b_hi[first], b_lo[first]  # sorted: the smallest neighbour comes first
    below = less(minb_hi, minb_lo, u_hi, u_lo)
    violations = int(np.count_nonzero(below & (counts >= 2)))
    m_hi, m_lo = np.where(below, minb_hi, u_hi), np.where(below, minb_lo, u_lo)
    group = np.repeat(np.arange(len(first)), counts)
    larger = less(a_hi, a_lo, b_hi, b_lo)
    g = group[larger]
    return (b_hi[larger], b_lo[larger], m_hi[g], m_lo[g]), violations


def small_star(u_hi, u_lo, v_hi, v_lo) -> Columns:
    """Edges (u, w) with u > w (grouped by u) -> Small-Star edges (w, m) for w in N ∪ {u}, w != m.

    N is the set of u's smaller neighbours and m = min(N) (= min(N ∪ {u}))."""
    (a_hi, a_lo, b_hi, b_lo), first, counts = _neighbourhoods(*larger_first(u_hi, u_lo, v_hi, v_lo))
    if len(first) == 0:
        return a_hi, a_lo, b_hi, b_lo
    m_hi, m_lo = b_hi[first], b_lo[first]
    group = np.repeat(np.arange(len(first)), counts)
    rest = np.ones(len(a_hi), dtype=bool)
    rest[first] = False  # the rows of m itself
    g = group[rest]
    return (
        np.concatenate((b_hi[rest], a_hi[first])),
        np.concatenate((b_lo[rest], a_lo[first])),
        np.concatenate((m_hi[g], m_hi)),
        np.concatenate((m_lo[g], m_lo)),
    )


def labels(a_hi, a_lo, b_hi, b_lo) -> Tuple[Columns, int]:
    """Directed pairs of the final edges -> ((node, root) columns, number of unconverged nodes).

    root = min(Γ(u) ∪ {u}); a node is converged when all its neighbours are larger (a star center)
    or it has exactly one neighbour (a leaf)."""
    (a_hi, a_lo, b_hi, b_lo), first, counts = _neighbourhoods(a_hi, a_lo, b_hi, b_lo)
    if len(first) == 0:
        return (a_hi, a_lo, b_hi, b_lo), 0
    u_hi, u_lo = a_hi[first], a_lo[first]
    minb_hi, minb_lo = b_hi[first], b_lo[first]
    below = less(minb_hi, minb_lo, u_hi, u_lo)
    unconverged = int(np.count_nonzero(below & (counts >= 2)))
    return (u_hi, u_lo, np.where(below, minb_hi, u_hi), np.where(below, minb_lo, u_lo)), unconverged
