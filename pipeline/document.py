"""The Document record: one web page as a plain dict, and its Arrow schema.

A Document travels through Beam as a ``dict`` (cheap to pickle, easy to test). Core columns:

- ``id``: stable identifier (the WARC-Record-ID, or the input's own ``id``). Not unique in the wild
  (real archives repeat record ids), so ``doc_key`` below is what grouping and sharding use.
- ``url``, ``text``, ``source`` (input file), ``warc_date`` (ISO-8601 string or None),
- ``record_offset``: byte offset of the record in ``source`` (or line number for JSONL, row for
  Parquet/Arrow): with ``source`` it locates the raw record for an audit and makes a unique key.

Transport fields (never written to shards): ``html`` (decoded HTML waiting for extraction).

Stages add metadata columns (``language``, ``language_score``, quality signals, ...); each stage
declares them with Arrow types so every shard of a run has the same schema.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, Mapping

import pyarrow as pa

Document = Dict[str, Any]

CORE_FIELDS: Dict[str, pa.DataType] = {
    "id": pa.string(),
    "url": pa.string(),
    "text": pa.string(),
    "source": pa.string(),
    "warc_date": pa.string(),
    "record_offset": pa.int64(),
}

# Fields that may ride along inside a Document but are never written to a shard.
TRANSPORT_FIELDS = frozenset({"html"})

REASON_FIELD = "reason"


def make_document(
    id: str,
    text: str | None = None,
    url: str | None = None,
    source: str | None = None,
    warc_date: str | None = None,
    record_offset: int | None = None,
    html: str | None = None,
) -> Document:
    """Build a Document dict with every core field present."""
    doc: Document = {
        "id": id,
        "url": url,
        "text": text if text is not None else "",
        "source": source,
        "warc_date": warc_date,
        "record_offset": record_offset,
    }
    if html is not None:
        doc["html"] = html
    return doc


def doc_key(doc: Mapping[str, Any]) -> str:
    """A key unique per input record: id, plus where it came from (ids repeat in real WARCs)."""
    return f"{doc.get('id')}\x1f{doc.get('source')}\x1f{doc.get('record_offset')}"


def text_of(doc: Mapping[str, Any]) -> str:
    """The document's text ("" when missing or None); TypeError for anything but a str (the dedup stages
    turn it into an ``error:TypeError`` dead letter)."""
    text = doc.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}, not str")
    return text


def stable_hash64(value: str) -> int:
    """A 64-bit hash that is the same on every machine and Python process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def build_schema(extra: Mapping[str, pa.DataType] | None = None, rejected: bool = False) -> pa.Schema:
    """Arrow schema of a shard: core columns, then stage columns in pipeline order, then ``reason``."""
    fields = [pa.field(name, typ) for name, typ in CORE_FIELDS.items()]
    seen = set(CORE_FIELDS)
    for name, typ in (extra or {}).items():
        if name in seen or name in TRANSPORT_FIELDS:
            continue
        seen.add(name)
        fields.append(pa.field(name, typ))
    if rejected:
        fields.append(pa.field(REASON_FIELD, pa.string()))
    return pa.schema(fields)


def rows_to_table(rows: Iterable[Document], schema: pa.Schema) -> pa.Table:
    """Documents -> Arrow table with exactly ``schema``'s columns (missing values become null)."""
    rows = list(rows)
    columns = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=schema)
