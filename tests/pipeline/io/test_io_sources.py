"""Tests of the byte sources (pipeline/io/sources.py): gzip, zstd, bzip2, xz and plain streams told apart by
magic bytes, bounded output per event, damage and truncation of whole-file compression."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

import pytest
import zstandard

from pipeline.io.contract import R_CORRUPT_STREAM
from pipeline.io.gzip_members import INFLATE_OUT, GzipMembers
from pipeline.io.sources import _STREAM_PIECE, PlainChunks, StreamChunks, open_source

COMPRESS = {
    "zstd": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
TEXT = b"".join(b"line %d of the test stream\n" % i for i in range(20_000))



def _data(source) -> bytes:
    return b"".join(e[1] for e in source.events() if e[0] == "data")


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_whole_file_compression_is_found_by_magic_bytes(kind, trickle):
    for fh in (io.BytesIO(COMPRESS[kind](TEXT)), trickle(COMPRESS[kind](TEXT), 3)):  # short reads too
        compressed, source = open_source(fh, lambda head: True)
        assert not compressed and isinstance(source, StreamChunks) and source.kind == kind
        assert _data(source) == TEXT


def test_gzip_and_plain_sources():
    compressed, source = open_source(io.BytesIO(gzip.compress(TEXT)), lambda head: True)
    assert compressed and isinstance(source, GzipMembers)
    assert _data(source) == TEXT
    compressed, source = open_source(io.BytesIO(TEXT), lambda head: True)
    assert not compressed and isinstance(source, PlainChunks)
    assert _data(source) == TEXT
    assert _data(open_source(io.BytesIO(b""), lambda head: True)[1]) == b""


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_concatenated_frames_are_all_read(kind):
    data = COMPRESS[kind](TEXT[:1000]) + COMPRESS[kind](TEXT[1000:])
    if kind == "xz":
        data += b"\x00" * 8  # xz stream padding at the end (padding between streams reads as damage today)
    assert _data(open_source(io.BytesIO(data), lambda head: True)[1]) == TEXT


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_a_bomb_streams_by_in_bounded_pieces(kind):
    # bzip2/xz: output bounded per call; zstd: input fed in 2 KiB pieces, each at most ~32,768x (RLE blocks)
    size = (40 << 20) if kind != "zstd" else (160 << 20)
    source = open_source(io.BytesIO(COMPRESS[kind](bytes(size))), lambda head: True)[1]
    pieces = [len(e[1]) for e in source.events() if e[0] == "data"]
    assert sum(pieces) == size
    bound = INFLATE_OUT if kind != "zstd" else _STREAM_PIECE << 15
    assert max(pieces) <= bound and len(pieces) >= size // bound


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_a_cut_file_ends_with_truncated(kind):
    data = COMPRESS[kind](TEXT)
    events = list(open_source(io.BytesIO(data[: len(data) // 2]), lambda head: True)[1].events())
    got = sum(len(e[1]) for e in events if e[0] == "data")
    assert events[-1] == ("truncated", got)
    assert TEXT.startswith(b"".join(e[1] for e in events if e[0] == "data"))


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_damage_ends_the_stream_with_corrupt_stream(kind):
    data = bytearray(COMPRESS[kind](TEXT))
    for i in range(len(data) // 2, len(data) // 2 + 40):
        data[i] ^= 0xA5
    events = list(open_source(io.BytesIO(bytes(data)), lambda head: True)[1].events())
    assert events[-1][0] == "damaged" and events[-1][2] == R_CORRUPT_STREAM
    assert events[-1][1] == sum(len(e[1]) for e in events if e[0] == "data") < len(TEXT)
