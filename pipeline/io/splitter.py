"""Cutting a (decompressed) archive byte stream, fed in pieces, into raw records.

``RecordSplitter`` knows the dialect's record headers and the Content-Length of each block; it records
which gzip member each record began in (``record_offset`` is that member's byte offset). A record cut off
by the end of the file is ``read:truncated``; everything before it is kept. In an uncompressed WARC a
block that does not end where the next record begins, and that holds a well-formed record header, is cut
at that header the same way (a lying Content-Length). Payloads above ``max_bytes`` are never held in
memory: only a 64 KiB prefix is kept, to read their HTTP headers (``too_large``); past
``max_expansion * max_bytes`` bytes of one compressed record the splitter asks to abandon the member.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from pipeline.io.contract import R_BAD_HEADER, R_TRUNCATED, ReaderParams, FILL, LEADING_FILL
from pipeline.io.dialects import BAD, HEADER_LIMIT, NEED

_FILL_LOOKAHEAD = 1 << 16  # filler after a block beyond this is not waited out
_PEEK = 1 << 16  # bytes of an oversized block kept to read its HTTP headers


@dataclasses.dataclass
class RawRecord:
    offset: int
    headers: Dict[str, str]
    block: bytes = b""  # the whole block, or its first _PEEK bytes when too_large
    too_large: bool = False
    problem: Optional[str] = None  # a reason decided while splitting (truncated, corrupt_gzip, bad_header)


class _Pending:
    __slots__ = ("offset", "headers", "length", "got", "prefix")

    def __init__(self, offset: int, headers: Dict[str, str], length: int):
        self.offset = offset
        self.headers = headers
        self.length = length
        self.got = 0
        self.prefix = bytearray()


class RecordSplitter:
    """Cuts records out of a byte stream fed in pieces; tracks which gzip member each record began in."""

    def __init__(self, dialect, params: ReaderParams, compressed: bool):
        self.dialect = dialect
        self.max_bytes = params.max_bytes
        self.record_cap = params.record_cap
        self.compressed = compressed
        self.buf = bytearray()
        self.spos = 0  # stream position of buf[0]
        self.marks: List[Tuple[int, int]] = []  # (stream position, member offset), ascending
        self.cur: Optional[_Pending] = None
        self.in_junk = False
        self.run = 0  # bytes consumed since the current record (or junk region) began
        self.want_abandon = False

    def start_member(self, offset: int) -> None:
        self.marks.append((self.spos + len(self.buf), offset))

    def _locate(self, spos: int) -> int:
        if not self.compressed:
            return spos
        offset = self.marks[0][1] if self.marks else 0
        for mpos, moff in self.marks:
            if mpos > spos:
                break
            offset = moff
        return offset

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.spos += n
        self.run += n
        while len(self.marks) > 1 and self.marks[1][0] <= self.spos:
            self.marks.pop(0)

    def feed(self, data: bytes) -> List[RawRecord]:
        self.buf += data
        return self._drain(final=False)

    def finish(self) -> List[RawRecord]:
        """Records left at the end of the stream (a record still open is truncated)."""
        return self._drain(final=True)

    def cut_at_member(self, data: bytes) -> Optional[RawRecord]:
        """Called with the first data of a new gzip member: when a record of an earlier member still waits
        for bytes and this member starts a record, the waiting record's Content-Length lies (each record
        has its own member): it is cut here as truncated instead of swallowing the records that follow."""
        if self.cur is None or not self.dialect.starts_record(data[:4096]):
            return None
        cut = RawRecord(self.cur.offset, self.cur.headers, problem=R_TRUNCATED)
        self._consume(len(self.buf))
        self.cur = None
        self.run = 0
        return cut

    def abort(self) -> Optional[RawRecord]:
        """Forget everything buffered (its gzip member was lost); the record that was open, if any."""
        lost = None
        if self.cur is not None:
            lost = RawRecord(self.cur.offset, self.cur.headers)
        elif self.buf.strip(FILL) and not self.in_junk:
            lost = RawRecord(self._locate(self.spos), {})
        self.spos += len(self.buf)
        self.buf.clear()
        self.marks.clear()
        self.cur = None
        self.in_junk = False
        self.run = 0
        self.want_abandon = False
        return lost

    def _lying_length(self, length: int, final: bool):
        """For an uncompressed WARC (no gzip members to resynchronise on): when the bytes after a block of
        ``length`` are not (filler and) the next record, and the block itself holds a well-formed record
        header, the Content-Length ran past its record; return where that embedded record starts so it and
        the records after it are read, not swallowed. None when the block ends where a record (or the file)
        begins, or holds no record header; NEED when more bytes must arrive to tell."""
        buf = self.buf
        after = LEADING_FILL.match(buf, length).end()
        if len(buf) - after < 5:
            if final or after - length > _FILL_LOOKAHEAD:
                return None
            return NEED
        if buf[after:after + 5] == b"WARC/":
            return None
        return self._embedded_record(length)

    def _embedded_record(self, limit: int) -> Optional[int]:
        """Position (0 < pos < limit) of the first well-formed record header inside the buffer, or None."""
        buf = self.buf
        pos = self.dialect.find_next_start(buf, 1)
        while 0 < pos < limit:
            if isinstance(self.dialect.parse_header(buf[pos:pos + HEADER_LIMIT]), tuple):
                return pos
            pos = self.dialect.find_next_start(buf, pos + 1)
        return None

    def _drain(self, final: bool) -> List[RawRecord]:
        out: List[RawRecord] = []
        buf = self.buf
        while not self.want_abandon:
            if self.cur is None:
                k = LEADING_FILL.match(buf).end()
                if k:
                    self._consume(k)
                    if self.compressed and self.run > self.record_cap:  # a member inflating to filler
                        self.want_abandon = True
                        break
                if not buf:
                    break
                parsed = self.dialect.parse_header(buf)
                if parsed is NEED and final:
                    if self.dialect.starts_record(bytes(buf[:64])):
                        out.append(RawRecord(self._locate(self.spos), {}, problem=R_TRUNCATED))
                        self._consume(len(buf))
                        break
                    parsed = BAD
                if parsed is NEED:
                    break
                if parsed is BAD:
                    if not self.in_junk:
                        self.in_junk = True
                        self.run = 0
                        out.append(RawRecord(self._locate(self.spos), {}, problem=R_BAD_HEADER))
                    nxt = self.dialect.find_next_start(buf, 1)
                    if nxt > 0:
                        self._consume(nxt)
                        continue
                    self._consume(len(buf) if final else max(0, len(buf) - 8))
                    if self.compressed and self.run > self.record_cap:
                        self.want_abandon = True
                    break
                header_len, headers, length = parsed
                self.in_junk = False
                self.run = 0
                self.cur = _Pending(self._locate(self.spos), headers, length)
                self._consume(header_len)
            cur = self.cur
            if cur.length <= self.max_bytes:
                if len(buf) >= cur.length:
                    if not self.compressed and self.dialect.name == "warc":
                        embedded = self._lying_length(cur.length, final)
                        if embedded is NEED:
                            break  # wait for the bytes after the block
                        if embedded is not None:  # the block holds the next record: its length lies
                            out.append(RawRecord(cur.offset, cur.headers, problem=R_TRUNCATED))
                            self._consume(embedded)
                            self.cur = None
                            continue
                    block = bytes(buf[: cur.length])
                    self._consume(cur.length)
                    out.append(RawRecord(cur.offset, cur.headers, block))
                    self.cur = None
                    continue
                if final:
                    # the file ends inside the block; in an uncompressed WARC, records the lying length swallowed
                    # are still read (the cut record is truncated either way)
                    embedded = None
                    if not self.compressed and self.dialect.name == "warc":
                        embedded = self._embedded_record(len(buf))
                    out.append(RawRecord(cur.offset, cur.headers, b"" if embedded else bytes(buf),
                                          problem=R_TRUNCATED))
                    self._consume(embedded or len(buf))
                    self.cur = None
                    if embedded:
                        continue
                break
            # oversized block: keep a prefix for its HTTP headers, discard the rest as it streams by
            take = min(cur.length - cur.got, len(buf))
            room = _PEEK - len(cur.prefix)
            if room > 0:
                cur.prefix += buf[: min(take, room)]
            self._consume(take)
            cur.got += take
            if cur.got == cur.length:
                out.append(RawRecord(cur.offset, cur.headers, bytes(cur.prefix), too_large=True))
                self.cur = None
                continue
            if final:
                out.append(RawRecord(cur.offset, cur.headers, bytes(cur.prefix), problem=R_TRUNCATED))
                self.cur = None
            elif self.compressed and self.run > self.record_cap:
                out.append(RawRecord(cur.offset, cur.headers, bytes(cur.prefix), too_large=True))
                self.cur = None
                self.want_abandon = True
            break
        return out
