"""Compact forms for the dedup shuffles: packed numpy batches of LSH bucket records and graph edges,
and documents as bytes.

At 450 bands a document has 450 bucket entries. As single Beam elements each costs microseconds of
Python and, on the in-process runner, ~150 bytes of decoded objects in a GroupByKey buffer. Here the
entries and the graph edges travel as *packed batches* instead: one Beam element ``(shard, bytes)``
holds many records stored column by column (little-endian uint64, then uint16), and the per-shard work
(finding a bucket's members, a Large-Star or Small-Star step, labelling) is numpy sorting over the
whole batch. A record's shard is a function of its grouping key only (a bucket's band hash, an edge's
source node), so all records of one bucket or one node meet in one shard group, exactly as a
GroupByKey on the key itself would bring them together. The number of shards changes how work is
spread over workers, never a result.

Node ids are the 16-byte BLAKE2b ids of ``lsh.node_id``, held as two uint64 columns ``hi``/``lo``
(the big-endian halves), so (hi, lo) order is the byte order of the 16-byte ids.

Record layouts (``n`` records, columns back to back):

- bucket records: band hash (u8), node hi (u8), node lo (u8), band index (u2): 26 bytes each;
- edges and labels: source hi, source lo, target hi, target lo (u8 each): 32 bytes each.

Documents waiting in a dedup GroupByKey travel as ``pack_document`` bytes (UTF-8 JSON, never pickle, so
nothing in a shuffle can execute code when it is read back): the in-process
runner keeps every grouped value *decoded* until the group is read, and a decoded document costs
2-3 times its UTF-8 size (a str with one non-ASCII character stores 2 or 4 bytes per character, plus
a dict and its key strings), while a bytes value costs its length. The round trip is exact for what a
Document holds (str, int, float, bool, None, lists; numpy scalars become the equal Python number, which
the Arrow writer stores identically).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

U64 = np.dtype("<u8")
U16 = np.dtype("<u2")
BUCKET_COLUMNS = (U64, U64, U64, U16)
EDGE_COLUMNS = (U64, U64, U64, U64)

Columns = Tuple[np.ndarray, ...]


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays that stages may leave on a document."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a document value of type {type(value).__name__} cannot go through a dedup shuffle")


def pack_document(doc: Dict[str, Any]) -> bytes:
    """A document as compact bytes for a shuffle (``unpack_document`` restores it)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=_plain).encode("utf-8", "surrogatepass")


def unpack_document(blob: bytes) -> Dict[str, Any]:
    """The document of ``pack_document`` bytes."""
    return json.loads(blob.decode("utf-8", "surrogatepass"))


def nodes_to_columns(nodes: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """16-byte node ids -> (hi, lo) uint64 columns."""
    raw = np.frombuffer(b"".join(nodes), dtype=">u8")
    if raw.size != 2 * len(nodes):
        raise ValueError("node ids must be 16 bytes each")
    raw = raw.reshape(-1, 2).astype(U64)
    return np.ascontiguousarray(raw[:, 0]), np.ascontiguousarray(raw[:, 1])


def columns_to_nodes(hi: np.ndarray, lo: np.ndarray) -> List[bytes]:
    """(hi, lo) uint64 columns -> 16-byte node ids."""
    raw = np.empty((len(hi), 2), dtype=">u8")
    raw[:, 0] = hi
    raw[:, 1] = lo
    data = raw.tobytes()
    return [data[i : i + 16] for i in range(0, len(data), 16)]


def pack_columns(columns: Sequence[np.ndarray]) -> bytes:
    """Columns of equal length -> one bytes object (column after column)."""
    return b"".join(np.ascontiguousarray(c).tobytes() for c in columns)


def unpack_columns(blobs, dtypes: Sequence[np.dtype]) -> Columns:
    """One packed bytes object, or an iterable of them, -> columns (concatenated over the blobs)."""
    if isinstance(blobs, (bytes, bytearray, memoryview)):
        blobs = [blobs]
    width = sum(dt.itemsize for dt in dtypes)
    parts: List[List[np.ndarray]] = [[] for _ in dtypes]
    for blob in blobs:
        n, rest = divmod(len(blob), width)
        if rest:
            raise ValueError(f"packed batch of {len(blob)} bytes is not a whole number of {width}-byte records")
        offset = 0
        for i, dt in enumerate(dtypes):
            parts[i].append(np.frombuffer(blob, dtype=dt, count=n, offset=offset))
            offset += n * dt.itemsize
    return tuple(np.concatenate(p) if len(p) != 1 else p[0] for p in parts) if parts[0] else tuple(np.empty(0, dt) for dt in dtypes)


def split_by_shard(shard_ids: np.ndarray, columns: Sequence[np.ndarray]) -> Iterator[Tuple[int, bytes]]:
    """(shard, packed columns) for every shard present in ``shard_ids`` (one row per record)."""
    if len(shard_ids) == 0:
        return
    order = np.argsort(shard_ids, kind="stable")
    ids = shard_ids[order]
    columns = [c[order] for c in columns]
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(ids)]))
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield int(ids[s]), pack_columns([c[s:e] for c in columns])


def shard_of(values: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each uint64 key (a band hash or a node's ``lo``; both are uniform hashes)."""
    return (values % np.uint64(shards)).astype(np.int64)


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
