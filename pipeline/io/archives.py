"""Web archives (WARC, ARC, WET) -> Documents: raw records with damage accounting, then pages.

Web archives are read by our own small parser rather than a library's iterator, because real archives
are damaged in ways that stop those iterators at the first problem. Two record loops, one per kind of
source:

- gzip archives (``_gzip_records``): records cut from a gzip member are handed out only after the
  member's CRC checked out, so damaged bytes never become a page; a damaged member costs only the
  record(s) inside it (``read:corrupt_gzip``) and reading resumes at the next member that starts a
  record. A record whose Content-Length runs past the end of its own gzip member when the next member
  starts a record (a lying length) is cut there as ``read:truncated`` instead of swallowing the records
  after it.
- plain and zstd/bzip2/xz archives (``_stream_records``): records are handed out only once 1 MB more
  has decompressed cleanly after them, so damage that the format's own checks catch within that distance
  (bzip2 block CRCs, zstd decoding errors, checksums of frames up to 1 MB) turns the held records into
  ``read:corrupt_stream``; a cut file ends with ``read:truncated`` for the held records and the open one.

Records -> Documents: whether a page is HTML is decided by the HTTP ``Content-Type`` (``text/html``,
``application/xhtml+xml``), never by sniffing the bytes (``pipeline/io/http_response.py``); HTML is decoded by
``pipeline/io/charset.py``; target URIs in angle brackets (wget) are unwrapped; repeated record ids are
kept (``doc_key`` makes them unique); ARC records get ids from url, date and offset.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, List, Optional, Tuple

from pipeline.document import make_document
from pipeline.io.charset import decode_html
from pipeline.io.contract import (
    R_BAD_HEADER,
    R_BAD_HTTP,
    R_CORRUPT_GZIP,
    R_HTTP_STATUS,
    R_NON_HTML,
    R_TOO_LARGE,
    R_TRUNCATED,
    ReaderParams,
    Record,
    LEADING_FILL,
    synthetic_id,
)
from pipeline.io.http_response import (
    HTML_MIME_TYPES,
    CHUNK_HEAD,
    HTTP_MIMES,
    TooLarge,
    parse_http,
    split_content_type,
    decode_content_encoding,
    dechunk,
)
from pipeline.io.remote import open_input
from pipeline.io.sources import STREAM_HOLD, StreamChunks, open_source
from pipeline.io.splitter import RawRecord, RecordSplitter

_DOC_TYPES = frozenset({"response", "resource", "conversion"})


def iter_raw_records(fh, dialect, params: ReaderParams) -> Iterator[RawRecord]:
    """Raw records of an archive stream: gzip member by member when compressed, else as one stream."""
    compressed, source = open_source(fh, dialect.starts_record)
    splitter = RecordSplitter(dialect, params, compressed)
    if compressed:
        yield from _gzip_records(source, splitter)
    else:
        yield from _stream_records(source, splitter, STREAM_HOLD if isinstance(source, StreamChunks) else 0)


def _stream_records(source, splitter: RecordSplitter, hold: int) -> Iterator[RawRecord]:
    """Raw records of a plain or zstd/bzip2/xz stream.

    zstd/bzip2/xz check their data block by block, so damage can surface after bytes of it were handed
    out: records are held until ``hold`` (STREAM_HOLD) more bytes have decompressed cleanly after them,
    and held records become ``read:corrupt_stream`` when damage shows up (plain files hold nothing).
    """
    held: List[Tuple[int, RawRecord]] = []
    fed = 0
    for event in source.events():
        if event[0] == "data":
            fed += len(event[1])
            held.extend((fed, r) for r in splitter.feed(event[1]))
            n = sum(1 for end, _ in held if end + hold <= fed)
            if n:
                yield from (r for _, r in held[:n])
                del held[:n]
        elif event[0] == "damaged":  # records read well before the damage stand; the rest is lost here
            yield from (r if r.problem else RawRecord(r.offset, r.headers, problem=event[2]) for _, r in held)
            pending = splitter.abort()
            if pending is not None:
                yield RawRecord(pending.offset, pending.headers, problem=event[2])
            elif not any(r.problem is None for _, r in held):
                yield RawRecord(event[1], {}, problem=event[2])
            return
        elif event[0] == "truncated":  # the file ends inside a frame whose check can never run
            rest = [r for _, r in held] + splitter.finish()  # finish(): the open record is truncated too
            yield from (r if r.problem else RawRecord(r.offset, r.headers, problem=R_TRUNCATED) for r in rest)
            return
    yield from (r for _, r in held)
    yield from splitter.finish()


def _gzip_records(source, splitter: RecordSplitter) -> Iterator[RawRecord]:
    """Raw records of a gzip stream, member by member, with damage recovery.

    Records cut from a gzip member are held back until the member's CRC has been checked, or until a
    later well-formed record of the same member completes (files gzipped as one member): if the
    member turns out damaged, its held records become ``read:corrupt_gzip`` rejections instead of
    pages with damaged bytes, and junk inflated from the damage is not counted a second time.
    """
    held: List[RawRecord] = []
    member = 0
    member_starts = False  # the next 'data' event is the first of a member
    for event in source.events():
        kind = event[0]
        if kind == "data":
            if member_starts:
                member_starts = False
                cut = splitter.cut_at_member(event[1])
                if cut is not None:
                    yield cut
            held.extend(splitter.feed(event[1]))
            last_good = max((i for i, r in enumerate(held) if r.problem is None and r.headers), default=0)
            if last_good:
                yield from held[:last_good]
                del held[:last_good]
            if splitter.want_abandon:
                source.abandon = True
        elif kind == "member":
            member = event[1]
            member_starts = True
            splitter.start_member(member)
        elif kind in ("end", "abandoned"):
            yield from held
            held = []
            if kind == "abandoned":
                splitter.abort()
        elif kind == "damaged":
            lost = [RawRecord(r.offset, r.headers, problem=R_CORRUPT_GZIP) for r in held if r.problem is None]
            held = []
            pending = splitter.abort()
            if pending is not None:
                pending.problem = R_CORRUPT_GZIP
                lost.append(pending)
            yield from lost or [RawRecord(event[1], {}, problem=R_CORRUPT_GZIP)]
        elif kind == "truncated":  # the file ends inside this member: its CRC can never be checked
            junk = any(r.problem == R_BAD_HEADER for r in held)  # inflated garbage: damage, not a cut
            reason = R_CORRUPT_GZIP if junk else R_TRUNCATED
            unverified = [RawRecord(r.offset, r.headers, problem=reason) for r in held if r.problem is None]
            kept = [r for r in held if r.problem is not None and r.problem != R_BAD_HEADER]
            yield from kept + (unverified or ([RawRecord(member, {}, problem=reason)] if junk else []))
            held = []
    yield from held
    yield from splitter.finish()


def _clean_uri(uri: Optional[str]) -> Optional[str]:
    """A WARC-Target-URI without surrounding blanks or angle brackets; None when empty."""
    if not uri:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):  # wget writes WARC-Target-URI: <http://...>
        uri = uri[1:-1].strip()
    return uri or None


def _record_identity(rec: RawRecord, source: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(id, url, warc_date) of a raw record; ids are synthesised when the record has none."""
    h = rec.headers
    url = _clean_uri(h.get("warc-target-uri"))
    rid = h.get("warc-record-id", "").strip()
    if not rid:
        if "x-arc-date" in h:  # ARC has no record ids: a stable one from url, date and offset
            key = f"{url} {h['x-arc-date']} {rec.offset}".encode("utf-8", "surrogatepass")
            rid = "<urn:arc:" + hashlib.sha1(key).hexdigest() + ">"
        else:
            rid = synthetic_id(source, rec.offset)
    return rid, url, (h.get("warc-date") or None)


def _archive_record_to_document(rec: RawRecord, source: str, params: ReaderParams) -> Optional[Record]:
    """A raw record -> (doc, reason) for page candidates; None for records that are not pages."""
    wtype = rec.headers.get("warc-type", "").strip().lower()
    if wtype and wtype not in _DOC_TYPES:
        return None  # warcinfo, request, metadata, revisit, continuation: not documents
    rid, url, date = _record_identity(rec, source)
    doc = make_document(rid, url=url, source=source, warc_date=date, record_offset=rec.offset)
    if rec.problem is not None:
        return doc, rec.problem
    if wtype == "conversion":  # WET: extracted text, UTF-8 by the spec
        if rec.too_large:
            return doc, R_TOO_LARGE
        doc["text"] = rec.block.decode("utf-8", "replace")
        return doc, None

    block = rec.block
    warc_mime, warc_charset = split_content_type(rec.headers.get("content-type"))
    start = LEADING_FILL.match(block).end()
    http_like = block[start: start + 5].upper() == b"HTTP/"
    if wtype == "response" and (warc_mime in HTTP_MIMES or http_like):
        http = parse_http(block)
        if http is None:
            return doc, (R_TOO_LARGE if rec.too_large else R_BAD_HTTP)
        status, fields, body = http
        mime, charset = split_content_type(fields.get("content-type"))
        if mime not in HTML_MIME_TYPES:
            return doc, R_NON_HTML
        if status is None:
            return doc, R_BAD_HTTP
        if not 200 <= status < 300:
            return doc, R_HTTP_STATUS
        if rec.too_large:
            return doc, R_TOO_LARGE
        payload = block[body:]
        if "chunked" in fields.get("transfer-encoding", "").lower() and CHUNK_HEAD.match(payload):
            payload = dechunk(payload)
        coding = fields.get("content-encoding", "").strip().lower()
        if coding and coding != "identity":
            try:
                payload = decode_content_encoding(payload, coding, params.max_bytes)
            except TooLarge:
                return doc, R_TOO_LARGE
    else:  # resource records (and responses stored without HTTP headers): the WARC Content-Type rules
        mime, charset = warc_mime, warc_charset
        if mime not in HTML_MIME_TYPES:
            return doc, R_NON_HTML
        if rec.too_large:
            return doc, R_TOO_LARGE
        payload = block
    if len(payload) > params.max_bytes:
        return doc, R_TOO_LARGE
    doc["html"] = decode_html(payload, charset)
    return doc, None


def iter_archive(path: str, dialect, params: ReaderParams) -> Iterator[Record]:
    """Documents of one WARC/WET (``dialects.WARC``) or ARC (``dialects.ARC``) file, rejections counted."""
    with open_input(path) as fh:
        for rec in iter_raw_records(fh, dialect, params):
            result = _archive_record_to_document(rec, path, params)
            if result is not None:
                yield result
