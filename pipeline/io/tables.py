"""Parquet and Arrow (IPC file or stream) inputs -> Documents, batch by batch.

A table needs a ``text`` column; ``id``, ``url`` and ``warc_date`` are read when present. ``record_offset``
is the 0-based row. Local files are memory-mapped; remote ones are read into memory.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, List

from pipeline.document import make_document
from pipeline.errors import UserValueError
from pipeline.io.contract import R_NO_TEXT, Record, first_str, synthetic_id
from pipeline.io.remote import is_filesystem_url, is_http_url, local_path, open_input

_TABLE_COLUMNS = ("id", "text", "url", "warc_date")
_BATCH_ROWS = 1024


def _table_columns(path: str, names: List[str]) -> List[str]:
    if "text" not in names:
        raise UserValueError(f"{path} has no 'text' column (columns: {', '.join(names)})")
    return [c for c in _TABLE_COLUMNS if c in names]


def _batch_documents(batch, columns: List[str], path: str, first_row: int) -> Iterator[Record]:
    values = {name: batch.column(batch.schema.get_field_index(name)).to_pylist() for name in columns}
    texts = values["text"]
    ids = values.get("id")
    urls = values.get("url")
    dates = values.get("warc_date")
    for i in range(batch.num_rows):
        row = first_row + i
        doc = make_document(
            first_str(ids[i] if ids else None) or synthetic_id(path, row),
            url=first_str(urls[i]) if urls else None,
            source=path,
            warc_date=first_str(dates[i]) if dates else None,
            record_offset=row,
        )
        text = texts[i]
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str) or not text:
            yield doc, R_NO_TEXT
            continue
        doc["text"] = text
        yield doc, None


def _arrow_input(path: str):
    """A pyarrow-readable source: a memory map for local files, an in-memory buffer otherwise."""
    import pyarrow as pa

    if not (is_http_url(path) or is_filesystem_url(path)):
        local = local_path(path)
        if not os.path.exists(local):
            raise FileNotFoundError(f"input file {path} does not exist")
        return pa.memory_map(local, "r")
    with open_input(path) as fh:
        return pa.BufferReader(fh.read())


def iter_parquet(path: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    source = _arrow_input(path)
    try:
        pf = pq.ParquetFile(source)
        columns = _table_columns(path, pf.schema_arrow.names)
        row = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
            yield from _batch_documents(batch, columns, path, row)
            row += batch.num_rows
    finally:
        source.close()


def iter_arrow(path: str) -> Iterator[Record]:
    """Arrow IPC file format (random access) or stream format, read batch by batch."""
    import pyarrow as pa
    import pyarrow.ipc  # noqa: F401  (registers pa.ipc)

    source = _arrow_input(path)
    try:
        try:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            batches: Iterable = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            batches = reader
        columns = _table_columns(path, schema.names)
        row = 0
        for batch in batches:
            yield from _batch_documents(batch, columns, path, row)
            row += batch.num_rows
    finally:
        source.close()
