"""Tests of the record headers (pipeline/io/dialects.py) and the record splitter (pipeline/io/splitter.py):
header parsing of both dialects, and records cut identically however the stream is fed."""

from __future__ import annotations

import pytest

from pipeline.io.contract import R_BAD_HEADER, R_TRUNCATED, ReaderParams
from pipeline.io.dialects import ARC, BAD, NEED, WARC, parse_fields
from pipeline.io.splitter import _PEEK as PEEK, RecordSplitter


def _warc(rid: str, body: bytes, length=None) -> bytes:
    n = len(body) if length is None else length
    return (f"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:{rid}>\r\n"
            f"Content-Type: text/html\r\nContent-Length: {n}\r\n\r\n").encode() + body + b"\r\n\r\n"


def _cut(data: bytes, piece: int, dialect=WARC, params=None):
    sp = RecordSplitter(dialect, params or ReaderParams(), compressed=False)
    out = []
    for i in range(0, len(data), piece):
        out += sp.feed(data[i:i + piece])
    out += sp.finish()
    return [(r.offset, r.headers.get("warc-record-id"), r.block, r.too_large, r.problem) for r in out]


def test_parse_fields_folds_lines_and_keeps_the_first_occurrence():
    fields = parse_fields([b"Name: one", b"  more", b"name: two", b"bogus line", b"\tfolded after bogus",
                           b"Other:x"])
    assert fields == {"name": "one more", "other": "x"}


def test_warc_header_states():
    assert WARC.parse_header(bytearray(b"WAR")) is NEED
    assert WARC.parse_header(bytearray(b"HTTP/1.1 200")) is BAD
    assert WARC.parse_header(bytearray(b"WARC/1.0\r\nContent-Length: 5\r\n")) is NEED
    assert WARC.parse_header(bytearray(b"WARC/1.0\r\nContent-Length: x\r\n\r\n")) is BAD
    assert WARC.parse_header(bytearray(b"WARC/1.0\r\nContent-Length: -1\r\n\r\n")) is BAD
    header_len, fields, length = WARC.parse_header(bytearray(b"WARC/1.0\nContent-Length: 7\n\nbody..."))
    assert (header_len, fields, length) == (28, {"content-length": "7"}, 7)
    assert WARC.starts_record(b"\r\n WARC/1.1") and not WARC.starts_record(b"warc/1.0")
    assert WARC.find_next_start(bytearray(b"xx\nWARC/1.0"), 1) == 3


def test_arc_header_lines_map_to_warc_fields():
    line = b"http://example.com/a 1.2.3.4 20080430204825 text/html 42\n"
    header_len, fields, length = ARC.parse_header(bytearray(line + b"x" * 42))
    assert header_len == len(line) and length == 42
    assert fields == {"warc-type": "response", "warc-target-uri": "http://example.com/a",
                      "warc-date": "2008-04-30T20:48:25Z", "content-type": "text/html",
                      "x-arc-date": "20080430204825"}
    info = ARC.parse_header(bytearray(b"filedesc://x.arc 0.0.0.0 20080430204825 text/plain 3\nabc"))
    assert info[1]["warc-type"] == "warcinfo"
    assert ARC.parse_header(bytearray(b"not a header at all\n")) is BAD
    assert ARC.parse_header(bytearray(b"http://example.com/a 1.2.3.4")) is NEED


PARTS = [_warc("a", b"<p>one</p>"), _warc("b", b"<p>two</p>" * 50), _warc("c", b"<p>lying</p>", length=10_000),
         _warc("d", b"<p>four</p>")]
STREAM = b"".join(PARTS)
OFFSETS = [sum(len(p) for p in PARTS[:i]) for i in range(len(PARTS))]


@pytest.mark.parametrize("piece", [1, 7, 64, 4096, len(STREAM)])
def test_records_are_cut_the_same_however_the_stream_is_fed(piece):
    got = _cut(STREAM, piece)
    assert got == [
        (OFFSETS[0], "<urn:a>", b"<p>one</p>", False, None),
        (OFFSETS[1], "<urn:b>", b"<p>two</p>" * 50, False, None),
        (OFFSETS[2], "<urn:c>", b"", False, R_TRUNCATED),  # its length ran into record d: cut there
        (OFFSETS[3], "<urn:d>", b"<p>four</p>", False, None),
    ]


def test_oversized_blocks_keep_only_a_prefix_and_cut_files_are_truncated():
    big = b"<p>" + b"x" * (3 * PEEK) + b"</p>"
    got = _cut(_warc("big", big) + _warc("cut", b"y" * 100)[:-60], 1000, params=ReaderParams(max_bytes=PEEK))
    assert got[0][1:] == ("<urn:big>", big[:PEEK], True, None)
    assert got[1][1:] == ("<urn:cut>", b"y" * 44, False, R_TRUNCATED)  # 100 bytes + 4 of filler, 60 cut
    assert len(got) == 2


def test_junk_between_records_is_one_bad_header():
    data = _warc("a", b"one") + b"some junk that is not a record\n" * 3 + _warc("b", b"two")
    got = _cut(data, 10)
    assert [(g[1], g[4]) for g in got] == [("<urn:a>", None), (None, R_BAD_HEADER), ("<urn:b>", None)]
