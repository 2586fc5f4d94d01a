"""Tests of the gzip member reader (pipeline/io/gzip_members.py): member events and resynchronisation after
damage, on small synthetic members, read whole and in tiny pieces."""

from __future__ import annotations

import gzip
import io

import pytest

from pipeline.io.gzip_members import GZIP_MAGIC, GzipMembers, RawWindow, inflate_all


def _starts(head: bytes) -> bool:
    return head.startswith(b"REC")


def _member(text: bytes) -> bytes:
    return gzip.compress(text, mtime=0)


def _damaged(member: bytes) -> bytes:
    body = bytearray(member)
    for i in range(12, len(body) - 8, 7):  # deflate data only: header and trailer stay intact
        body[i] ^= 0x55
    return bytes(body)



def _events(data: bytes, stream=None, abandon_at=None):
    fh = stream or io.BytesIO(data)
    gm = GzipMembers(RawWindow(fh), _starts)
    out = []
    for ev in gm.events():
        if ev[0] == "data":
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + ev[1])
            else:
                out.append(ev)
            if abandon_at is not None and out[-2:-1] == [("member", abandon_at)]:
                gm.abandon = True
        else:
            out.append(ev)
    return out


def _offsets(members):
    offs, pos = [], 0
    for m in members:
        offs.append(pos)
        pos += len(m)
    return offs


@pytest.mark.parametrize("piece", [0, 5, 4099])
def test_clean_members_are_member_data_end_in_order(piece, trickle):
    members = [_member(b"REC %d " % i + b"x" * (i * 1000)) for i in range(4)]
    offs = _offsets(members)
    data = b"".join(members)
    events = _events(data, trickle(data, piece) if piece else None)
    expected = []
    for i, off in enumerate(offs):
        expected += [("member", off), ("data", gzip.decompress(members[i])), ("end", off)]
    assert events == expected


@pytest.mark.parametrize("piece", [0, 3])
def test_a_damaged_member_is_reported_and_reading_resumes_at_the_next_record(piece, trickle):
    members = [_member(b"REC a " * 200), _damaged(_member(b"REC b " * 200)), _member(b"REC c " * 200)]
    offs = _offsets(members)
    data = b"".join(members)
    events = _events(data, trickle(data, piece) if piece else None)
    kinds = [e for e in events if e[0] != "data"]
    assert kinds == [("member", offs[0]), ("end", offs[0]), ("member", offs[1]), ("damaged", offs[1]),
                     ("member", offs[2]), ("end", offs[2])]
    datas = [e[1] for e in events if e[0] == "data"]
    assert datas[0] == b"REC a " * 200 and datas[-1] == b"REC c " * 200


def test_headers_skipped_while_resynchronising_count_as_lost_members():
    # after the damaged member, a sound member that does not start a record is skipped: one more loss
    members = [_member(b"REC a"), _damaged(_member(b"REC b " * 100)), _member(b"not a record"), _member(b"REC d")]
    offs = _offsets(members)
    kinds = [e for e in _events(b"".join(members)) if e[0] != "data"]
    assert kinds == [("member", offs[0]), ("end", offs[0]), ("member", offs[1]), ("damaged", offs[1]),
                     ("damaged", offs[2]), ("member", offs[3]), ("end", offs[3])]


def test_garbage_between_members_is_one_loss_and_trailing_padding_is_none():
    a, b = _member(b"REC a"), _member(b"REC b")
    data = a + b"garbage bytes that are no gzip header" + b + b"\r\n\x00 \n"
    kinds = [e for e in _events(data) if e[0] != "data"]
    assert kinds == [("member", 0), ("end", 0), ("damaged", len(a)),
                     ("member", len(data) - len(b) - 5), ("end", len(data) - len(b) - 5)]


def test_a_member_cut_by_the_end_of_the_file_is_truncated_and_ends_the_stream():
    a, b = _member(b"REC a"), _member(b"REC b " * 500)
    kinds = [e for e in _events(a + b[: len(b) // 2]) if e[0] != "data"]
    assert kinds == [("member", 0), ("end", 0), ("member", len(a)), ("truncated", len(a))]


def test_the_consumer_can_abandon_a_member_and_reading_resumes_at_the_next():
    members = [_member(b"REC a"), _member(b"REC big " * 50_000), _member(b"REC c")]
    offs = _offsets(members)
    kinds = [e for e in _events(b"".join(members), abandon_at=offs[1]) if e[0] != "data"]
    assert kinds == [("member", offs[0]), ("end", offs[0]), ("member", offs[1]), ("abandoned", offs[1]),
                     ("member", offs[2]), ("end", offs[2])]


def test_raw_window_reads_on_demand_and_forgets_what_it_discarded(trickle):
    raw = RawWindow(trickle(b"0123456789" * 10, 7))
    raw.ensure(20)
    assert raw.end >= 20 and raw.slice(10, 20) == b"0123456789"
    assert raw.end == 21  # 7-byte reads: three of them
    assert raw.find(b"45", 10) == 14 and raw.find(b"45", 15) == -1  # only what was read is searched
    raw.discard_before(30)  # past what was read: drops what is there, no more
    assert raw.start == 21 and raw.buf == bytearray()
    raw.ensure(40)
    raw.discard_before(30)
    assert raw.start == 30 and raw.slice(30, 33) == b"012"
    raw.ensure(10_000)
    assert raw.eof and raw.end == 100 and raw.find(b"89", 95) == 98


def test_inflate_all_joins_members_and_rejects_damage():
    assert GZIP_MAGIC == gzip.compress(b"")[:3]
    assert inflate_all(_member(b"one\n") + _member(b"two\n"), "x") == b"one\ntwo\n"
    with pytest.raises(ValueError, match="damaged gzip data"):
        inflate_all(_damaged(_member(b"x" * 5000)), "list.paths.gz")


def _damaged_variants(data: bytes, n: int, seed: int):
    """``n`` damaged copies of ``data``: bits flipped, bytes overwritten, stretches cut, junk inserted, cut ends."""
    import random

    rng = random.Random(seed)
    for k in range(n):
        b = bytearray(data)
        p = rng.randrange(len(b))
        kind = k % 5
        if kind == 0:
            b[p] ^= 1 << rng.randrange(8)
        elif kind == 1:
            for _ in range(rng.randint(2, 20)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 2:
            del b[p:p + rng.randint(1, 5000)]
        elif kind == 3:
            b[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        else:
            del b[p:]
        yield bytes(b)


def _read_with(inflater, data: bytes, monkeypatch):
    """Everything the archive reader makes of ``data`` with ``inflater`` as the gzip inflater: each raw
    record's offset, headers, problem and block, and each page's document and reason."""
    import pipeline.io.gzip_members as gm
    from pipeline.io.archives import _archive_record_to_document, iter_raw_records
    from pipeline.io.contract import ReaderParams
    from pipeline.io.dialects import WARC

    monkeypatch.setattr(gm, "_inflater", inflater)
    params = ReaderParams()
    out = []
    for rec in iter_raw_records(io.BytesIO(data), WARC, params):
        out.append((rec.offset, sorted(rec.headers.items()), rec.problem, rec.too_large, rec.block,
                    _archive_record_to_document(rec, "x.warc.gz", params)))
    return out


def test_zlib_ng_reads_damaged_archives_exactly_as_zlib(shared_data, monkeypatch):
    """The reader inflates with zlib-ng for speed; on clean and damaged archives (one member per record, and
    the same records gzipped as one member, where how far damage lets data through decides which records
    stand) every record, reason and byte is what zlib gives."""
    import zlib

    import pipeline.io.gzip_members as gm

    assert gm.INFLATER == "zlib_ng.zlib_ng", "zlib-ng (a dependency) is not the reader's inflater"
    zlib_ng = gm._inflater
    per_record = (shared_data / "warc" / "cc-main-2020-34-excerpt.warc.gz").read_bytes()
    one_member = gzip.compress(gzip.decompress(per_record), compresslevel=6, mtime=0)
    n_damaged = 0
    for data, seed in ((per_record, 1), (one_member, 2)):
        clean = _read_with(zlib, data, monkeypatch)
        assert _read_with(zlib_ng, data, monkeypatch) == clean and len(clean) > 10
        for bad in _damaged_variants(data, 40, seed):
            expected = _read_with(zlib, bad, monkeypatch)
            n_damaged += expected != clean
            assert _read_with(zlib_ng, bad, monkeypatch) == expected
    assert n_damaged >= 60  # the variants really are damaged (a flipped bit can land in a header field)
