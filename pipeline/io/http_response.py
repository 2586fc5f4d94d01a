"""HTTP response blocks of archive records: status line and headers, chunked bodies, Content-Encoding.

HTTP quirks of real crawls are handled: doubled status lines (``HTTP/1.1 HTTP/1.1 200 OK``), bare-LF header
lines, ``Transfer-Encoding: chunked`` / ``Content-Encoding: gzip`` headers left on bodies that were stored
decoded (the body is dechunked/inflated only when it really is chunked/compressed). Decoding is capped:
past the cap ``TooLarge`` is raised (decompression bombs never fill memory).
"""

from __future__ import annotations

import codecs
import re
import zlib
from typing import Dict, Optional, Tuple

from pipeline.io.contract import LEADING_FILL
from pipeline.io.dialects import find_blank_line, parse_field_block
from pipeline.io.gzip_members import GZIP_MAGIC, INFLATE_PIECE

try:  # brotli comes with resiliparse (via FastWARC); without it, br bodies are left as they are
    import brotli
except ImportError:  # pragma: no cover - present in every supported install
    brotli = None

HTML_MIME_TYPES = frozenset({"text/html", "application/xhtml+xml"})
HTTP_MIMES = frozenset({"application/http", "message/http"})
_STATUS = re.compile(rb"[ \t]*(?:HTTP/[0-9.]*[ \t]+)+(\d{3})(?!\d)", re.I)
_HTTP_HEADER_LIMIT = 1 << 16
_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([^\"';,\s]+)", re.I)


class TooLarge(Exception):
    """A payload grew past max_bytes while being decoded."""


def split_content_type(value: Optional[str]) -> Tuple[str, Optional[str]]:
    """'text/html; charset=UTF-8' -> ('text/html', 'UTF-8')."""
    if not value:
        return "", None
    mime = value.split(";", 1)[0].split(",", 1)[0].strip().lower()
    m = _CHARSET.search(value)
    return mime, (m.group(1) if m else None)


def parse_http(block: bytes) -> Optional[Tuple[Optional[int], Dict[str, str], int]]:
    """(status or None, header fields, payload start) of an HTTP response block; None if it is not one."""
    start = LEADING_FILL.match(block).end()
    if block[start: start + 5].upper() != b"HTTP/":
        return None
    m = find_blank_line(block, start, start + _HTTP_HEADER_LIMIT)
    if m is not None:
        head_end, body = m
    elif len(block) - start <= _HTTP_HEADER_LIMIT:
        head_end = body = len(block)  # headers only, no payload
    else:
        return None
    first_nl = block.find(b"\n", start, head_end)  # the status line, then the fields
    status_end = first_nl if first_nl >= 0 else head_end
    sm = _STATUS.match(block, start, status_end)
    fields = parse_field_block(block[first_nl + 1: head_end] if first_nl >= 0 else b"")
    return (int(sm.group(1)) if sm else None), fields, body


CHUNK_HEAD = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


def dechunk(payload: bytes) -> bytes:
    """Undo HTTP chunked transfer coding; a body that is not really chunked is returned unchanged."""
    parts = []
    pos = 0
    n = len(payload)
    while pos < n:
        m = CHUNK_HEAD.match(payload, pos)
        if m is None:
            break
        size = int(m.group(1), 16)
        pos = m.end()
        if size == 0:
            break
        parts.append(payload[pos: pos + size])
        pos += size
        if payload.startswith(b"\r\n", pos):
            pos += 2
        elif payload.startswith(b"\n", pos):
            pos += 1
    return b"".join(parts) if parts else payload


def _looks_like_markup(payload: bytes) -> bool:
    head = payload[:1024].lstrip()
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:].lstrip()
    return head[:1] == b"<"


def _inflate_capped(payload: bytes, wbits: int, cap: int) -> Optional[bytes]:
    """zlib/gzip/raw-deflate inflate with an output cap (TooLarge); None when it is not such data.

    A damaged or cut gzip/zlib body keeps what inflated before the damage (a truncated page is still
    a page: both formats have a header that was checked); raw deflate has no header, so only a
    complete stream counts."""
    d = zlib.decompressobj(wbits)
    out = bytearray()
    try:
        for i in range(0, len(payload), INFLATE_PIECE):
            out += d.decompress(payload[i: i + INFLATE_PIECE], cap + 1 - len(out))
            if len(out) > cap or d.unconsumed_tail:
                raise TooLarge
            if d.eof:
                break
    except zlib.error:
        if wbits < 0:
            return None
    if wbits < 0 and not d.eof:
        return None
    return bytes(out) if out else None


def _brotli_capped(payload: bytes, cap: int) -> Optional[bytes]:
    if brotli is None:
        return None
    try:
        try:
            out = brotli.Decompressor().process(payload, output_buffer_limit=cap + 1)
        except TypeError:  # older brotli without output_buffer_limit
            out = brotli.decompress(payload)
    except brotli.error:
        return None
    if len(out) > cap:
        raise TooLarge
    return out or None


def decode_content_encoding(payload: bytes, coding: str, cap: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate, br; a list is undone right to left) when the body really is
    encoded: archives often store the decoded body and keep the header. Raises TooLarge past ``cap``."""
    for name in reversed([c.strip().lower() for c in coding.split(",") if c.strip()]):
        if _looks_like_markup(payload):
            break
        decoded = None
        if name in ("gzip", "x-gzip"):
            if payload[:2] == GZIP_MAGIC[:2]:
                decoded = _inflate_capped(payload, 31, cap)
        elif name == "deflate":
            decoded = _inflate_capped(payload, 15, cap) or _inflate_capped(payload, -15, cap)
        elif name == "br":
            decoded = _brotli_capped(payload, cap)
        if decoded is not None:
            payload = decoded
    return payload
