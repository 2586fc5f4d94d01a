"""Gzip data read member by member, with resynchronisation after damage.

``.gz`` archives are decompressed gzip member by gzip member (``decompressobj(31)``). ``GzipMembers``
turns a binary stream into events (``member``, ``data``, ``end``, ``damaged``, ``abandoned``,
``truncated``): a member that fails to inflate (or fails its CRC) is reported as damaged and the stream
resumes at the next gzip header whose first bytes inflate to the start of a record (the caller says what
a record start looks like). The raw bytes are held in a sliding window (``RawWindow``) that is read on
demand and dropped once passed. ``inflate_all`` inflates a small in-memory file (path lists) whole.

Members are inflated by zlib-ng (``zlib_ng.zlib_ng``, a dependency: ~2x faster than the system zlib on the
shared archives, ~0.17 ms per WARC record, the reader's largest cost) when it is installed, else by
``zlib``. zlib-ng is a fork of zlib with the same API and the same stream checks, so the bytes, the
``unconsumed_tail`` and the point where damage is detected are zlib's (``tests/pipeline/io/
test_io_gzip_members.py`` compares both on damaged archives); ``INFLATER`` names the one in use.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator, List, Optional, Tuple

from pipeline.io.contract import FILL, READ_CHUNK

try:  # zlib-ng: zlib's API and checks, inflating ~2x faster (module docstring)
    from zlib_ng import zlib_ng as _inflater
except ImportError:  # pragma: no cover - a dependency; zlib gives the same results, slower
    _inflater = zlib
INFLATER = _inflater.__name__
_INFLATE_ERRORS = (zlib.error, _inflater.error)  # zlib-ng's error is its own class

GZIP_MAGIC = b"\x1f\x8b\x08"
INFLATE_PIECE = 1 << 16  # compressed bytes handed to zlib at a time
INFLATE_OUT = 1 << 20  # most decompressed bytes one zlib call may return
_PROBE_IN = 1 << 16  # compressed bytes inflated to test a candidate member start
_RETAIN_LIMIT = 64 << 20  # raw bytes of one member kept for resynchronisation


def inflate_all(data: bytes, what: str) -> bytes:
    """All gzip members of a small in-memory file (path lists)."""
    out = []
    while data[:2] == GZIP_MAGIC[:2]:
        d = zlib.decompressobj(31)
        try:
            out.append(d.decompress(data))
        except zlib.error as exc:
            raise ValueError(f"{what}: damaged gzip data ({exc})") from exc
        data = d.unused_data
    return b"".join(out)


class RawWindow:
    """The bytes [start, end) of a binary stream, read on demand and dropped when no longer needed."""

    def __init__(self, fh, first: bytes = b""):
        self.fh = fh
        self.buf = bytearray(first)
        self.start = 0
        self.eof = False

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        if self.eof:
            return False
        data = self.fh.read(READ_CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def ensure(self, upto: int) -> None:
        while self.end < upto and self.fill():
            pass

    def slice(self, a: int, b: int) -> bytes:
        return bytes(self.buf[a - self.start: b - self.start])

    def find(self, sub: bytes, a: int) -> int:
        i = self.buf.find(sub, max(a - self.start, 0))
        return -1 if i < 0 else i + self.start

    def discard_before(self, pos: int) -> None:
        n = min(pos, self.end) - self.start
        if n > 0:
            del self.buf[:n]
            self.start += n


class GzipMembers:
    """Events over concatenated gzip members: ('member', off) ('data', bytes) ('end', off)
    ('damaged', off) ('abandoned', off) ('truncated', off). After 'damaged' or 'abandoned' the stream
    resumes at the next gzip header whose first bytes inflate to something ``starts_record`` accepts;
    each gzip header skipped on the way is reported as one more 'damaged' member (so two neighbouring
    damaged members count twice; a member whose own gzip header is destroyed cannot be told apart
    from the damaged member before it and is counted with it)."""

    def __init__(self, raw: RawWindow, starts_record: Callable[[bytes], bool]):
        self.raw = raw
        self.starts_record = starts_record
        self.abandon = False  # set by the consumer (during a 'data' event) to give up the current member

    def events(self) -> Iterator[tuple]:
        raw = self.raw
        pos = raw.start
        while True:
            raw.ensure(pos + 4096)
            if pos >= raw.end:
                return
            if raw.slice(pos, pos + 3) != GZIP_MAGIC:
                if raw.eof and not raw.slice(pos, raw.end).strip(FILL):
                    return  # trailing padding, not data
                nxt, failed = self._next_member(pos + 1)
                for lost in [pos] + failed:
                    yield ("damaged", lost)
                if nxt is None:
                    return
                pos = nxt
                continue
            yield ("member", pos)
            outcome, end = yield from self._inflate_member(pos)
            if outcome == "end":
                yield ("end", pos)
                pos = end
                raw.discard_before(pos)
                continue
            if outcome == "truncated":
                yield ("truncated", pos)
                return
            nxt, failed = self._next_member(max(pos + 1, raw.start))
            yield (outcome, pos)
            if outcome == "damaged":  # further gzip headers in the skipped stretch: members lost as well
                for lost in failed:  # (not after 'abandoned': a huge member's data holds chance matches)
                    yield ("damaged", lost)
            if nxt is None:
                return
            pos = nxt

    def _inflate_member(self, pos: int):
        raw = self.raw
        d = _inflater.decompressobj(31)
        i = pos
        try:
            while True:
                if i >= raw.end and not raw.fill():
                    return "truncated", None
                piece = raw.slice(i, min(raw.end, i + INFLATE_PIECE))
                piece_end = i + len(piece)
                out = d.decompress(piece, INFLATE_OUT)
                while True:
                    if out:
                        yield ("data", out)
                    if self.abandon:
                        self.abandon = False
                        return "abandoned", None
                    if d.eof:
                        return "end", piece_end - len(d.unused_data)
                    if not d.unconsumed_tail and len(out) < INFLATE_OUT:
                        break
                    out = d.decompress(d.unconsumed_tail, INFLATE_OUT)
                i = piece_end
                if i - raw.start > _RETAIN_LIMIT:
                    raw.discard_before(i)
        except _INFLATE_ERRORS:
            return "damaged", None

    def _next_member(self, start: int) -> Tuple[Optional[int], List[int]]:
        """(offset of the next gzip header at or after ``start`` that begins a record, or None;
        offsets of the gzip headers skipped on the way because they did not inflate to a record)."""
        raw = self.raw
        failed: List[int] = []
        while True:
            idx = raw.find(GZIP_MAGIC, start)
            if idx < 0:
                start = max(start, raw.end - len(GZIP_MAGIC) + 1)
                raw.discard_before(start)
                if not raw.fill():
                    return None, failed
                continue
            raw.ensure(idx + _PROBE_IN)
            if self._member_starts_record(idx):
                return idx, failed
            failed.append(idx)
            start = idx + 1

    def _member_starts_record(self, idx: int) -> bool:
        d = _inflater.decompressobj(31)
        try:
            head = d.decompress(self.raw.slice(idx, idx + _PROBE_IN), 4096)
        except _INFLATE_ERRORS:
            return False
        return self.starts_record(head)
