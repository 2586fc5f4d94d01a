"""Deterministic Arrow shard writing and reading (the corridor between the two wings).

Rows go to shard ``stable_hash64(key) mod N``; inside a shard they are sorted by a total order, written as
zstd-compressed record batches of a fixed size to a temporary name, and renamed when complete. The same
input therefore gives byte-identical shards on every run, with any runner and any number of workers, and a
run that dies leaves no half-written ``.arrow`` file that a reader would pick up (temporary files end in
``.tmp``). ``manifest.json`` lists every shard with its row count, size and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import pyarrow as pa

from pipeline.document import Document, doc_key, rows_to_table, stable_hash64

BATCH_ROWS = 1024
SHARD_SUFFIX = ".arrow"


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def shard_of(key: str, num_shards: int) -> int:
    return stable_hash64(key) % num_shards


def _is_remote(path: str) -> bool:
    return "://" in path


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if _is_remote(directory) else os.path.join(directory, name)


def default_sort_key(doc: Mapping[str, Any]):
    """Total order inside a shard: doc_key, then content (ids repeat in real archives)."""
    return (doc_key(doc), doc.get("url") or "", doc.get("text") or "", doc.get("reason") or "")


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Write ``data`` under a temporary name beside ``path``, then rename: readers never see half a file.

    Local files are fsynced before the rename; remote paths (gs://, s3://) go through Beam's filesystems.
    """
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(tmp) as fh:
            fh.write(data)
        FileSystems.rename([tmp], [path])
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_table_atomically(table: pa.Table, path: str, compression: Optional[str] = "zstd") -> Dict[str, Any]:
    """Write ``table`` as an Arrow IPC file to ``path`` via a temporary name; return its manifest entry."""
    options = pa.ipc.IpcWriteOptions(compression=compression) if compression else pa.ipc.IpcWriteOptions()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write_batch(batch)
    data = sink.getvalue().to_pybytes()
    write_bytes_atomically(path, data)
    return {
        "name": os.path.basename(path),
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_shard(
    rows: Iterable[Document],
    out_dir: str,
    index: int,
    num_shards: int,
    schema: pa.Schema,
    prefix: str = "part",
    sort_key: Callable[[Mapping[str, Any]], Any] = default_sort_key,
    compression: Optional[str] = "zstd",
) -> Dict[str, Any]:
    """Sort ``rows`` deterministically and write them as shard ``index`` of ``num_shards``."""
    ordered = sorted(rows, key=sort_key)
    table = rows_to_table(ordered, schema)
    entry = write_table_atomically(table, _join(out_dir, shard_name(prefix, index, num_shards)), compression)
    entry["shard"] = index
    return entry


def complete_shard_set(
    entries: Sequence[Mapping[str, Any]],
    out_dir: str,
    num_shards: int,
    schema: pa.Schema,
    prefix: str = "part",
    compression: Optional[str] = "zstd",
) -> List[Dict[str, Any]]:
    """Write empty shards for indices that received no rows, so every run has exactly N shards."""
    have = {e["shard"]: dict(e) for e in entries}
    for index in range(num_shards):
        if index not in have:
            have[index] = write_shard([], out_dir, index, num_shards, schema, prefix, compression=compression)
    return [have[i] for i in range(num_shards)]


def write_json_atomically(obj: Any, path: str) -> None:
    write_bytes_atomically(path, (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode("utf-8"))


def list_shards(path: str) -> List[str]:
    """The complete ``.arrow`` files of a directory (or one file, or a glob), sorted by name.

    Works on local paths and on Beam filesystems (``gs://bucket/run/documents``). Temporary files of an
    unfinished write (``*.tmp``) are never returned.
    """
    from pipeline.io import fs

    if fs.is_remote(path):
        if path.endswith(SHARD_SUFFIX) and not any(c in path for c in "*?["):
            files = [path] if fs.exists(path) else []
        else:
            pattern = path if any(c in path for c in "*?[") else fs.join(path, "*")
            files = [f for f in fs.list_files(pattern) if f.endswith(SHARD_SUFFIX)]
    elif os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path) if f.endswith(SHARD_SUFFIX)]
    elif os.path.isfile(path):
        files = [path]
    else:
        files = [f for f in fs.list_files(path) if f.endswith(SHARD_SUFFIX)]
    if not files:
        raise FileNotFoundError(f"no Arrow shards ({SHARD_SUFFIX}) found at {path}")
    return sorted(files)


@contextlib.contextmanager
def _open_shard(file: str):
    """An Arrow IPC file reader: memory-mapped when local, read into memory from a Beam filesystem."""
    from pipeline.io import fs

    if fs.is_remote(file):
        yield fs.open_arrow_file(file)
        return
    with pa.memory_map(file) as source:
        yield pa.ipc.open_file(source)


def read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Read one Arrow IPC shard (or every shard of a directory) into a table."""
    tables = []
    for file in list_shards(path):
        with _open_shard(file) as reader:
            table = reader.read_all()
        tables.append(table.select(list(columns)) if columns else table)
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def iter_rows(path: str, columns: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """Rows of every shard under ``path`` as dicts, batch by batch (bounded memory)."""
    for file in list_shards(path):
        with _open_shard(file) as reader:
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                if columns:
                    batch = batch.select(list(columns))
                yield from batch.to_pylist()
