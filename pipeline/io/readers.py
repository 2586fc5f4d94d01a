"""Input readers, the front door: one call per input file -> Documents, whatever the file's format.

Three public functions, used by the Beam graph (``pipeline/beam.py``) and the CLI:

- ``expand_inputs(patterns)``: files, folders, globs, ``gs://``/``s3://`` patterns, ``https://`` URLs and
  Common Crawl path lists (``warc.paths.gz``) -> the sorted list of input files;
- ``detect_format(path)``: ``'warc'``, ``'arc'``, ``'wet'``, ``'jsonl'``, ``'parquet'`` or ``'arrow'``;
- ``iter_records(path)``: yields ``(document, None)`` for each page and ``(document, reason)`` for each
  counted rejection (``read:non_html``, ``read:http_status``, ``read:too_large``, ``read:truncated``,
  ``read:corrupt_gzip``, ``read:corrupt_stream``, ``read:bad_header``, ``read:bad_http``, ``read:bad_json``,
  ``read:no_text``).

The work is done by one module per concern, each documented there:

- ``contract``: rejection reasons, the record type, the limits (``ReaderParams``), synthetic ids;
- ``inputs``: formats by file name, input expansion, Common Crawl path lists;
- ``gzip_members``: gzip read member by member, resynchronisation after damage;
- ``sources``: byte sources by magic bytes (gzip, whole-file zstd/bzip2/xz with bounded output, plain);
- ``dialects``: WARC and ARC record headers; ``splitter``: a byte stream cut into raw records;
- ``archives``: raw records with damage accounting, then pages (WARC, ARC, WET);
- ``http_response``: HTTP status, headers, chunked and Content-Encoding bodies; ``charset``: HTML bytes -> str;
- ``jsonl``: JSONL rows; ``tables``: Parquet and Arrow.

``record_offset`` is the gzip member's (or record's) byte offset for archives (the offset in the decompressed
stream for zstd/bzip2/xz files), the 1-based line number for JSONL and the 0-based row for Parquet/Arrow.
"""

from __future__ import annotations

from typing import Iterator, Optional

from pipeline.errors import UserValueError
from pipeline.io.archives import iter_archive
from pipeline.io.charset import decode_html
from pipeline.io.contract import (
    DEFAULT_COMMONCRAWL_BASE_URL,
    R_BAD_HEADER,
    R_BAD_HTTP,
    R_BAD_JSON,
    R_CORRUPT_GZIP,
    R_CORRUPT_STREAM,
    R_HTTP_STATUS,
    R_NO_TEXT,
    R_NON_HTML,
    R_TOO_LARGE,
    R_TRUNCATED,
    READ_REASONS,
    ReaderParams,
    Record,
)
from pipeline.io.dialects import ARC, WARC
from pipeline.io.http_response import HTML_MIME_TYPES, decode_content_encoding, dechunk
from pipeline.io.inputs import (
    FORMATS,
    detect_format,
    expand_inputs,
    is_path_list,
    is_supported as _is_supported,
    read_path_list,
)
from pipeline.io.jsonl import iter_jsonl
from pipeline.io.tables import iter_arrow, iter_parquet

__all__ = [  # the names importers use (pipeline/, tests/, bench/, fuzz/): kept here as they were
    "DEFAULT_COMMONCRAWL_BASE_URL", "FORMATS", "HTML_MIME_TYPES", "READ_REASONS", "R_BAD_HEADER", "R_BAD_HTTP",
    "R_BAD_JSON", "R_CORRUPT_GZIP", "R_CORRUPT_STREAM", "R_HTTP_STATUS", "R_NON_HTML", "R_NO_TEXT", "R_TOO_LARGE",
    "R_TRUNCATED", "ReaderParams", "Record", "_is_supported", "decode_content_encoding", "decode_html", "dechunk",
    "detect_format", "expand_inputs", "is_path_list", "iter_records", "read_path_list",
]



def iter_records(
    path: str,
    fmt: Optional[str] = None,
    *,
    max_bytes: int = ReaderParams.max_bytes,
    params: Optional[ReaderParams] = None,
) -> Iterator[Record]:
    """Documents of one input file: ``(doc, None)`` for a page, ``(doc, reason)`` for a counted rejection.

    ``params`` (a ReaderParams) takes precedence over ``max_bytes`` when given.
    """
    if params is None:
        params = ReaderParams(max_bytes=max_bytes)
    params.validate()
    fmt = fmt or detect_format(path)
    if fmt in ("warc", "wet"):
        return iter_archive(path, WARC, params)
    if fmt == "arc":
        return iter_archive(path, ARC, params)
    if fmt == "jsonl":
        return iter_jsonl(path, params)
    if fmt == "parquet":
        return iter_parquet(path)
    if fmt == "arrow":
        return iter_arrow(path)
    raise UserValueError(f"unknown input format {fmt!r} for {path!r} (known: {', '.join(FORMATS)})")
