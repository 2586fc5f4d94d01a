"""Tests of the two record loops of pipeline/io/archives.py on scripted source events: gzip members (records
wait for their member's CRC) and streams (records wait until ``hold`` more bytes decoded cleanly)."""

from __future__ import annotations

import io

from pipeline.io.archives import _gzip_records, _stream_records, iter_raw_records
from pipeline.io.contract import R_CORRUPT_GZIP, R_CORRUPT_STREAM, R_TRUNCATED, ReaderParams
from pipeline.io.dialects import WARC
from pipeline.io.splitter import RecordSplitter


def _warc(rid: str, body: bytes) -> bytes:
    return (f"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:{rid}>\r\n"
            f"Content-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body + b"\r\n\r\n"


class _Scripted:
    """A source whose events are given (what GzipMembers / StreamChunks would report)."""

    def __init__(self, events):
        self._events = events
        self.abandon = False

    def events(self):
        yield from self._events


def _ids(records):
    return [(r.headers.get("warc-record-id"), r.problem) for r in records]


def _splitter(compressed: bool) -> RecordSplitter:
    return RecordSplitter(WARC, ReaderParams(), compressed)


A, B, C = _warc("a", b"<p>a</p>"), _warc("b", b"<p>b</p>"), _warc("c", b"<p>c</p>")


def test_gzip_records_of_a_sound_member_are_handed_out():
    events = [("member", 0), ("data", A + B), ("end", 0), ("member", 500), ("data", C), ("end", 500)]
    got = list(_gzip_records(_Scripted(events), _splitter(True)))
    assert _ids(got) == [("<urn:a>", None), ("<urn:b>", None), ("<urn:c>", None)]
    assert [r.offset for r in got] == [0, 0, 500]


def test_gzip_records_of_a_damaged_member_become_corrupt_gzip():
    events = [("member", 0), ("data", A), ("end", 0), ("member", 300), ("data", B + C[:40]),
              ("damaged", 300), ("member", 900), ("data", C), ("end", 900)]
    got = list(_gzip_records(_Scripted(events), _splitter(True)))
    # b was cut from the damaged member (never handed out with damaged bytes); the start of c in it, a
    # header not yet complete, is one more loss; c is read again from the next member
    assert _ids(got) == [("<urn:a>", None), ("<urn:b>", R_CORRUPT_GZIP), (None, R_CORRUPT_GZIP),
                         ("<urn:c>", None)]
    assert [r.offset for r in got] == [0, 300, 300, 900]


def test_gzip_member_cut_by_the_end_of_the_file_truncates_what_it_held():
    events = [("member", 0), ("data", A), ("end", 0), ("member", 300), ("data", B), ("truncated", 300)]
    got = list(_gzip_records(_Scripted(events), _splitter(True)))
    assert _ids(got) == [("<urn:a>", None), ("<urn:b>", R_TRUNCATED)]


def test_stream_records_wait_for_hold_bytes_and_damage_takes_the_held_ones():
    filler = b"\n" * 200
    events = [("data", A), ("data", B), ("data", filler), ("data", C[:30]), ("damaged", 999, R_CORRUPT_STREAM)]
    got = list(_stream_records(_Scripted(events), _splitter(False), hold=150))
    # a is cut once b's bytes show where it ends, then 200 clean bytes follow (> hold): it stands; b is cut
    # when c's first bytes arrive and is still held at the damage; c's half header is one more loss
    assert _ids(got) == [("<urn:a>", None), ("<urn:b>", R_CORRUPT_STREAM), (None, R_CORRUPT_STREAM)]


def test_stream_records_hand_out_without_hold_and_truncate_at_a_cut():
    events = [("data", A + B), ("data", C[:50]), ("truncated", 10)]
    got = list(_stream_records(_Scripted(events), _splitter(False), hold=1 << 20))
    assert _ids(got) == [("<urn:a>", R_TRUNCATED), ("<urn:b>", R_TRUNCATED), (None, R_TRUNCATED)]
    plain = list(_stream_records(_Scripted([("data", A + B + C)]), _splitter(False), hold=0))
    assert _ids(plain) == [("<urn:a>", None), ("<urn:b>", None), ("<urn:c>", None)]


def test_iter_raw_records_picks_the_loop_by_the_bytes():
    import gzip

    plain = list(iter_raw_records(io.BytesIO(A + B), WARC, ReaderParams()))
    gz = list(iter_raw_records(io.BytesIO(gzip.compress(A) + gzip.compress(B)), WARC, ReaderParams()))
    assert _ids(plain) == _ids(gz) == [("<urn:a>", None), ("<urn:b>", None)]
    assert [r.offset for r in plain] == [0, len(A)]
    assert [r.offset for r in gz] == [0, len(gzip.compress(A))]
