"""Byte sources: an input stream as events of decompressed data, by its magic bytes.

``open_source`` tells gzip (read member by member: ``pipeline/io/gzip_members.py``), whole-file zstd,
bzip2 and xz (``.warc.zst``, ``.jsonl.zst``, ``.warc.bz2``, ``.jsonl.xz``) and plain data apart; all three
sources yield ``('data', bytes)`` events with a bounded amount of output per event. zstd/bzip2/xz data is
decompressed as a stream with bounded output per call (a decompression bomb streams by in pieces and meets
the readers' size limits); damage ends the stream with ``('damaged', pos, read:corrupt_stream)`` (these
formats have no cheap resynchronisation point) and a cut file with ``('truncated', pos)``. A zstd frame
written without a checksum cannot reveal damage that still decodes.
"""

from __future__ import annotations

from typing import Callable, Iterator, Tuple, Union

from pipeline.io.contract import R_CORRUPT_STREAM, READ_CHUNK
from pipeline.io.gzip_members import GZIP_MAGIC, INFLATE_OUT, GzipMembers, RawWindow


class PlainChunks:
    """('data', chunk) events over an uncompressed stream (same interface as GzipMembers)."""

    def __init__(self, fh, first: bytes):
        self.fh = fh
        self.first = first
        self.abandon = False

    def events(self) -> Iterator[tuple]:
        data = self.first
        while data:
            yield ("data", data)
            data = self.fh.read(READ_CHUNK)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
STREAM_HOLD = 1 << 20  # decompressed bytes a zstd/bzip2/xz record waits for before it is handed out
_STREAM_PIECE = 2048  # compressed bytes per zstd call: its output is bounded only by the input (~32,000x)


class StreamChunks:
    """('data', chunk) events over a zstd, bzip2 or xz stream (concatenated frames/streams included), then
    ('truncated', pos) when the file ends inside a frame, or ('damaged', pos, reason) when the data is
    corrupt (reading stops there: these formats cannot be resynchronised on cheaply). ``pos`` counts
    decompressed bytes; record offsets from such a file are positions in the decompressed stream.

    Output per call is bounded (xz/bzip2 by ``max_length``, zstd by small input pieces), so a
    decompression bomb streams by in pieces and meets the readers' size limits."""

    def __init__(self, fh, first: bytes, kind: str):
        self.fh, self.first, self.kind = fh, first, kind
        self.abandon = False

    def _new(self):
        if self.kind == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        if self.kind == "bzip2":
            import bz2

            return bz2.BZ2Decompressor()
        import lzma

        return lzma.LZMADecompressor()

    def _errors(self):
        errors = [OSError, ValueError, EOFError]
        if self.kind == "zstd":
            import zstandard

            errors.append(zstandard.ZstdError)
        elif self.kind == "xz":
            import lzma

            errors.append(lzma.LZMAError)
        return tuple(errors)

    def _inflate(self, d, data: bytes):
        """(output, input left after the frame/stream ended, ended?) of one bounded decompression call."""
        out = d.decompress(data) if self.kind == "zstd" else d.decompress(data, INFLATE_OUT)
        return out, (d.unused_data if d.eof else b""), d.eof

    def events(self) -> Iterator[tuple]:
        errors = self._errors()
        step = _STREAM_PIECE if self.kind == "zstd" else None
        d, fed, pos = self._new(), False, 0
        data = self.first
        while data:  # read errors of the input itself propagate; only decompression errors are damage
            for i in range(0, len(data), step or len(data)):
                piece = data[i:i + step] if step else data
                while True:
                    fed = fed or bool(piece)
                    try:
                        out, rest, ended = self._inflate(d, piece)
                    except errors:
                        yield ("damaged", pos, R_CORRUPT_STREAM)
                        return
                    if out:
                        pos += len(out)
                        yield ("data", out)
                    if ended:  # a frame/stream ended: the rest (if any) starts the next one
                        d, fed = self._new(), False
                        if rest.strip(b"\x00"):  # xz pads streams with NULs
                            piece = rest
                            continue
                        break
                    if step is None and not d.needs_input:
                        piece = b""  # bounded output: collect the rest of this input
                        continue
                    break
            data = self.fh.read(READ_CHUNK)
        if fed:
            yield ("truncated", pos)


Source = Union[GzipMembers, PlainChunks, StreamChunks]


def open_source(fh, starts_record: Callable[[bytes], bool]) -> Tuple[bool, Source]:
    """(gzip?, event source) for a binary stream: gzip members, zstd/bzip2/xz data or plain chunks, by magic
    bytes. ``starts_record(first inflated bytes)`` tells a real gzip member start when resynchronising."""
    first = fh.read(READ_CHUNK)
    while 0 < len(first) < 8:  # streams may return short reads; the magic bytes need a few
        more = fh.read(READ_CHUNK)
        if not more:
            break
        first += more
    for magic, kind in ((_ZSTD_MAGIC, "zstd"), (_BZIP2_MAGIC, "bzip2"), (_XZ_MAGIC, "xz")):
        if first.startswith(magic):
            return False, StreamChunks(fh, first, kind)
    if first[:2] == GZIP_MAGIC[:2]:
        return True, GzipMembers(RawWindow(fh, first), starts_record)
    return False, PlainChunks(fh, first)
