"""JSONL inputs (plain, gzip, zstd, bzip2, xz) -> Documents.

Accepts ``{"id", "text", "url"}`` rows and the Dolma / CCNet layouts (``metadata.warc_url``,
``metadata.warc_date``, ``metadata.url``). ``record_offset`` is the 1-based line number. A line longer than
``max_expansion * max_bytes`` is ``read:too_large`` and is never held whole in memory; damaged compressed
data costs the line it falls in.
"""

from __future__ import annotations

import json
from typing import Iterator, Optional, Tuple

from pipeline.document import make_document
from pipeline.io.contract import (
    R_BAD_JSON,
    R_CORRUPT_GZIP,
    R_NO_TEXT,
    R_TOO_LARGE,
    R_TRUNCATED,
    ReaderParams,
    Record,
    first_str,
    synthetic_id,
)
from pipeline.io.remote import open_input
from pipeline.io.sources import open_source


def iter_lines(fh, max_line: int) -> Iterator[Tuple[int, Optional[bytes], Optional[str]]]:
    """(line number from 1, line bytes, problem) of a plain or gzip JSONL stream."""
    compressed, source = open_source(fh, lambda head: head.lstrip()[:1] in (b"{", b"["))
    buf = bytearray()
    lineno = 0
    skipping = False  # inside an over-long line
    for event in source.events():
        kind = event[0]
        if kind == "data":
            buf += event[1]
            pos = 0
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                if skipping:
                    skipping = False
                else:
                    lineno += 1
                    yield lineno, bytes(buf[pos:nl]), None
                pos = nl + 1
            del buf[:pos]
            if len(buf) > max_line:
                if not skipping:
                    lineno += 1
                    yield lineno, None, R_TOO_LARGE
                    skipping = True
                buf.clear()
        elif kind == "damaged":
            lineno += 1
            yield lineno, None, event[2] if len(event) > 2 else R_CORRUPT_GZIP
            buf.clear()
            skipping = False
        elif kind == "truncated":
            if buf.strip() and not skipping:
                lineno += 1
                yield lineno, None, R_TRUNCATED
            buf.clear()
            skipping = False
    if buf.strip() and not skipping:
        yield lineno + 1, bytes(buf), None


def iter_jsonl(path: str, params: ReaderParams) -> Iterator[Record]:
    with open_input(path) as fh:
        for lineno, line, problem in iter_lines(fh, params.record_cap):
            fallback_id = synthetic_id(path, lineno)
            if problem is not None:
                yield make_document(fallback_id, source=path, record_offset=lineno), problem
                continue
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError:
                    obj = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                yield make_document(fallback_id, source=path, record_offset=lineno), R_BAD_JSON
                continue
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            doc = make_document(
                first_str(obj.get("id")) or fallback_id,
                url=first_str(obj.get("url"), meta.get("warc_url"), meta.get("url")),
                source=path,
                warc_date=first_str(obj.get("warc_date"), meta.get("warc_date"), meta.get("date_download")),
                record_offset=lineno,
            )
            text = obj.get("text")
            if not isinstance(text, str) or not text:
                yield doc, R_NO_TEXT
                continue
            if len(text) > params.max_bytes:
                yield doc, R_TOO_LARGE
                continue
            doc["text"] = text
            yield doc, None
