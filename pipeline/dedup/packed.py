"""Compact forms for the dedup shuffles: documents as bytes, packed numpy column batches, and
line batches sharded by key.

Many small records (LSH bucket entries, graph edges, keys and priorities, documents) would each cost
microseconds of Python as single Beam elements and, on the in-process runner, ~150 bytes of decoded
objects in a GroupByKey buffer. Here they travel as *batches* instead: one Beam element ``(shard,
bytes)`` holds many records, and the per-shard work is numpy sorting or one Python loop over the whole
batch. A record's shard is a function of its grouping key only (a bucket's band hash, an edge's source
node, a document's node or group key), so all records of one key meet in one shard group, exactly as a
GroupByKey on the key itself would bring them together. The number of shards changes how work is
spread over workers, never a result.

- *Column batches* (``pack_columns``/``unpack_columns``): fixed-width records stored column by column
  (little-endian uint64, uint16); node ids are the 16-byte ids of ``keys.node_id`` held as two uint64
  columns ``hi``/``lo`` (the big-endian halves), so (hi, lo) order is the byte order of the ids.
- *Record batches* (``RecordBatches``): variable records (``pack_record``: Beam's primitive coder, with
  JSON for what it cannot write, never a pickle), collected per shard during a bundle and emitted as one
  ``(shard, bytes)`` element per shard when a shard's buffer is full and at the end of the bundle.
- *Documents* travel as ``pack_document`` bytes (UTF-8 JSON, never pickle, so nothing in a shuffle can
  execute code when it is read back): the in-process runner keeps every grouped value *decoded* until the
  group is read, and a decoded document costs 2-3 times its UTF-8 size, while bytes cost their length.
  The round trip is exact for what a Document holds (str, int, float, bool, None, lists; numpy scalars
  become the equal Python number, which the Arrow writer stores identically).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple

import numpy as np
from apache_beam.coders import coder_impl

U64 = np.dtype("<u8")
U16 = np.dtype("<u2")

Columns = Tuple[np.ndarray, ...]


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays that stages may leave on a document."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a document value of type {type(value).__name__} cannot go through a dedup shuffle")


def pack_document(doc: Any) -> bytes:
    """A document (or any record of JSON values holding documents) as compact bytes for a shuffle, one
    line of UTF-8 JSON without a raw newline (``unpack_document`` restores it)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=_plain).encode("utf-8", "surrogatepass")


def unpack_document(blob: bytes) -> Any:
    """The document (record) of ``pack_document`` bytes."""
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




def node_shard(node: bytes, shards: int) -> int:
    """Shard of a 16-byte node id: its ``lo`` half modulo ``shards`` (as ``shard_of`` on the lo column)."""
    return int.from_bytes(node[8:16], "big") % shards


def key_shard(key, shards: int) -> int:
    """Shard of a group key (bytes or str): CRC-32 of its bytes modulo ``shards`` (stable across processes)."""
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    return zlib.crc32(data) % shards


RECORD_BATCH_BYTES = 1 << 20  # a shard's record batch is emitted once it holds this many bytes
COLUMN_BATCH_RECORDS = 1 << 20  # column records collected before they are split by shard and emitted

_LENGTH = struct.Struct("<I")


class _JsonFallbackImpl(coder_impl.StreamCoderImpl):
    """What ``pack_record`` does with a value Beam's primitive coder has no type tag for (an int beyond
    64 bits, a numpy scalar, a str subclass): its JSON, as ``pack_document`` would write it (never a pickle)."""

    def encode_to_stream(self, value, stream, nested):
        stream.write(pack_document(value), nested)

    def decode_from_stream(self, stream, nested):
        return unpack_document(stream.read_all(nested))


_RECORDS = coder_impl.FastPrimitivesCoderImpl(_JsonFallbackImpl())


class _SurrogateStr(str):
    """A string that UTF-8 cannot encode (a lone surrogate, as a reader's ``surrogateescape`` leaves):
    being a str subclass, Beam's primitive coder hands it to ``_JsonFallbackImpl``, which writes it
    with ``surrogatepass``; it decodes as a plain str."""


def _mark_surrogates(value: Any) -> Any:
    """``value`` with every string UTF-8 cannot encode wrapped as ``_SurrogateStr`` (lists, tuples and
    dicts walked; other values as they are)."""
    if type(value) is str:
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return _SurrogateStr(value)
    if isinstance(value, list):
        return [_mark_surrogates(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_mark_surrogates(v) for v in value)
    if isinstance(value, dict):
        return {_mark_surrogates(k): _mark_surrogates(v) for k, v in value.items()}
    return value


def pack_record(record: Any) -> bytes:
    """A record of a record batch (a document, or a list/tuple of keys, priorities and a document) as
    bytes: Beam's primitive coder (tagged None, bool, int, float, str, bytes, list, tuple, dict, ~5x
    faster than JSON both ways, exact for every value a Document holds), prefixed ``F``. A record with
    a string UTF-8 cannot encode (a lone surrogate) is coded again with those strings marked, so they
    alone go as JSON with ``surrogatepass`` and the bytes beside them stay bytes. Values of other types
    go as their JSON (``_JsonFallbackImpl``), so nothing is ever pickled, and what cannot be JSON
    either is a TypeError."""
    try:
        return b"F" + _RECORDS.encode(record)
    except UnicodeEncodeError:
        return b"F" + _RECORDS.encode(_mark_surrogates(record))


def unpack_record(blob) -> Any:
    """The record of ``pack_record`` bytes."""
    if blob[:1] != b"F":
        raise ValueError("not a pack_record record")
    return _RECORDS.decode(bytes(blob[1:]))


class RecordBatches:
    """Records (``pack_record`` bytes) collected per shard: ``add`` returns a full shard's batch
    ``(shard, bytes)`` once its buffer reaches ``limit`` bytes (default ``RECORD_BATCH_BYTES``; else
    None), ``flush`` every other one. A batch is the records back to back, each after its length
    (uint32, little-endian). A DoFn adds in ``process`` and flushes in ``finish_bundle``."""

    def __init__(self, limit: int | None = None):
        self.limit = RECORD_BATCH_BYTES if limit is None else limit
        self.parts: Dict[int, List[bytes]] = {}
        self.sizes: Dict[int, int] = {}

    def add(self, shard: int, record: bytes):
        buf = self.parts.get(shard)
        if buf is None:
            buf = self.parts[shard] = []
            self.sizes[shard] = 0
        buf.append(_LENGTH.pack(len(record)))
        buf.append(record)
        self.sizes[shard] += len(record) + 4
        if self.sizes[shard] < self.limit:
            return None
        del self.parts[shard], self.sizes[shard]
        return shard, b"".join(buf)

    def flush(self) -> Iterator[Tuple[int, bytes]]:
        parts, self.parts, self.sizes = self.parts, {}, {}
        for shard, buf in parts.items():
            yield shard, b"".join(buf)


_CODEC = None


def _codec():
    global _CODEC
    if _CODEC is None:
        import pyarrow as pa

        _CODEC = pa.Codec("zstd", compression_level=1)
    return _CODEC


def compress_batch(blob: bytes) -> bytes:
    """A record batch as zstd (level 1) bytes after its length (uint32): documents wait in a shuffle at
    ~2.6x less memory for ~2 ms of CPU per MB (``decompress_batch`` restores it)."""
    return _LENGTH.pack(len(blob)) + _codec().compress(blob, asbytes=True)


def decompress_batch(blob: bytes) -> bytes:
    """The record batch of ``compress_batch`` bytes."""
    (size,) = _LENGTH.unpack_from(blob, 0)
    return _codec().decompress(memoryview(blob)[4:], decompressed_size=size, asbytes=True)


def raw_records_of(blobs: Iterable[bytes]) -> Iterator[memoryview]:
    """The records of record batches (``RecordBatches``) as the bytes that were added, in order."""
    for blob in blobs:
        view, pos, end = memoryview(blob), 0, len(blob)
        while pos < end:
            (length,) = _LENGTH.unpack_from(blob, pos)
            pos += 4
            yield view[pos : pos + length]
            pos += length


def records_of(blobs: Iterable[bytes]) -> Iterator[Any]:
    """The records of record batches (``RecordBatches``), in order."""
    for record in raw_records_of(blobs):
        yield unpack_record(record)


class ShardedColumns:
    """Column batches collected over a bundle and split by shard when ``limit`` records are waiting
    (``add`` returns the (shard, packed columns) elements then, else nothing) and at ``flush``, so a DoFn
    that gets many shard groups in one bundle emits one element per shard, not one per group and shard.
    ``key`` is the column whose value (a uniform hash) picks the shard; ``limit`` defaults to
    ``COLUMN_BATCH_RECORDS``."""

    def __init__(self, shards: int, key: int, limit: int | None = None):
        self.shards, self.key = shards, key
        self.limit = COLUMN_BATCH_RECORDS if limit is None else limit
        self.parts: List[Columns] = []
        self.count = 0

    def add(self, columns: Columns) -> Iterator[Tuple[int, bytes]]:
        if len(columns[0]):
            self.parts.append(columns)
            self.count += len(columns[0])
        return self.flush() if self.count >= self.limit else iter(())

    def flush(self) -> Iterator[Tuple[int, bytes]]:
        if not self.parts:
            return iter(())
        parts, self.parts, self.count = self.parts, [], 0
        cols = tuple(np.concatenate(c) if len(parts) > 1 else c[0] for c in zip(*parts))
        return split_by_shard(shard_of(cols[self.key], self.shards), cols)
