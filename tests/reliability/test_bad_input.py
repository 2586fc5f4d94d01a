"""Bad-input corpus: damaged and hostile web archives through the readers, every document stage and Beam.

A corpus of WARC files is built in a temporary folder (raw bytes + gzip, so every header can lie): damaged
gzip members (bytes flipped, cut in the middle, junk between members, cut at the end of the file), wrong
Content-Length (too short, too long, not a number), lying or missing Content-Types (PNG and PDF bytes
declared text/html, HTML declared image/png, no Content-Type), lying, absent and bogus charsets, invalid UTF-8
and two encodings in one page, empty payloads, NUL bytes in HTML and in text, a 50 MB page, 100,000 levels of
nested ``<div>``, a ~10 MB line without a newline (as HTML and as WET text), a line of 5,000 social
counters, and decompression bombs (a 2 MB
gzip member that inflates to 2 GiB, written streaming, never held in memory; an HTTP ``Content-Encoding:
gzip`` body inflating to 1 GiB). Between the bad records sit good pages: real English prose (distinct
passages of *Botchan* from the shared data, one passage per page), which pass every filter of ``refinedweb``,
``refinedweb_fast`` and ``fineweb``.

Every record written is an *entry* (a good page or one injected fault) at a known byte offset; every record
the reader yields is mapped back to the entry whose offset precedes it. The tests then check:

- no exception escapes the reader or a stage, and no reason is an ``:error:`` dead letter;
- every good page comes out of the reader as a page and is kept by every document stage of ``refinedweb``
  and ``refinedweb_fast`` (plain ``run_stages`` loop), and by the Beam run of ``refinedweb_fast``;
- every fault is counted (at least one record with a reason, or a recovered page where only metadata lied)
  and ends in one of the outcomes listed for it below (with the reason why that outcome is right);
- nothing is lost: records yielded == kept + rejected, per pipeline and in Beam's report;
- the 50 MB page and the bombs are read in bounded memory (peak RSS of a reader subprocess) and time.

The table of inputs, faults and lost records is printed (also without ``-s``).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import gzip
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from pipeline.config import get_pipeline
from pipeline.io import shards as shard_io
from pipeline.io.readers import iter_records
from pipeline.paths import REPO, require_shared
from pipeline.stages.base import DocumentStage, run_stages

MIB = 1 << 20
KEPT = "kept"
# Outcome patterns: an exact reason, "kept", or a prefix ending in ":" (any rule of that stage).
CONTENT_REJECTIONS = ("extract:", "langid:", "gopher_repetition:", "gopher_quality:", "line_corrections:",
                      "normalize:")
DEDUP_STAGES = ("exact_dedup:", "url_dedup:", "minhash_dedup:", "substring_dedup:")
PIPELINES = ("refinedweb", "refinedweb_fast", "refinedweb_fast+webrefinery")
# runs that are a configured pipeline with --set overrides: label -> (pipeline, overrides)
VARIANTS = {"refinedweb_fast+webrefinery": ("refinedweb_fast", ["extract.extractor=webrefinery"])}


# ---------------------------------------------------------------------------------------------------
# Good text: distinct passages of a real English novel


def botchan_passages(words_per_page: int = 350) -> List[List[str]]:
    """The novel's chapters as sentences, grouped into passages of about ``words_per_page`` words."""
    lines = require_shared("text", "botchan.txt").read_text(encoding="utf-8-sig").splitlines()
    start = lines.index("CHAPTER I")
    end = next(i for i, line in enumerate(lines) if line.startswith("*** END OF"))
    prose = " ".join(line.strip() for line in lines[start:end] if line.strip() and not line.startswith("CHAPTER"))
    passages, current, n = [], [], 0
    for sentence in re.findall(r"[^.!?]+[.!?]+[\"']?\s*", prose):
        current.append(sentence.strip())
        n += len(sentence.split())
        if n >= words_per_page:
            passages.append(current)
            current, n = [], 0
    return passages


class Prose:
    """Hands out each passage once, so no two pages share text (dedup must not merge good pages). The
    last ``RESERVED`` passages are kept for the huge repeated lines."""

    RESERVED = 40

    def __init__(self):
        self.passages = botchan_passages()
        self.next = 0

    def take(self) -> Tuple[int, List[str]]:
        i = self.next
        assert i < len(self.passages) - self.RESERVED, "the corpus needs more distinct passages"
        self.next += 1
        return i, self.passages[i]

    def reserved_line(self, part: int) -> str:
        """One line of 20 reserved passages (``part`` 0 or 1), for repeated-text faults."""
        chosen = self.passages[len(self.passages) - 20 * (part + 1): len(self.passages) - 20 * part]
        return " ".join(s for p in chosen for s in p)


def paragraphs_of(sentences: Sequence[str], per: int = 5) -> List[str]:
    return [" ".join(sentences[j: j + per]) for j in range(0, len(sentences), per)]


def page_html(i: int, sentences: Sequence[str]) -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs_of(sentences))
    return (f"<!DOCTYPE html><html><head><title>Botchan, part {i}</title></head><body><article>"
            f"<h1>Botchan, part {i}</h1>{body}</article></body></html>")


def page_text(sentences: Sequence[str]) -> str:
    return "\n\n".join(paragraphs_of(sentences))


def marker_of(sentences: Sequence[str]) -> str:
    """A sentence of the passage (long enough to be distinctive) to find in the extracted text."""
    return max(sentences[:6], key=len)[:60]


# ---------------------------------------------------------------------------------------------------
# Raw records and gzip members


def warc_record(block: bytes, rid: str, uri: str, *, rtype: str = "response",
                ctype: Optional[str] = "application/http; msgtype=response", length: Optional[int] = None,
                extra: str = "") -> bytes:
    """One WARC record; ``length`` overrides the true Content-Length (a lying header)."""
    head = f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\n"
    if uri:
        head += f"WARC-Target-URI: {uri}\r\n"
    head += "WARC-Date: 2024-05-20T10:00:00Z\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    head += extra
    head += f"Content-Length: {len(block) if length is None else length}\r\n\r\n"
    return head.encode("ascii") + block + b"\r\n\r\n"


def http_block(body: bytes, ctype: Optional[str] = "text/html; charset=utf-8", status: str = "200 OK",
               extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    head += extra + f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body


def gz(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def write_repeated_member(fh, head: bytes, unit: bytes, repeats: int, tail: bytes = b"") -> int:
    """Write one gzip member holding ``head + unit * repeats + tail`` without building it in memory.

    After a full flush deflate forgets its history, so compressing the same ``unit`` again gives the same
    bytes: one compressed copy is written ``repeats`` times (1 MiB of zeros -> ~1 KB). Returns the size the
    member inflates to. The trailer's CRC-32 and length are correct: the member is valid gzip."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    fh.write(_GZIP_HEADER)
    fh.write(co.compress(head) + co.flush(zlib.Z_FULL_FLUSH))
    packed = co.compress(unit) + co.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(repeats):
        fh.write(packed)
        crc = zlib.crc32(unit, crc)
    fh.write(co.compress(tail) + co.flush())
    crc = zlib.crc32(tail, crc)
    size = len(head) + len(unit) * repeats + len(tail)
    fh.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return size


def png_bytes(rng: random.Random, side: int = 64) -> bytes:
    """A valid PNG image of random RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def pdf_bytes(rng: random.Random) -> bytes:
    """A small PDF whose page content is a compressed (binary) stream, as real PDFs have."""
    stream = zlib.compress(b"BT /F1 12 Tf 72 712 Td (" + rng.randbytes(3000).hex().encode() + b") Tj ET")
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    for n, obj in enumerate(objs, 1):
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    return out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


# ---------------------------------------------------------------------------------------------------
# The corpus: entries (good pages and faults) at known offsets


@dataclasses.dataclass
class Entry:
    path: str
    offset: int
    name: str  # "good-<n>" or the fault's name
    good: bool
    allowed: Tuple[str, ...] = (KEPT,)  # outcome patterns every record of this entry must match
    must: Tuple[str, ...] = ()  # patterns at least one record must match (the fault is counted)
    why: str = ""  # why these outcomes are right
    marker: Optional[str] = None  # text a kept page must contain
    inflates_to: int = 0  # bombs: bytes the member inflates to


def outcome_matches(outcome: str, pattern: str) -> bool:
    return outcome == pattern or (pattern.endswith(":") and outcome.startswith(pattern))


class ArchiveWriter:
    """Writes one archive file record by record, remembering which entry starts at which offset."""

    def __init__(self, path: Path, prose: Prose, compressed: bool = True):
        self.path = str(path)
        self.fh = open(path, "wb")
        self.prose = prose
        self.compressed = compressed
        self.entries: List[Entry] = []

    def _entry(self, name, good, **kw) -> Entry:
        e = Entry(self.path, self.fh.tell(), name, good, **kw)
        self.entries.append(e)
        return e

    def put(self, record: bytes) -> None:
        self.fh.write(gz(record) if self.compressed else record)

    def good_page(self) -> None:
        i, sentences = self.prose.take()
        self._entry(f"good-{i}", True, marker=marker_of(sentences))
        body = http_block(page_html(i, sentences).encode("utf-8"))
        self.put(warc_record(body, f"good-{i}", f"http://books.example.org/botchan/{i}"))

    def good_text(self) -> None:
        """A WET conversion record with clean text."""
        i, sentences = self.prose.take()
        self._entry(f"good-{i}", True, marker=marker_of(sentences))
        self.put(warc_record(page_text(sentences).encode("utf-8"), f"good-{i}",
                             f"http://books.example.org/botchan/{i}", rtype="conversion", ctype="text/plain"))

    def fault(self, name: str, data: bytes = b"", *, raw: bool = False, **kw) -> Entry:
        """An injected fault: ``data`` is a record (gzipped here) or, with ``raw``, bytes written as they are."""
        e = self._entry(name, False, **kw)
        if data and raw:
            self.fh.write(data)
        elif data:
            self.put(data)
        return e

    def close(self) -> None:
        self.fh.close()


@dataclasses.dataclass
class Corpus:
    folder: Path
    files: List[str]
    entries: List[Entry]

    @property
    def good(self) -> List[Entry]:
        return [e for e in self.entries if e.good]

    @property
    def faults(self) -> List[Entry]:
        return [e for e in self.entries if not e.good]

    def entry_of(self, source: str, offset: int) -> Entry:
        """The entry a record the reader yielded belongs to: the last one starting at or before it."""
        entries = [e for e in self.entries if e.path == source]
        offsets = [e.offset for e in entries]
        i = bisect.bisect_right(offsets, offset) - 1
        assert i >= 0, f"record at {source}:{offset} lies before the first entry"
        return entries[i]


def build_faults_warc(path: Path, prose: Prose, rng: random.Random) -> ArchiveWriter:
    """The main archive: one gzip member per record, a good page between every two faults."""
    w = ArchiveWriter(path, prose)
    uri = "http://faults.example.net/{}"
    content = CONTENT_REJECTIONS

    def page(name, html: bytes, ctype="text/html; charset=utf-8", http_extra="",
             warc_ctype="application/http; msgtype=response", **warc_kw) -> bytes:
        """A response record: ``ctype`` is the HTTP Content-Type, ``warc_ctype`` the WARC one."""
        return warc_record(http_block(html, ctype, extra=http_extra), name, uri.format(name), ctype=warc_ctype,
                           **warc_kw)

    def fresh():
        i, sentences = prose.take()
        return i, sentences, page_html(i, sentences)

    w.good_page()
    # --- gzip damage ---------------------------------------------------------------------------
    _, _, html = fresh()
    member = bytearray(gz(page("flipped-bytes", html.encode())))
    for k in range(len(member) // 2, len(member) // 2 + 8):
        member[k] ^= 0xFF
    w.fault("flipped_bytes_in_member", bytes(member), raw=True, allowed=("read:corrupt_gzip",),
            why="inflating fails or the CRC does not match: the member's record is lost, counted")
    w.good_page()
    _, _, html = fresh()
    member = gz(page("cut-member", html.encode()))
    w.fault("member_cut_in_the_middle", member[: len(member) // 2], raw=True, allowed=("read:corrupt_gzip",),
            why="the cut member runs into the next member's header bytes: damaged, counted; the next is found")
    w.good_page()
    w.fault("junk_between_members", rng.randbytes(3000), raw=True, allowed=("read:corrupt_gzip",),
            why="bytes that are not a gzip member: one damaged stretch, counted once")
    w.good_page()
    # --- Content-Length lies -------------------------------------------------------------------
    i, sentences, html = fresh()
    block = http_block(html.encode())
    w.fault("content_length_too_short", page("too-short", html.encode(), length=len(block) // 2),
            allowed=(KEPT, "read:bad_header") + content, must=("read:bad_header",),
            why="the first half is read as a (cut) page and may pass the filters; the rest of the block is "
                "junk before the next record: read:bad_header")
    w.good_page()
    html = fresh()[2].encode()
    w.fault("content_length_too_long", page("too-long", html, length=len(http_block(html)) + 5000),
            allowed=("read:truncated",),
            why="the record ends with its gzip member, before its declared length: truncated, and the next "
                "member's record is read on its own")
    w.good_page()
    w.fault("content_length_not_a_number",
            page("nan-length", fresh()[2].encode()).replace(b"Content-Length: ", b"Content-Length: x", 1),
            allowed=("read:bad_header",), why="a header without a usable length cannot be cut: bad_header")
    w.good_page()
    w.fault("content_length_negative",
            page("neg-length", fresh()[2].encode()).replace(b"Content-Length: ", b"Content-Length: -", 1),
            allowed=("read:bad_header",), why="negative length: bad_header")
    w.good_page()
    # --- lying or missing Content-Type ---------------------------------------------------------
    w.fault("png_declared_html", page("png-as-html", png_bytes(rng)), allowed=content,
            why="the reader trusts Content-Type (by design); the bytes hold no English prose: a content stage "
                "rejects them")
    w.good_page()
    w.fault("pdf_declared_html", page("pdf-as-html", pdf_bytes(rng)), allowed=content,
            why="as for the PNG")
    w.good_page()
    w.fault("html_declared_png", page("html-as-png", fresh()[2].encode(), ctype="image/png"),
            allowed=("read:non_html",), why="Content-Type decides; image/png is not HTML")
    w.good_page()
    w.fault("html_declared_pdf", page("html-as-pdf", fresh()[2].encode(), ctype="application/pdf"),
            allowed=("read:non_html",), why="as above")
    w.good_page()
    w.fault("no_http_content_type", page("no-http-ctype", fresh()[2].encode(), ctype=None),
            allowed=("read:non_html",), why="no Content-Type: not known to be HTML")
    w.good_page()
    i, sentences, html = fresh()
    w.fault("no_warc_content_type", page("no-warc-ctype", html.encode(), warc_ctype=None), allowed=(KEPT,),
            marker=marker_of(sentences),
            why="the block starts with an HTTP status line: read as HTTP; only metadata was missing")
    w.good_page()
    # --- charsets -------------------------------------------------------------------------------
    i, sentences, html = fresh()
    w.fault("utf16_label_on_utf8_body", page("utf16-lie", html.encode(), "text/html; charset=utf-16"),
            allowed=(KEPT,), marker=marker_of(sentences),
            why="HTML in UTF-16 has a NUL in every ASCII character; a body without NULs is not UTF-16")
    w.good_page()
    i, sentences, html = fresh()
    utf16 = html.replace("</h1>", "</h1><p>Caf\u00e9 cr\u00e8me, na\u00efve \u201cquotes\u201d.</p>")
    w.fault("utf16le_body_without_bom", page("utf16-true", utf16.encode("utf-16-le"), "text/html; charset=utf-16"),
            allowed=(KEPT,), marker="Caf\u00e9 cr\u00e8me, na\u00efve \u201cquotes\u201d.",
            why="a real UTF-16 page (no BOM) declared as such still decodes")
    w.good_page()
    accent = ("</h1><p>He ordered caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e; "
              "the \u201cna\u00efve\u201d clerk smiled.</p>")
    i, sentences, html = fresh()
    accented = html.replace("</h1>", accent)
    w.fault("latin1_label_on_utf8_body", page("latin1-lie", accented.encode("utf-8"),
                                              "text/html; charset=iso-8859-1"),
            allowed=(KEPT,), marker="caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e",
            why="a body that is valid UTF-8 is UTF-8 whatever the label says")
    w.good_page()
    i, sentences, html = fresh()
    accented = html.replace("</h1>", accent)
    w.fault("utf8_label_on_cp1252_body", page("utf8-lie", accented.encode("cp1252")),
            allowed=(KEPT,), marker="caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e",
            why="not valid UTF-8: detection finds the real single-byte encoding")
    w.good_page()
    i, sentences, html = fresh()
    w.fault("bogus_charset_label", page("bogus-charset", html.encode(), "text/html; charset=x-no-such-thing"),
            allowed=(KEPT,), marker=marker_of(sentences), why="an unknown label is ignored")
    w.good_page()
    i, sentences, html = fresh()
    w.fault("absent_charset_cp1252", page("no-charset", html.replace("</h1>", accent).encode("cp1252"), "text/html"),
            allowed=(KEPT,), marker="caf\u00e9 au lait and cr\u00e8me br\u00fbl\u00e9e",
            why="no label anywhere: detection")
    w.good_page()
    i, sentences, html = fresh()
    lying_meta = html.replace("<head>", '<head><meta charset="shift_jis">')
    w.fault("meta_charset_lie", page("meta-lie", lying_meta.encode(), "text/html"), allowed=(KEPT,),
            marker=marker_of(sentences), why="a <meta> label on valid UTF-8 loses to the UTF-8 probe")
    w.good_page()
    i, sentences, html = fresh()
    body = html.encode()
    cuts = sorted(rng.sample(range(200, len(body) - 200), 12))
    broken = b"".join(body[a:b] + rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80\x80", b"\xed\xa0\x80"])
                      for a, b in zip([0] + cuts, cuts + [len(body)]))
    w.fault("invalid_utf8_sequences", page("bad-utf8", broken), allowed=(KEPT,) + content,
            why="decodes with replacement or a single-byte guess; the English text survives or a filter "
                "rejects it, never an error")
    w.good_page()
    i, sentences, html = fresh()
    half = len(sentences) // 2
    mixed = (page_html(i, sentences[:half]).split("</article>")[0] + "<p>Caf\u00e9 cr\u00e8me.</p>").encode("utf-8")
    mixed += ("".join(f"<p>{p}</p>" for p in paragraphs_of(sentences[half:]))
              + "<p>Cr\u00e8me br\u00fbl\u00e9e.</p></article></body></html>").encode("latin-1")
    w.fault("mixed_utf8_and_latin1", page("mixed-enc", mixed), allowed=(KEPT,) + content,
            why="no single encoding fits; the page decodes (some characters wrong) and is judged on content")
    w.good_page()
    # --- empty payloads, NULs, broken HTTP ------------------------------------------------------
    w.fault("empty_http_body", page("empty-body", b""), allowed=("extract:empty",),
            why="headers only, no HTML: nothing to extract")
    w.good_page()
    w.fault("empty_warc_block", warc_record(b"", "empty-block", uri.format("empty-block")),
            allowed=("read:bad_http",), why="an application/http block without an HTTP response")
    w.good_page()
    w.fault("garbage_http_block", warc_record(rng.randbytes(2000), "garbage-http", uri.format("garbage-http")),
            allowed=("read:bad_http",), why="random bytes where an HTTP response should be")
    w.good_page()
    w.fault("garbage_status_line", warc_record(http_block(fresh()[2].encode(), status="abc OK"),
                                                "bad-status", uri.format("bad-status")),
            allowed=("read:bad_http",), why="no status code")
    w.good_page()
    i, sentences, html = fresh()
    nul_html = html.replace("<p>", "<p>\x00").replace(". ", ".\x00 ")
    w.fault("nul_bytes_in_html", page("nul-html", nul_html.encode()), allowed=(KEPT,),
            marker=marker_of(sentences).split(". ")[0],
            why="NULs are dropped by normalize; the prose is fine")
    w.good_page()
    # --- pathological sizes and shapes ----------------------------------------------------------
    i, sentences, html = fresh()
    deep = html.replace("<article>", "<div>" * 100_000).replace("</article>", "</div>" * 100_000)
    w.fault("nested_divs_100000", page("deep", deep.encode()), allowed=("extract:empty", "extract:too_deep"),
            why="lxml stops at 256 levels (trafilatura finds nothing); resiliparse's depth guard rejects")
    w.good_page()
    line = prose.reserved_line(0)
    huge = ("<html><body><p>" + (line + " ") * (9_900_000 // len(line)) + "</p></body></html>").encode()
    w.fault("single_line_9_9mb_html", page("huge-line-html", huge), allowed=("extract:too_large",),
            why="under the reader's 10 MB cap, over extract's 5 MB HTML cap")
    w.good_page()
    big_head = warc_record(b"", "page-50mb", uri.format("page-50mb"),
                           length=len(http_block(b"")) + 50 * MIB)[:-4]  # header only; block streamed below
    w.fault("page_50mb", allowed=("read:too_large",), why="over max_bytes: skipped while streaming",
            inflates_to=50 * MIB)
    co = zlib.compressobj(1, zlib.DEFLATED, 31)
    w.fh.write(co.compress(big_head + http_block(b"")))
    unit = (" ".join(line.split()[:2000]) + "\n").encode()
    written = 0
    while written < 50 * MIB:
        piece = unit[: 50 * MIB - written]
        w.fh.write(co.compress(piece))
        written += len(piece)
    w.fh.write(co.compress(b"\r\n\r\n") + co.flush())
    w.good_page()
    packed = io.BytesIO()  # ~1 MB of gzip that inflates to 1 GiB of HTML (never inflated here)
    http_bomb_size = write_repeated_member(packed, b"<html><body>", b" " * MIB, 1024, b"</body></html>")
    packed = packed.getvalue()
    w.fault("http_gzip_bomb_1gib", page("http-bomb", packed, http_extra="Content-Encoding: gzip\r\n"),
            allowed=("read:too_large",), why="Content-Encoding is undone with an output cap",
            inflates_to=http_bomb_size)
    w.good_page()
    bomb_size = 2 << 30
    http = http_block(b"")
    head = warc_record(b"", "warc-bomb", uri.format("warc-bomb"), length=len(http) + bomb_size)[:-4] + http
    e = w.fault("warc_gzip_bomb_2gib", allowed=("read:too_large",),
                why="a record may inflate to max_expansion * max_bytes; past that its member is abandoned")
    e.inflates_to = write_repeated_member(w.fh, head, bytes(MIB), bomb_size // MIB, b"\r\n\r\n")
    w.good_page()
    e = w.fault("junk_gzip_bomb_2gib", allowed=("read:bad_header",),
                why="a member inflating to 2 GiB of non-record bytes: one junk region, abandoned at the cap")
    e.inflates_to = write_repeated_member(w.fh, b"", b"A" * MIB, 2048)
    w.good_page()
    w.close()
    return w


def build_truncated_warc(path: Path, prose: Prose) -> ArchiveWriter:
    """Good pages, then a last member cut off by the end of the file."""
    w = ArchiveWriter(path, prose)
    w.good_page()
    w.good_page()
    i, sentences = prose.take()
    member = gz(warc_record(http_block(page_html(i, sentences).encode()), "cut-at-eof", "http://x.example.net/eof"))
    w.fault("file_ends_inside_member", member[: len(member) * 2 // 3], raw=True, allowed=("read:truncated",),
            why="the file ends inside a member: the record cannot be verified, counted as truncated")
    w.close()
    return w


def build_plain_warc(path: Path, prose: Prose, rng: random.Random) -> ArchiveWriter:
    """An uncompressed archive: Content-Length lies, junk, and a record cut by the end of the file."""
    w = ArchiveWriter(path, prose, compressed=False)
    w.good_page()
    i, sentences = prose.take()
    block = http_block(page_html(i, sentences).encode())
    w.fault("plain_content_length_too_short",
            warc_record(block, "plain-short", "http://x.example.net/short", length=len(block) // 3),
            allowed=(KEPT, "read:bad_header") + CONTENT_REJECTIONS, must=("read:bad_header",),
            why="as in the gzip archive: a cut page and a counted junk region")
    w.good_page()
    w.fault("plain_junk_between_records", b"\r\n" + rng.randbytes(1500).replace(b"WARC/", b"warc/") + b"\r\n",
            allowed=("read:bad_header",), why="junk up to the next 'WARC/' line: one bad_header")
    w.good_page()
    i, sentences = prose.take()
    nul_header = warc_record(http_block(page_html(i, sentences).encode()), "nul-header", "http://x.example.net/nul",
                             extra="X-Junk: a\x00b\x00c\r\n")
    w.fault("nul_bytes_in_warc_header", nul_header, allowed=(KEPT,), marker=marker_of(sentences),
            why="an unknown header field with NULs is ignored")
    w.good_page()
    for name, extra, after in (("plain_content_length_too_long", 3_000, 2),
                               ("plain_content_length_swallows_records", 12_000, 4)):
        i, sentences = prose.take()
        block = http_block(page_html(i, sentences).encode())
        w.fault(name, warc_record(block, name, f"http://x.example.net/{name}", length=len(block) + extra),
                allowed=("read:truncated",), must=("read:truncated",),
                why="the block runs into the next record header: the lying record is cut there, the records after it are read")
        for _ in range(after):
            w.good_page()
    i, sentences = prose.take()
    block = http_block(page_html(i, sentences).encode())
    w.fault("plain_content_length_runs_past_eof",
            warc_record(block, "plain-long", "http://x.example.net/long", length=len(block) + 100_000),
            allowed=("read:truncated",),
            why="in an uncompressed file a too-long length can only be noticed at the end of the file")
    w.close()
    return w


def build_wet(path: Path, prose: Prose) -> ArchiveWriter:
    """WET (text) records: a ~10 MB line, NULs, invalid UTF-8, an empty record, between good texts."""
    w = ArchiveWriter(path, prose)

    def conversion(name, data: bytes, **kw) -> bytes:
        return warc_record(data, name, f"http://text.example.net/{name}", rtype="conversion", ctype="text/plain", **kw)

    w.good_text()
    line = prose.reserved_line(1)
    huge = ((line + " ") * (9_990_000 // len(line) + 1))[:9_990_000].encode()
    w.fault("single_line_10mb_text", conversion("huge-line", huge), allowed=("gopher_repetition:",),
            why="one 10 MB line made of one passage repeated: repetition filters reject it")
    w.good_text()
    i, sentences = prose.take()
    nul_text = page_text(sentences).replace(" the ", " the\x00 ").replace("\n\n", "\n\x00\n")
    w.fault("nul_bytes_in_text", conversion("nul-text", nul_text.encode()), allowed=(KEPT,),
            marker=marker_of(sentences).split(" the ")[0], why="normalize drops the NULs")
    w.good_text()
    i, sentences = prose.take()
    raw = page_text(sentences).encode()
    broken = raw[:300] + b"\xff\xfe\xc0\xaf" + raw[300:900] + b"\xed\xa0\x80" + raw[900:]
    w.fault("invalid_utf8_in_text", conversion("bad-utf8-text", broken), allowed=(KEPT,),
            marker=marker_of(sentences)[:40], why="WET text is UTF-8; bad bytes become U+FFFD")
    w.good_text()
    w.fault("counter_line_5000", conversion("counters", ("3 likes " * 5000 + "!x").encode()),
            allowed=CONTENT_REJECTIONS,
            why="one line of 5,000 social counters: a filter rejects it (the counter-line pattern used to "
                "backtrack exponentially on such a line)")
    w.good_text()
    i, sentences = prose.take()
    _, more = prose.take()
    counters = "3 likes " * 40 + "!x"
    text = page_text(sentences) + "\n\n" + counters + "\n\n" + page_text(more)
    w.fault("counter_run_in_a_page", conversion("counter-run", text.encode()), allowed=(KEPT,),
            marker=counters, why="a good page with one line of 40 counters that is not only counters: it "
                                 "stays (the counter-line pattern used to backtrack 2^40 times on it)")
    w.good_text()
    w.fault("empty_text_record", conversion("empty-text", b""), allowed=("langid:empty",),
            why="nothing to classify")
    w.good_text()
    w.fault("text_record_too_large", conversion("big-text", b"x " * 5_000_001), allowed=("read:too_large",),
            why="over max_bytes")
    w.good_text()
    w.close()
    return w


def build_corpus(folder: Path) -> Corpus:
    rng = random.Random(20240520)
    prose = Prose()
    folder.mkdir(parents=True, exist_ok=True)
    writers = [
        build_faults_warc(folder / "faults.warc.gz", prose, rng),
        build_truncated_warc(folder / "truncated.warc.gz", prose),
        build_plain_warc(folder / "plain.warc", prose, rng),
        build_wet(folder / "text.warc.wet.gz", prose),
    ]
    return Corpus(folder, [w.path for w in writers], [e for w in writers for e in w.entries])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("bad-input") / "corpus")


@pytest.fixture(scope="module")
def records(corpus):
    """Every record the reader yields from the corpus: [(entry, doc, read reason or None)], plus seconds."""
    out, slowest = [], 0.0
    for path in corpus.files:
        it = iter_records(path)
        while True:
            t0 = time.perf_counter()
            try:
                doc, why = next(it)
            except StopIteration:
                break
            slowest = max(slowest, time.perf_counter() - t0)
            assert doc["source"] == path
            out.append((corpus.entry_of(path, doc["record_offset"]), doc, why))
    return out, slowest


def document_stages(name: str) -> List[DocumentStage]:
    pipeline, overrides = VARIANTS.get(name, (name, []))
    return [s for s in get_pipeline(pipeline, overrides=overrides).build_stages() if isinstance(s, DocumentStage)]


@pytest.fixture(scope="module")
def outcomes(records):
    """{pipeline: [(entry, final doc, outcome)]} with outcome "kept", a read reason or a stage reason."""
    recs, _ = records
    result = {}
    for name in PIPELINES:
        page_docs = [doc for _, doc, why in recs if why is None]
        staged = iter(run_stages(document_stages(name), page_docs))
        rows = []
        for entry, doc, why in recs:
            if why is None:
                doc, why = next(staged)
            rows.append((entry, doc, why or KEPT))
        assert next(staged, None) is None
        result[name] = rows
    return result


# ---------------------------------------------------------------------------------------------------
# Checks


def check_outcomes(corpus: Corpus, rows) -> Dict[str, int]:
    """Assert the per-entry contract on (entry, doc, outcome) rows; return the counts for the table."""
    by_entry: Dict[str, list] = collections.defaultdict(list)
    for entry, doc, outcome in rows:
        assert ":error:" not in outcome, f"{entry.name}: dead letter {outcome}"
        by_entry[(entry.path, entry.offset)].append((doc, outcome))
    lost = []
    for e in corpus.entries:
        got = by_entry.get((e.path, e.offset), [])
        outs = [o for _, o in got]
        if e.good:
            if outs != [KEPT]:
                lost.append(f"good page {e.name} -> {outs}")
                continue
        else:
            if not got:
                lost.append(f"fault {e.name} produced no record (not counted)")
                continue
            bad = [o for o in outs if not any(outcome_matches(o, p) for p in e.allowed)]
            if bad:
                lost.append(f"fault {e.name} -> {outs}, expected {e.allowed} ({e.why})")
                continue
            if e.must and not any(outcome_matches(o, p) for o in outs for p in e.must):
                lost.append(f"fault {e.name} -> {outs}: none is {e.must} ({e.why})")
                continue
        if e.marker is not None:
            kept_texts = [d["text"] for d, o in got if o == KEPT]
            if not any(e.marker in t for t in kept_texts):
                lost.append(f"{e.name}: kept text lacks {e.marker!r}")
            if any("\x00" in t for t in kept_texts):
                lost.append(f"{e.name}: kept text holds NUL")
    assert not lost, "\n".join(lost)
    n_kept = sum(o == KEPT for _, _, o in rows)
    return {"records": len(rows), "kept": n_kept, "rejected": len(rows) - n_kept, "lost": len(lost)}


def print_table(corpus: Corpus, lines: List[Tuple[str, Dict[str, int]]], capsys) -> None:
    with capsys.disabled():
        print(f"\n\nbad-input corpus: {len(corpus.files)} files, {len(corpus.entries)} entries "
              f"({len(corpus.good)} good pages, {len(corpus.faults)} faults injected)")
        print(f"{'run':<34}{'inputs':>8}{'faults':>8}{'records':>9}{'kept':>6}{'rejected':>10}{'lost':>6}")
        for label, c in lines:
            print(f"{label:<34}{len(corpus.entries):>8}{len(corpus.faults):>8}{c['records']:>9}"
                  f"{c['kept']:>6}{c['rejected']:>10}{c['lost']:>6}")


@pytest.mark.timeout(180)
def test_readers_count_every_fault_and_keep_every_good_page(corpus, records):
    recs, slowest = records
    assert len(corpus.faults) >= 40 and len(corpus.good) >= 40
    reasons = collections.Counter(why for _, _, why in recs if why)
    # each kind of damage is reported under its own reason
    for reason in ("read:corrupt_gzip", "read:truncated", "read:bad_header", "read:bad_http", "read:non_html",
                   "read:too_large"):
        assert reasons[reason] >= 1, (reason, reasons)
    for entry, doc, why in recs:
        if entry.good:
            assert why is None and doc["id"] == f"<urn:uuid:{entry.name}>", (entry.name, why)
        assert why is None or why.startswith("read:")
    n_good_read = sum(1 for e, _, why in recs if e.good and why is None)
    assert n_good_read == len(corpus.good)
    assert slowest < 20, f"one record took {slowest:.1f}s to read"


def print_fault_outcomes(corpus: Corpus, outcomes, capsys) -> None:
    """One line per fault: what became of its record(s) in each pipeline."""
    per = {name: collections.defaultdict(list) for name in PIPELINES}
    for name in PIPELINES:
        for entry, _, outcome in outcomes[name]:
            per[name][(entry.path, entry.offset)].append(outcome)
    with capsys.disabled():
        print(f"\n{'fault':<36}" + "".join(f"{name:<40}" for name in PIPELINES))
        for e in corpus.faults:
            cells = [", ".join(per[name][(e.path, e.offset)]) for name in PIPELINES]
            print(f"{e.name:<36}" + "".join(f"{c:<40}" for c in cells))


@pytest.mark.timeout(300)
def test_every_document_stage_survives_the_corpus(corpus, outcomes, capsys):
    lines = []
    for name in PIPELINES:
        counts = check_outcomes(corpus, outcomes[name])
        assert counts["records"] == counts["kept"] + counts["rejected"]
        lines.append((f"reader + {name} stages", counts))
    print_table(corpus, lines, capsys)
    print_fault_outcomes(corpus, outcomes, capsys)


@pytest.mark.timeout(300)
def test_beam_run_refinedweb_fast_end_to_end(corpus, outcomes, tmp_path, capsys):
    from pipeline.run import run_pipeline

    out = tmp_path / "out"
    report = run_pipeline("refinedweb_fast", [str(corpus.folder)], str(out), draw=False)
    plain = outcomes["refinedweb_fast"]
    assert report["input_documents"] == len(plain)
    assert report["input_documents"] == report["output_documents"] + report["rejected_documents"]
    read = report["stages"][0]
    assert read["name"] == "read"
    assert read["rejected"] == dict(collections.Counter(o for _, _, o in plain if o.startswith("read:")))
    docs = shard_io.read_table(str(out / "documents")).to_pylist()
    rejected = shard_io.read_table(str(out / "rejected")).to_pylist()
    assert len(docs) + len(rejected) == len(plain)
    assert not any(":error:" in r["reason"] for r in rejected)
    # Beam decides every record as the plain loop did; only dedup may remove more
    plain_by_key = {(d["source"], d["record_offset"], d["id"]): o for _, d, o in plain}
    beam_rows = [(r, KEPT) for r in docs] + [(r, r["reason"]) for r in rejected]
    for row, outcome in beam_rows:
        expected = plain_by_key.pop((row["source"], row["record_offset"], row["id"]))
        assert outcome == expected or (expected == KEPT and outcome.startswith(DEDUP_STAGES)), (row["id"], outcome, expected)
    assert not plain_by_key
    kept_ids = {r["id"] for r in docs}
    missing = [e.name for e in corpus.good if f"<urn:uuid:{e.name}>" not in kept_ids]
    assert not missing, f"good pages lost in the Beam run: {missing}"
    n_kept = len(docs)
    print_table(corpus, [("Beam run_pipeline refinedweb_fast", {
        "records": report["input_documents"], "kept": n_kept, "rejected": len(rejected), "lost": len(missing)})], capsys)


_RSS_PROBE = r"""
import json, os, sys, threading, time
from pipeline.io.readers import iter_records

def rss_kb():  # resident set size now (Linux)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

peak, done = [rss_kb()], threading.Event()
def sample():
    while not done.is_set():
        peak.append(max(peak[-1], rss_kb()))
        time.sleep(0.002)

base = peak[0]
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t = time.time()
out = [(d["id"], why) for d, why in iter_records(sys.argv[1])]
seconds = time.time() - t
done.set()
sampler.join()
print(json.dumps({"base_kb": base, "peak_kb": max(peak + [rss_kb()]), "seconds": seconds, "records": out}))
"""


@pytest.mark.timeout(120)
def test_big_page_and_bombs_are_read_in_bounded_memory(corpus, capsys):
    """The faults archive holds the 50 MB page and bombs that inflate to 1 and 2 GiB (and a 2 GiB junk
    member): reading it must stay far below what they inflate to. The bound is the reader's own design:
    one raw window (at most 64 MiB of a member's compressed bytes) plus 1 MiB pieces, plus a decoded
    page of at most max_bytes (10 MB: the 9.9 MB one-line page is in this archive). The resident set
    size is sampled every 2 ms while reading."""
    path = next(p for p in corpus.files if p.endswith("faults.warc.gz"))
    size = os.path.getsize(path)
    bomb = next(e for e in corpus.faults if e.name == "warc_gzip_bomb_2gib")
    assert bomb.inflates_to >= 2 << 30 and size < 80 * MIB  # a small file that inflates to GiBs
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", _RSS_PROBE, path], capture_output=True, text=True, env=env,
                         timeout=110, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    probe = json.loads(res.stdout.strip().splitlines()[-1])
    growth_mib = (probe["peak_kb"] - probe["base_kb"]) / 1024
    ids = dict((i, why) for i, why in probe["records"])
    assert ids["<urn:uuid:page-50mb>"] == ids["<urn:uuid:warc-bomb>"] == ids["<urn:uuid:http-bomb>"] == "read:too_large"
    assert 20 <= growth_mib < 256, f"reading grew RSS by {growth_mib:.0f} MiB"  # >= 20: the 9.9 MB page
    assert probe["seconds"] < 60
    with capsys.disabled():
        inflated = sum(e.inflates_to for e in corpus.faults if e.path == path)
        print(f"\nreading {os.path.basename(path)} ({size / MIB:.1f} MiB on disk, its bombs and big page "
              f"inflating to {inflated / (1 << 30):.1f} GiB): peak RSS "
              f"+{growth_mib:.0f} MiB over the interpreter, {probe['seconds']:.1f} s")


def test_corpus_builder_writes_what_it_says(corpus):
    """The corpus itself: offsets point at record or member starts, and the good pages are valid records
    that an independent reader (warcio) reads with their real text."""
    from warcio.archiveiterator import ArchiveIterator

    for e in corpus.good:
        with open(e.path, "rb") as fh:
            fh.seek(e.offset)
            assert fh.read(10).startswith(b"\x1f\x8b\x08" if e.path.endswith(".gz") else b"WARC/1.0\r\n")
    seen = set()
    with open(next(p for p in corpus.files if p.endswith("truncated.warc.gz")), "rb") as fh:
        for rec in ArchiveIterator(fh):
            rid = rec.rec_headers.get_header("WARC-Record-ID")
            if rid.startswith("<urn:uuid:good-"):
                text = rec.content_stream().read().decode()
                entry = next(e for e in corpus.good if f"<urn:uuid:{e.name}>" == rid)
                assert entry.marker in text
                seen.add(rid)
            if len(seen) == 2:
                break
    assert len(seen) == 2
