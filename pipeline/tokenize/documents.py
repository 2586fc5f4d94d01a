"""Finding and reading refined document shards (Arrow IPC files) for tokenizer training and tokenization.

Input may be a directory of ``*.arrow`` files, a run directory ``OUT`` (then ``OUT/documents`` is used),
a single file, or a glob, on local disk or a Beam filesystem (``gs://bucket/run/documents``). File names are sorted so every run sees the same order. Files whose names
start with ``.`` or that end in a temporary suffix are ignored (a shard writer renames a shard into place
only when it is complete).

Work is split per record batch: ``list_batch_refs`` gives ``(path, batch_index)`` pairs that Beam can
reshuffle, and ``read_batch_columns`` reads one batch's ``id``/``text`` (plus the ``source`` and
``record_offset`` that make ``pipeline.document.doc_key`` unique, when present).
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from pipeline.io import fs
from pipeline.tokenize import UsageError

REQUIRED_COLUMNS = ("id", "text")
KEY_COLUMNS = ("source", "record_offset")

BatchRef = Tuple[str, int]


def _is_shard_name(name: str) -> bool:
    return name.endswith(".arrow") and not name.startswith(".")


def resolve_document_files(spec: str) -> List[str]:
    """Sorted list of document shard paths named by ``spec`` (dir, run dir, file or glob); UsageError if none."""
    if not spec:
        raise UsageError("no input given: pass --input OUT/documents (a directory, .arrow file or glob)")
    if fs.is_remote(spec):
        return _resolve_remote(spec)
    if os.path.isdir(spec):
        files = sorted(os.path.join(spec, n) for n in os.listdir(spec) if _is_shard_name(n))
        if not files and os.path.isdir(os.path.join(spec, "documents")):
            return resolve_document_files(os.path.join(spec, "documents"))
        if not files:
            raise UsageError(f"input directory {spec} holds no .arrow document shards")
        return files
    if os.path.isfile(spec):
        return [spec]
    if glob.has_magic(spec):
        files = sorted(p for p in glob.glob(spec) if os.path.isfile(p) and _is_shard_name(os.path.basename(p)))
        if not files:
            raise UsageError(f"input pattern {spec} matches no .arrow document shards")
        return files
    raise UsageError(f"input {spec} does not exist")


def _resolve_remote(spec: str) -> List[str]:
    """The same rules on a Beam filesystem (gs://...): a glob, one .arrow object, or a folder prefix."""
    if glob.has_magic(spec):
        files = [p for p in fs.list_files(spec) if _is_shard_name(fs.basename(p))]
        if not files:
            raise UsageError(f"input pattern {spec} matches no .arrow document shards")
        return files
    if spec.endswith(".arrow") and fs.exists(spec):
        return [spec]
    for folder in (spec, fs.join(spec, "documents")):
        files = [p for p in fs.list_files(fs.join(folder, "*")) if _is_shard_name(fs.basename(p))]
        if files:
            return files
    raise UsageError(f"input {spec} holds no .arrow document shards (nor does {fs.join(spec, 'documents')})")


def open_shard(path: str) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file (memory-mapped, or a seekable stream on gs://...); UsageError naming the path
    when it is not one."""
    try:
        return fs.open_arrow_file(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"{path} is not an Arrow IPC file shard: {str(exc).splitlines()[0]}") from exc


def check_document_schema(path: str, schema: pa.Schema) -> None:
    """UsageError unless the shard has string ``id`` and ``text`` columns."""
    for name in REQUIRED_COLUMNS:
        idx = schema.get_field_index(name)
        if idx < 0:
            raise UsageError(f"{path} has no '{name}' column (columns: {', '.join(schema.names)})")
        typ = schema.field(idx).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise UsageError(f"{path}: column '{name}' is {typ}, expected a string")


def list_batch_refs(files: Sequence[str]) -> List[BatchRef]:
    """(path, batch_index) for every record batch of every file, in file then batch order."""
    refs: List[BatchRef] = []
    for path in files:
        reader = open_shard(path)
        check_document_schema(path, reader.schema)
        refs.extend((path, i) for i in range(reader.num_record_batches))
    return refs


class ShardBatchReader:
    """Reads record batches by reference, keeping the most recently opened file open (one per worker)."""

    def __init__(self) -> None:
        self._path: Optional[str] = None
        self._reader: Optional[pa.ipc.RecordBatchFileReader] = None

    def read(self, ref: BatchRef) -> pa.RecordBatch:
        path, index = ref
        if path != self._path:
            self._reader = open_shard(path)
            self._path = path
        return self._reader.get_batch(index)

    def read_columns(self, ref: BatchRef, with_keys: bool = False) -> Dict[str, list]:
        """One batch as python lists: ``id``, ``text`` (null -> ""), and ``key`` (doc_key) when asked."""
        batch = self.read(ref)
        return batch_columns(batch, with_keys=with_keys)


def batch_columns(batch: pa.RecordBatch, with_keys: bool = False) -> Dict[str, list]:
    """``id``/``text`` lists of a record batch (null text -> ""), plus ``key`` = doc_key when asked."""
    names = batch.schema.names
    ids = ["" if i is None else i for i in batch.column(names.index("id")).to_pylist()]
    texts = [t if t is not None else "" for t in batch.column(names.index("text")).to_pylist()]
    out: Dict[str, list] = {"id": ids, "text": texts}
    if with_keys:
        out["key"] = batch_doc_keys(batch)
    return out


def batch_doc_keys(batch: pa.RecordBatch) -> List[str]:
    """``pipeline.document.doc_key`` of every row (id, source, record_offset joined by \x1f; absent -> None)."""
    names = batch.schema.names
    cols = [batch.column(names.index(c)).to_pylist() if c in names else [None] * batch.num_rows
            for c in ("id",) + KEY_COLUMNS]
    return [f"{i}\x1f{s}\x1f{o}" for i, s, o in zip(*cols)]


def write_document_shards(docs: Sequence[Dict[str, object]], folder: str, num_files: int = 1,
                          batch_rows: int = 64) -> List[str]:
    """Write ``docs`` (dicts with ``id``, ``text``, optional ``url``/``source``/``record_offset``) as zstd
    Arrow IPC document shards ``folder/part-i.arrow``, round-robin over ``num_files``.

    For tests and benchmarks that need refined-looking input; the pipeline's own deterministic shard
    writer is pipeline/io/shards.py."""
    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("text", pa.string()),
                        ("source", pa.string()), ("record_offset", pa.int64())])
    os.makedirs(folder, exist_ok=True)
    paths = []
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    for f in range(num_files):
        part = list(docs[f::num_files])
        path = os.path.join(folder, f"part-{f:05d}.arrow")
        with pa.ipc.new_file(path, schema, options=options) as writer:
            for start in range(0, len(part), batch_rows):
                rows = [{name: doc.get(name) for name in schema.names} for doc in part[start:start + batch_rows]]
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
        paths.append(path)
    return paths
