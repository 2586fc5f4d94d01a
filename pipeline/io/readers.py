"""Input readers: web archives (WARC, ARC, WET), JSONL, Parquet and Arrow files -> Documents.

Three public functions, used by the Beam graph (``pipeline/beam.py``) and the CLI:

- ``expand_inputs(patterns)``: files, folders, globs, ``gs://``/``s3://`` patterns, ``https://`` URLs and
  Common Crawl path lists (``warc.paths.gz``) -> the sorted list of input files;
- ``detect_format(path)``: ``'warc'``, ``'arc'``, ``'wet'``, ``'jsonl'``, ``'parquet'`` or ``'arrow'``;
- ``iter_records(path)``: yields ``(document, None)`` for each page and ``(document, reason)`` for each
  counted rejection (``read:non_html``, ``read:http_status``, ``read:too_large``, ``read:truncated``,
  ``read:corrupt_gzip``, ``read:corrupt_stream``, ``read:bad_header``, ``read:bad_http``, ``read:bad_json``,
  ``read:no_text``).

Web archives are read by our own small parser rather than a library's iterator, because real archives
are damaged in ways that stop those iterators at the first problem:

- ``.gz`` archives are decompressed gzip member by gzip member (``zlib.decompressobj(31)``). A member
  that fails to inflate (or fails its CRC) costs only the record(s) inside it: the reader scans forward
  for the next gzip header that inflates to the start of a record and goes on (``read:corrupt_gzip``).
  A record is handed out only after its member's CRC checked out, so damaged bytes never become a page.
- A record cut off by the end of the file is ``read:truncated``; everything before it is kept. So is
  a record whose Content-Length runs past the end of its own gzip member when the next member
  starts a record (a lying length): it is cut there instead of swallowing the records after it. In an
  uncompressed WARC, a block that does not end where the next record begins, and that holds a
  well-formed record header, is cut at that header the same way.
- Whole-file zstd, bzip2 and xz (``.warc.zst``, ``.jsonl.zst``, ``.warc.bz2``, ``.jsonl.xz``; found by
  magic bytes) are decompressed as a stream with bounded output per call. Records are handed out only
  once 1 MB more has decompressed cleanly after them, so damage that the format's own checks catch
  within that distance (bzip2 block CRCs, zstd decoding errors, checksums of frames up to 1 MB) turns
  the held records into ``read:corrupt_stream``; reading stops at damage (these formats have no cheap
  resynchronisation point). A cut file ends with ``read:truncated`` for the held records (their check
  can never run) and the open one. A zstd frame written without a
  checksum cannot reveal damage that still decodes.
- Payloads above ``max_bytes`` are ``read:too_large`` and are never decoded or held in memory (only a
  64 KiB prefix is kept, to read the HTTP headers). A record may inflate to at most
  ``max_expansion * max_bytes`` bytes; past that the member is abandoned (decompression bombs).
- HTTP quirks of real crawls: doubled status lines (``HTTP/1.1 HTTP/1.1 200 OK``), bare-LF header lines,
  ``Transfer-Encoding: chunked`` / ``Content-Encoding: gzip`` headers left on bodies that were stored
  decoded (the body is dechunked/inflated only when it really is chunked/compressed), target URIs in
  angle brackets (wget), repeated record ids (kept: ``doc_key`` makes them unique).
- Whether a page is HTML is decided by the HTTP ``Content-Type`` (``text/html``,
  ``application/xhtml+xml``), never by sniffing the bytes; everything else is ``read:non_html``.
- HTML is decoded by BOM, then the declared charset (HTTP header, then ``<meta charset>``, mapped
  through the WHATWG label table), with a UTF-8 probe first (a body that is valid UTF-8 is UTF-8 even
  when a server claims ISO-8859-1), then uchardet detection; unknown charset names never crash.

JSONL accepts ``{"id", "text", "url"}`` rows and the Dolma / CCNet layouts (``metadata.warc_url``,
``metadata.warc_date``, ``metadata.url``). ``record_offset`` is the gzip member's (or record's) byte
offset for archives (the offset in the decompressed stream for zstd/bzip2/xz files), the 1-based line
number for JSONL and the 0-based row for Parquet/Arrow.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import hashlib
import json
import os
import re
import urllib.parse
import zlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from pipeline.errors import UserValueError
from pipeline.document import Document, make_document
from pipeline.io.remote import (
    is_filesystem_url,
    is_http_url,
    local_path,
    match_filesystem_pattern,
    open_input,
)

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

try:  # brotli comes with resiliparse (via FastWARC); without it, br bodies are left as they are
    import brotli
except ImportError:  # pragma: no cover - present in every supported install
    brotli = None

Record = Tuple[Document, Optional[str]]

# ----------------------------------------------------------------------------------------------------
# Reasons, formats, parameters

R_NON_HTML = "read:non_html"
R_HTTP_STATUS = "read:http_status"
R_TOO_LARGE = "read:too_large"
R_TRUNCATED = "read:truncated"
R_CORRUPT_GZIP = "read:corrupt_gzip"
R_CORRUPT_STREAM = "read:corrupt_stream"  # damaged zstd / bzip2 / xz data
R_BAD_HEADER = "read:bad_header"
R_BAD_HTTP = "read:bad_http"
R_BAD_JSON = "read:bad_json"
R_NO_TEXT = "read:no_text"
READ_REASONS = (
    R_NON_HTML, R_HTTP_STATUS, R_TOO_LARGE, R_TRUNCATED, R_CORRUPT_GZIP, R_CORRUPT_STREAM,
    R_BAD_HEADER, R_BAD_HTTP, R_BAD_JSON, R_NO_TEXT,
)

FORMATS = ("warc", "arc", "wet", "jsonl", "parquet", "arrow")
HTML_MIME_TYPES = frozenset({"text/html", "application/xhtml+xml"})
DEFAULT_COMMONCRAWL_BASE_URL = "https://data.commoncrawl.org/"

# Longest suffixes first where one ends another (".warc.gz" must win over ".arc.gz").
_SUFFIX_FORMATS = (
    (".warc.wet.gz", "wet"), (".wet.gz", "wet"), (".wet", "wet"),
    (".warc.wat.gz", "warc"), (".wat.gz", "warc"), (".wat", "warc"),  # metadata only: yields no pages
    (".warc.gz", "warc"), (".warc", "warc"),
    (".arc.gz", "arc"), (".arc", "arc"),
    (".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson.gz", "jsonl"), (".ndjson", "jsonl"),
    (".json.gz", "jsonl"), (".json", "jsonl"),
    (".parquet", "parquet"), (".pq", "parquet"),
    (".arrow", "arrow"), (".arrows", "arrow"), (".feather", "arrow"), (".ipc", "arrow"),
)
_PATH_LIST_SUFFIXES = (".paths", ".paths.gz")
_STREAM_SUFFIXES = (".zst", ".zstd", ".bz2", ".xz")  # whole-file compression besides gzip
_STREAM_FORMATS = ("warc", "arc", "wet", "jsonl")


@dataclasses.dataclass
class ReaderParams:
    """Limits of the readers (the lead's pipelines.yaml may override them under ``read``)."""

    max_bytes: int = 10_000_000  # largest payload (after HTTP decoding) turned into a Document
    max_expansion: int = 10  # one record may inflate to at most max_expansion * max_bytes bytes
    commoncrawl_base_url: str = DEFAULT_COMMONCRAWL_BASE_URL  # prefix for entries of *.paths(.gz)

    def validate(self) -> None:
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise UserValueError(f"read: 'max_bytes' = {self.max_bytes!r} must be a positive integer")
        if not isinstance(self.max_expansion, int) or self.max_expansion < 1:
            raise UserValueError(f"read: 'max_expansion' = {self.max_expansion!r} must be a positive integer")

    @property
    def record_cap(self) -> int:
        return self.max_bytes * self.max_expansion


# ----------------------------------------------------------------------------------------------------
# Formats and input expansion


def _name_of(path: str) -> str:
    """The file-name part of a path or URL (query and fragment removed), lower case."""
    if is_http_url(path) or is_filesystem_url(path):
        path = urllib.parse.urlsplit(path).path
    return path.rstrip("/").rsplit("/", 1)[-1].lower()


def detect_format(path: str) -> str:
    """The reader format for ``path`` from its name: 'warc', 'arc', 'wet', 'jsonl', 'parquet' or 'arrow'.

    WARC/ARC/WET/JSONL files may also be compressed whole with zstd, bzip2 or xz (``.warc.zst``,
    ``.jsonl.zst``, ``.jsonl.bz2``, ``.warc.xz``); the reader tells the compression by its magic bytes."""
    name = _name_of(path)
    for suffix in _STREAM_SUFFIXES:
        if name.endswith(suffix):
            inner = name[: -len(suffix)]
            for plain, fmt in _SUFFIX_FORMATS:
                if inner.endswith(plain) and not plain.endswith(".gz") and fmt in _STREAM_FORMATS:
                    return fmt
            raise UserValueError(f"{path!r}: {suffix[1:]} compression is read for WARC, ARC, WET and JSONL files "
                             f"(e.g. .warc{suffix}, .jsonl{suffix}), not for this file type")
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in _SUFFIX_FORMATS)
    raise UserValueError(f"cannot tell the input format of {path!r} from its name (known endings: {known})")


def is_path_list(path: str) -> bool:
    """True for a Common Crawl style list of paths (``warc.paths.gz``, ``x.paths``)."""
    return _name_of(path).endswith(_PATH_LIST_SUFFIXES)


def _is_supported(path: str) -> bool:
    try:
        detect_format(path)
    except ValueError:
        return False
    return True


def _walk_folder(folder: str) -> List[str]:
    """Supported input files under ``folder`` (recursively, hidden entries skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if not name.startswith((".", "_")) and _is_supported(name) and not is_path_list(name):
                found.append(os.path.join(root, name))
    return sorted(found)


def read_path_list(path: str, base_url: str = DEFAULT_COMMONCRAWL_BASE_URL) -> List[str]:
    """Entries of a Common Crawl path list, each prefixed with ``base_url`` unless it is a full URL."""
    with open_input(path) as fh:
        data = fh.read()
    if data[:2] == _GZIP_MAGIC[:2]:
        data = _inflate_all(data, path)
    base = base_url if base_url.endswith("/") else base_url + "/"
    entries = []
    for raw_line in data.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        entry = line if "://" in line else base + line.lstrip("/")
        if not _is_supported(entry):
            raise UserValueError(f"path list {path!r} names {line!r}, which is not a supported input format")
        entries.append(entry)
    if not entries:
        raise UserValueError(f"path list {path!r} is empty")
    return entries


def _expand_matches(paths: Iterable[str], base_url: str) -> List[str]:
    out: List[str] = []
    for p in paths:
        if is_path_list(p):
            out.extend(read_path_list(p, base_url))
        elif not (is_http_url(p) or is_filesystem_url(p)) and os.path.isdir(p):
            out.extend(_walk_folder(p))
        elif _is_supported(p):
            out.append(p)
    return out


def _expand_pattern(pattern: str, base_url: str) -> List[str]:
    if is_http_url(pattern):
        if is_path_list(pattern):
            return read_path_list(pattern, base_url)
        detect_format(pattern)  # an unsupported name is an error now, not deep inside the pipeline
        return [pattern]
    if is_filesystem_url(pattern):
        return _expand_matches(match_filesystem_pattern(pattern), base_url)
    local = local_path(pattern)
    if glob.has_magic(local):
        return _expand_matches(sorted(glob.glob(local, recursive=True)), base_url)
    if os.path.isdir(local):
        return _walk_folder(local)
    if os.path.isfile(local):
        if is_path_list(local):
            return read_path_list(local, base_url)
        detect_format(local)
        return [local]
    raise UserValueError(f"input {pattern!r} does not exist")


def expand_inputs(
    patterns: Union[str, List[str]], *, commoncrawl_base_url: str = DEFAULT_COMMONCRAWL_BASE_URL
) -> List[str]:
    """Input files named by ``patterns`` (files, folders, globs, remote patterns, URLs, path lists).

    Folders give every supported file inside (recursively, sorted); globs and remote patterns give their
    sorted matches; ``*.paths(.gz)`` lists give their entries prefixed with ``commoncrawl_base_url``.
    Duplicates are dropped (first occurrence kept). A pattern that yields no file is a ValueError.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out: List[str] = []
    seen = set()
    for pattern in patterns:
        found = _expand_pattern(str(pattern), commoncrawl_base_url)
        if not found:
            raise UserValueError(
                f"input {pattern!r} matches no supported input file "
                f"(supported: WARC/ARC/WET, JSONL, Parquet, Arrow; or a *.paths.gz list)"
            )
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


# ----------------------------------------------------------------------------------------------------
# Entry point


def iter_records(
    path: str,
    fmt: Optional[str] = None,
    *,
    max_bytes: int = ReaderParams.max_bytes,
    params: Optional[ReaderParams] = None,
) -> Iterator[Record]:
    """Documents of one input file: ``(doc, None)`` for a page, ``(doc, reason)`` for a counted rejection.

    ``params`` (a ReaderParams) takes precedence over ``max_bytes`` when given.
    """
    if params is None:
        params = ReaderParams(max_bytes=max_bytes)
    params.validate()
    fmt = fmt or detect_format(path)
    if fmt in ("warc", "wet"):
        return _iter_archive(path, _WARC, params)
    if fmt == "arc":
        return _iter_archive(path, _ARC, params)
    if fmt == "jsonl":
        return _iter_jsonl(path, params)
    if fmt == "parquet":
        return _iter_parquet(path)
    if fmt == "arrow":
        return _iter_arrow(path)
    raise UserValueError(f"unknown input format {fmt!r} for {path!r} (known: {', '.join(FORMATS)})")


def _synthetic_id(path: str, position: int) -> str:
    """A stable id for a record that has none: file name and position in the file."""
    return f"{_name_of(path) or path}:{position}"


# ----------------------------------------------------------------------------------------------------
# Raw bytes: a sliding window over the input, and gzip members one by one

_GZIP_MAGIC = b"\x1f\x8b\x08"
_READ_CHUNK = 1 << 20  # bytes read from the input at a time
_INFLATE_PIECE = 1 << 16  # compressed bytes handed to zlib at a time
_INFLATE_OUT = 1 << 20  # most decompressed bytes one zlib call may return
_PROBE_IN = 1 << 16  # compressed bytes inflated to test a candidate member start
_RETAIN_LIMIT = 64 << 20  # raw bytes of one member kept for resynchronisation
_FILL = b"\r\n\t \x00"
_LEADING_FILL = re.compile(rb"[\r\n\t \x00]*")


def _inflate_all(data: bytes, what: str) -> bytes:
    """All gzip members of a small in-memory file (path lists)."""
    out = []
    while data[:2] == _GZIP_MAGIC[:2]:
        d = zlib.decompressobj(31)
        try:
            out.append(d.decompress(data))
        except zlib.error as exc:
            raise ValueError(f"{what}: damaged gzip data ({exc})") from exc
        data = d.unused_data
    return b"".join(out)


class _RawWindow:
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
        data = self.fh.read(_READ_CHUNK)
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


class _GzipMembers:
    """Events over concatenated gzip members: ('member', off) ('data', bytes) ('end', off)
    ('damaged', off) ('abandoned', off) ('truncated', off). After 'damaged' or 'abandoned' the stream
    resumes at the next gzip header whose first bytes inflate to something ``starts_record`` accepts;
    each gzip header skipped on the way is reported as one more 'damaged' member (so two neighbouring
    damaged members count twice; a member whose own gzip header is destroyed cannot be told apart
    from the damaged member before it and is counted with it)."""

    def __init__(self, raw: _RawWindow, starts_record: Callable[[bytes], bool]):
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
            if raw.slice(pos, pos + 3) != _GZIP_MAGIC:
                if raw.eof and not raw.slice(pos, raw.end).strip(_FILL):
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
        d = zlib.decompressobj(31)
        i = pos
        try:
            while True:
                if i >= raw.end and not raw.fill():
                    return "truncated", None
                piece = raw.slice(i, min(raw.end, i + _INFLATE_PIECE))
                piece_end = i + len(piece)
                out = d.decompress(piece, _INFLATE_OUT)
                while True:
                    if out:
                        yield ("data", out)
                    if self.abandon:
                        self.abandon = False
                        return "abandoned", None
                    if d.eof:
                        return "end", piece_end - len(d.unused_data)
                    if not d.unconsumed_tail and len(out) < _INFLATE_OUT:
                        break
                    out = d.decompress(d.unconsumed_tail, _INFLATE_OUT)
                i = piece_end
                if i - raw.start > _RETAIN_LIMIT:
                    raw.discard_before(i)
        except zlib.error:
            return "damaged", None

    def _next_member(self, start: int) -> Tuple[Optional[int], List[int]]:
        """(offset of the next gzip header at or after ``start`` that begins a record, or None;
        offsets of the gzip headers skipped on the way because they did not inflate to a record)."""
        raw = self.raw
        failed: List[int] = []
        while True:
            idx = raw.find(_GZIP_MAGIC, start)
            if idx < 0:
                start = max(start, raw.end - len(_GZIP_MAGIC) + 1)
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
        d = zlib.decompressobj(31)
        try:
            head = d.decompress(self.raw.slice(idx, idx + _PROBE_IN), 4096)
        except zlib.error:
            return False
        return self.starts_record(head)


class _PlainChunks:
    """('data', chunk) events over an uncompressed stream (same interface as _GzipMembers)."""

    def __init__(self, fh, first: bytes):
        self.fh = fh
        self.first = first
        self.abandon = False

    def events(self) -> Iterator[tuple]:
        data = self.first
        while data:
            yield ("data", data)
            data = self.fh.read(_READ_CHUNK)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_STREAM_HOLD = 1 << 20  # decompressed bytes a zstd/bzip2/xz record waits for before it is handed out
_STREAM_PIECE = 2048  # compressed bytes per zstd call: its output is bounded only by the input (~32,000x)


class _StreamChunks:
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
        out = d.decompress(data) if self.kind == "zstd" else d.decompress(data, _INFLATE_OUT)
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
            data = self.fh.read(_READ_CHUNK)
        if fed:
            yield ("truncated", pos)


def _open_source(fh, starts_record: Callable[[bytes], bool]) -> Tuple[bool, Union[_GzipMembers, _PlainChunks, _StreamChunks]]:
    """(gzip?, event source) for a binary stream: gzip members, zstd/bzip2/xz data or plain chunks, by magic
    bytes."""
    first = fh.read(_READ_CHUNK)
    while 0 < len(first) < 8:  # streams may return short reads; the magic bytes need a few
        more = fh.read(_READ_CHUNK)
        if not more:
            break
        first += more
    for magic, kind in ((_ZSTD_MAGIC, "zstd"), (_BZIP2_MAGIC, "bzip2"), (_XZ_MAGIC, "xz")):
        if first.startswith(magic):
            return False, _StreamChunks(fh, first, kind)
    if first[:2] == _GZIP_MAGIC[:2]:
        return True, _GzipMembers(_RawWindow(fh, first), starts_record)
    return False, _PlainChunks(fh, first)


# ----------------------------------------------------------------------------------------------------
# Record headers: WARC and ARC dialects

_NEED = "need"  # parse_header: more bytes are needed
_BAD = "bad"  # parse_header: the buffer does not start with a record header
_HEADER_LIMIT = 1 << 20  # a record header longer than this is junk
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FILL_LOOKAHEAD = 1 << 16  # filler after a block beyond this is not waited out


def _parse_fields(lines: Iterable[bytes]) -> Dict[str, str]:
    """'Name: value' lines -> {lower-case name: value}; first occurrence wins, folded lines joined."""
    fields: Dict[str, str] = {}
    last: Optional[str] = None
    for line in b"\n".join(lines).decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line[0] in " \t":
            if last is not None:
                fields[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        key = name.strip().lower()
        if not sep or key in fields:
            last = None
            continue
        fields[key] = value.strip()
        last = key
    return fields


class _WarcDialect:
    """WARC/0.x and WARC/1.x record headers (WET and WAT files are WARC too)."""

    name = "warc"

    @staticmethod
    def starts_record(data: bytes) -> bool:
        return data.lstrip(_FILL)[:5] == b"WARC/"

    @staticmethod
    def parse_header(buf: bytearray):
        if len(buf) < 5:
            return _NEED
        if buf[:5] != b"WARC/":
            return _BAD
        m = _BLANK_LINE.search(buf, 0, _HEADER_LIMIT)
        if m is None:
            return _BAD if len(buf) >= _HEADER_LIMIT else _NEED
        fields = _parse_fields(bytes(buf[: m.start()]).split(b"\n")[1:])
        try:
            length = int(fields.get("content-length", "").strip())
        except ValueError:
            return _BAD
        if length < 0:
            return _BAD
        return m.end(), fields, length

    @staticmethod
    def find_next_start(buf: bytearray, start: int) -> int:
        i = buf.find(b"\nWARC/", max(start - 1, 0))
        return i + 1 if i >= 0 else -1


_ARC_URL = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:\S*$")
_ARC_DATE = re.compile(rb"\d{12,14}")
_ARC_START = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:\S*( |$)")
_ARC_RESYNC = re.compile(rb"\n[A-Za-z][A-Za-z0-9+.\-]*:\S* \S+ \d{12,14} ")
_ARC_LINE_LIMIT = 1 << 16


def _arc_date_iso(date: str) -> str:
    date = (date + "00000000000000")[:14]
    return f"{date[0:4]}-{date[4:6]}-{date[6:8]}T{date[8:10]}:{date[10:12]}:{date[12:14]}Z"


class _ArcDialect:
    """ARC v1/v2 record header lines ``URL IP DATE CONTENT-TYPE [...] LENGTH``, mapped to WARC names."""

    name = "arc"

    @staticmethod
    def starts_record(data: bytes) -> bool:
        return _ARC_START.match(data.lstrip(_FILL)) is not None

    @staticmethod
    def parse_header(buf: bytearray):
        nl = buf.find(b"\n", 0, _ARC_LINE_LIMIT)
        if nl < 0:
            return _BAD if len(buf) >= _ARC_LINE_LIMIT else _NEED
        parts = bytes(buf[:nl]).split()
        if len(parts) < 5 or not parts[-1].isdigit():
            return _BAD
        if not _ARC_URL.match(parts[0]) or not _ARC_DATE.fullmatch(parts[2]):
            return _BAD
        url = parts[0].decode("utf-8", "replace")
        date = parts[2].decode("ascii")
        fields = {
            "warc-type": "warcinfo" if url.lower().startswith("filedesc:") else "response",
            "warc-target-uri": url,
            "warc-date": _arc_date_iso(date),
            "content-type": parts[3].decode("latin-1"),
            "x-arc-date": date,
        }
        return nl + 1, fields, int(parts[-1])

    @staticmethod
    def find_next_start(buf: bytearray, start: int) -> int:
        m = _ARC_RESYNC.search(buf, max(start - 1, 0))
        return m.start() + 1 if m else -1


_WARC = _WarcDialect()
_ARC = _ArcDialect()


# ----------------------------------------------------------------------------------------------------
# Splitting a (decompressed) byte stream into records

_PEEK = 1 << 16  # bytes of an oversized block kept to read its HTTP headers


@dataclasses.dataclass
class _RawRecord:
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


class _RecordSplitter:
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

    def feed(self, data: bytes) -> List[_RawRecord]:
        self.buf += data
        return self._drain(final=False)

    def finish(self) -> List[_RawRecord]:
        """Records left at the end of the stream (a record still open is truncated)."""
        return self._drain(final=True)

    def cut_at_member(self, data: bytes) -> Optional[_RawRecord]:
        """Called with the first data of a new gzip member: when a record of an earlier member still waits
        for bytes and this member starts a record, the waiting record's Content-Length lies (each record
        has its own member): it is cut here as truncated instead of swallowing the records that follow."""
        if self.cur is None or not self.dialect.starts_record(data[:4096]):
            return None
        cut = _RawRecord(self.cur.offset, self.cur.headers, problem=R_TRUNCATED)
        self._consume(len(self.buf))
        self.cur = None
        self.run = 0
        return cut

    def abort(self) -> Optional[_RawRecord]:
        """Forget everything buffered (its gzip member was lost); the record that was open, if any."""
        lost = None
        if self.cur is not None:
            lost = _RawRecord(self.cur.offset, self.cur.headers)
        elif self.buf.strip(_FILL) and not self.in_junk:
            lost = _RawRecord(self._locate(self.spos), {})
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
        begins, or holds no record header; _NEED when more bytes must arrive to tell."""
        buf = self.buf
        after = _LEADING_FILL.match(buf, length).end()
        if len(buf) - after < 5:
            if final or after - length > _FILL_LOOKAHEAD:
                return None
            return _NEED
        if buf[after:after + 5] == b"WARC/":
            return None
        return self._embedded_record(length)

    def _embedded_record(self, limit: int) -> Optional[int]:
        """Position (0 < pos < limit) of the first well-formed record header inside the buffer, or None."""
        buf = self.buf
        pos = self.dialect.find_next_start(buf, 1)
        while 0 < pos < limit:
            if isinstance(self.dialect.parse_header(buf[pos:pos + _HEADER_LIMIT]), tuple):
                return pos
            pos = self.dialect.find_next_start(buf, pos + 1)
        return None

    def _drain(self, final: bool) -> List[_RawRecord]:
        out: List[_RawRecord] = []
        buf = self.buf
        while not self.want_abandon:
            if self.cur is None:
                k = _LEADING_FILL.match(buf).end()
                if k:
                    self._consume(k)
                    if self.compressed and self.run > self.record_cap:  # a member inflating to filler
                        self.want_abandon = True
                        break
                if not buf:
                    break
                parsed = self.dialect.parse_header(buf)
                if parsed is _NEED and final:
                    if self.dialect.starts_record(bytes(buf[:64])):
                        out.append(_RawRecord(self._locate(self.spos), {}, problem=R_TRUNCATED))
                        self._consume(len(buf))
                        break
                    parsed = _BAD
                if parsed is _NEED:
                    break
                if parsed is _BAD:
                    if not self.in_junk:
                        self.in_junk = True
                        self.run = 0
                        out.append(_RawRecord(self._locate(self.spos), {}, problem=R_BAD_HEADER))
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
                        if embedded is _NEED:
                            break  # wait for the bytes after the block
                        if embedded is not None:  # the block holds the next record: its length lies
                            out.append(_RawRecord(cur.offset, cur.headers, problem=R_TRUNCATED))
                            self._consume(embedded)
                            self.cur = None
                            continue
                    block = bytes(buf[: cur.length])
                    self._consume(cur.length)
                    out.append(_RawRecord(cur.offset, cur.headers, block))
                    self.cur = None
                    continue
                if final:
                    # the file ends inside the block; in an uncompressed WARC, records the lying length swallowed
                    # are still read (the cut record is truncated either way)
                    embedded = None
                    if not self.compressed and self.dialect.name == "warc":
                        embedded = self._embedded_record(len(buf))
                    out.append(_RawRecord(cur.offset, cur.headers, b"" if embedded else bytes(buf),
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
                out.append(_RawRecord(cur.offset, cur.headers, bytes(cur.prefix), too_large=True))
                self.cur = None
                continue
            if final:
                out.append(_RawRecord(cur.offset, cur.headers, bytes(cur.prefix), problem=R_TRUNCATED))
                self.cur = None
            elif self.compressed and self.run > self.record_cap:
                out.append(_RawRecord(cur.offset, cur.headers, bytes(cur.prefix), too_large=True))
                self.cur = None
                self.want_abandon = True
            break
        return out


def _iter_raw_records(fh, dialect, params: ReaderParams) -> Iterator[_RawRecord]:
    """Raw records of an archive stream, gzip member by member when compressed, with damage recovery.

    Records cut from a gzip member are held back until the member's CRC has been checked, or until a
    later well-formed record of the same member completes (files gzipped as one member): if the
    member turns out damaged, its held records become ``read:corrupt_gzip`` rejections instead of
    pages with damaged bytes, and junk inflated from the damage is not counted a second time.
    """
    compressed, source = _open_source(fh, dialect.starts_record)
    splitter = _RecordSplitter(dialect, params, compressed)
    if not compressed:
        # zstd/bzip2/xz check their data block by block, so damage can surface after bytes of it were handed
        # out: records are held until _STREAM_HOLD more bytes have decompressed cleanly after them, and held
        # records become read:corrupt_stream when damage shows up (plain files hold nothing).
        hold = _STREAM_HOLD if isinstance(source, _StreamChunks) else 0
        held: List[Tuple[int, _RawRecord]] = []
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
                yield from (r if r.problem else _RawRecord(r.offset, r.headers, problem=event[2]) for _, r in held)
                pending = splitter.abort()
                if pending is not None:
                    yield _RawRecord(pending.offset, pending.headers, problem=event[2])
                elif not any(r.problem is None for _, r in held):
                    yield _RawRecord(event[1], {}, problem=event[2])
                return
            elif event[0] == "truncated":  # the file ends inside a frame whose check can never run
                rest = [r for _, r in held] + splitter.finish()  # finish(): the open record is truncated too
                yield from (r if r.problem else _RawRecord(r.offset, r.headers, problem=R_TRUNCATED) for r in rest)
                return
        yield from (r for _, r in held)
        yield from splitter.finish()
        return
    held: List[_RawRecord] = []
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
            lost = [_RawRecord(r.offset, r.headers, problem=R_CORRUPT_GZIP) for r in held if r.problem is None]
            held = []
            pending = splitter.abort()
            if pending is not None:
                pending.problem = R_CORRUPT_GZIP
                lost.append(pending)
            yield from lost or [_RawRecord(event[1], {}, problem=R_CORRUPT_GZIP)]
        elif kind == "truncated":  # the file ends inside this member: its CRC can never be checked
            junk = any(r.problem == R_BAD_HEADER for r in held)  # inflated garbage: damage, not a cut
            reason = R_CORRUPT_GZIP if junk else R_TRUNCATED
            unverified = [_RawRecord(r.offset, r.headers, problem=reason) for r in held if r.problem is None]
            kept = [r for r in held if r.problem is not None and r.problem != R_BAD_HEADER]
            yield from kept + (unverified or ([_RawRecord(member, {}, problem=reason)] if junk else []))
            held = []
    yield from held
    yield from splitter.finish()


# ----------------------------------------------------------------------------------------------------
# Records -> Documents

_DOC_TYPES = frozenset({"response", "resource", "conversion"})
_HTTP_MIMES = frozenset({"application/http", "message/http"})
_STATUS = re.compile(rb"[ \t]*(?:HTTP/[0-9.]*[ \t]+)+(\d{3})(?!\d)", re.I)
_HTTP_HEADER_LIMIT = 1 << 16
_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([^\"';,\s]+)", re.I)


class _TooLarge(Exception):
    """A payload grew past max_bytes while being decoded."""


def _split_content_type(value: Optional[str]) -> Tuple[str, Optional[str]]:
    """'text/html; charset=UTF-8' -> ('text/html', 'UTF-8')."""
    if not value:
        return "", None
    mime = value.split(";", 1)[0].split(",", 1)[0].strip().lower()
    m = _CHARSET.search(value)
    return mime, (m.group(1) if m else None)


def _clean_uri(uri: Optional[str]) -> Optional[str]:
    if not uri:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):  # wget writes WARC-Target-URI: <http://...>
        uri = uri[1:-1].strip()
    return uri or None


def _parse_http(block: bytes) -> Optional[Tuple[Optional[int], Dict[str, str], int]]:
    """(status or None, header fields, payload start) of an HTTP response block; None if it is not one."""
    start = _LEADING_FILL.match(block).end()
    if block[start: start + 5].upper() != b"HTTP/":
        return None
    m = _BLANK_LINE.search(block, start, start + _HTTP_HEADER_LIMIT)
    if m is not None:
        head_end, body = m.start(), m.end()
    elif len(block) - start <= _HTTP_HEADER_LIMIT:
        head_end = body = len(block)  # headers only, no payload
    else:
        return None
    lines = block[start:head_end].split(b"\n")
    sm = _STATUS.match(lines[0])
    return (int(sm.group(1)) if sm else None), _parse_fields(lines[1:]), body


_CHUNK_HEAD = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


def dechunk(payload: bytes) -> bytes:
    """Undo HTTP chunked transfer coding; a body that is not really chunked is returned unchanged."""
    parts = []
    pos = 0
    n = len(payload)
    while pos < n:
        m = _CHUNK_HEAD.match(payload, pos)
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
    """zlib/gzip/raw-deflate inflate with an output cap (_TooLarge); None when it is not such data.

    A damaged or cut gzip/zlib body keeps what inflated before the damage (a truncated page is still
    a page: both formats have a header that was checked); raw deflate has no header, so only a
    complete stream counts."""
    d = zlib.decompressobj(wbits)
    out = bytearray()
    try:
        for i in range(0, len(payload), _INFLATE_PIECE):
            out += d.decompress(payload[i: i + _INFLATE_PIECE], cap + 1 - len(out))
            if len(out) > cap or d.unconsumed_tail:
                raise _TooLarge
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
        raise _TooLarge
    return out or None


def decode_content_encoding(payload: bytes, coding: str, cap: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate, br; a list is undone right to left) when the body really is
    encoded: archives often store the decoded body and keep the header. Raises _TooLarge past ``cap``."""
    for name in reversed([c.strip().lower() for c in coding.split(",") if c.strip()]):
        if _looks_like_markup(payload):
            break
        decoded = None
        if name in ("gzip", "x-gzip"):
            if payload[:2] == _GZIP_MAGIC[:2]:
                decoded = _inflate_capped(payload, 31, cap)
        elif name == "deflate":
            decoded = _inflate_capped(payload, 15, cap) or _inflate_capped(payload, -15, cap)
        elif name == "br":
            decoded = _brotli_capped(payload, cap)
        if decoded is not None:
            payload = decoded
    return payload


_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_\-.:]{1,40})", re.I)
_META_SCAN = 4096
_STATEFUL_PREFIXES = ("utf-16", "utf_16", "iso2022", "iso-2022", "hz", "utf-7", "utf_7")


def _html5_encoding(label: Optional[str]) -> Optional[str]:
    """WHATWG-canonical Python codec name for a charset label, or None for unknown/bogus labels."""
    if not label:
        return None
    try:
        enc = map_encoding_to_html5(label.strip().strip("\"'"), fallback_utf8=False)
        if enc:
            codecs.lookup(enc)
        return enc or None
    except (LookupError, ValueError, TypeError):
        return None


def _decode_strict(payload: bytes, encoding: str) -> Optional[str]:
    try:
        return payload.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(payload: bytes, declared_charset: Optional[str] = None) -> str:
    """HTML bytes -> str: BOM, declared charset (HTTP, then <meta>), UTF-8 probe, detection; never raises."""
    if payload.startswith(codecs.BOM_UTF8):
        return payload[3:].decode("utf-8", "replace")
    if payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return payload.decode("utf-16", "replace")
    http_enc = _html5_encoding(declared_charset)
    if http_enc and http_enc.startswith("utf-16") and b"\x00" not in payload[:_META_SCAN]:
        http_enc = None  # markup in UTF-16 has a NUL byte in every ASCII character: the label lies
    m = _META_CHARSET.search(payload, 0, _META_SCAN)
    meta_enc = _html5_encoding(m.group(1).decode("ascii", "replace")) if m else None
    if meta_enc and meta_enc.startswith(("utf-16", "utf_16")):
        meta_enc = "utf-8"  # a <meta> readable as ASCII cannot be UTF-16 (WHATWG rule)
    candidates = [e for i, e in enumerate((http_enc, meta_enc)) if e and e not in (http_enc, meta_enc)[:i]]
    if candidates and candidates[0].lower().startswith(_STATEFUL_PREFIXES):
        text = _decode_strict(payload, candidates[0])  # 7-bit/16-bit encodings also pass a UTF-8 probe
        if text is not None:
            return text
    text = _decode_strict(payload, "utf-8")
    if text is not None:
        return text
    for enc in candidates:
        text = _decode_strict(payload, enc)
        if text is not None:
            return text
    try:
        detected = _html5_encoding(detect_encoding(payload))
    except Exception:  # detection is a best effort
        detected = None
    if detected and detected not in candidates:
        text = _decode_strict(payload, detected)
        if text is not None:
            return text
    fallback = candidates[0] if candidates else (detected or "utf-8")
    try:
        return payload.decode(fallback, "replace")
    except LookupError:  # pragma: no cover - _html5_encoding checked the codec
        return payload.decode("utf-8", "replace")


def _record_identity(rec: _RawRecord, source: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(id, url, warc_date) of a raw record; ids are synthesised when the record has none."""
    h = rec.headers
    url = _clean_uri(h.get("warc-target-uri"))
    rid = h.get("warc-record-id", "").strip()
    if not rid:
        if "x-arc-date" in h:  # ARC has no record ids: a stable one from url, date and offset
            key = f"{url} {h['x-arc-date']} {rec.offset}".encode("utf-8", "surrogatepass")
            rid = "<urn:arc:" + hashlib.sha1(key).hexdigest() + ">"
        else:
            rid = _synthetic_id(source, rec.offset)
    return rid, url, (h.get("warc-date") or None)


def _archive_record_to_document(rec: _RawRecord, source: str, params: ReaderParams) -> Optional[Record]:
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
    warc_mime, warc_charset = _split_content_type(rec.headers.get("content-type"))
    start = _LEADING_FILL.match(block).end()
    http_like = block[start: start + 5].upper() == b"HTTP/"
    if wtype == "response" and (warc_mime in _HTTP_MIMES or http_like):
        http = _parse_http(block)
        if http is None:
            return doc, (R_TOO_LARGE if rec.too_large else R_BAD_HTTP)
        status, fields, body = http
        mime, charset = _split_content_type(fields.get("content-type"))
        if mime not in HTML_MIME_TYPES:
            return doc, R_NON_HTML
        if status is None:
            return doc, R_BAD_HTTP
        if not 200 <= status < 300:
            return doc, R_HTTP_STATUS
        if rec.too_large:
            return doc, R_TOO_LARGE
        payload = block[body:]
        if "chunked" in fields.get("transfer-encoding", "").lower() and _CHUNK_HEAD.match(payload):
            payload = dechunk(payload)
        coding = fields.get("content-encoding", "").strip().lower()
        if coding and coding != "identity":
            try:
                payload = decode_content_encoding(payload, coding, params.max_bytes)
            except _TooLarge:
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


def _iter_archive(path: str, dialect, params: ReaderParams) -> Iterator[Record]:
    with open_input(path) as fh:
        for rec in _iter_raw_records(fh, dialect, params):
            result = _archive_record_to_document(rec, path, params)
            if result is not None:
                yield result


# ----------------------------------------------------------------------------------------------------
# JSONL


def _iter_lines(fh, max_line: int) -> Iterator[Tuple[int, Optional[bytes], Optional[str]]]:
    """(line number from 1, line bytes, problem) of a plain or gzip JSONL stream."""
    compressed, source = _open_source(fh, lambda head: head.lstrip()[:1] in (b"{", b"["))
    buf = bytearray()
    lineno = 0
    skipping = False  # inside an over-long line
    for event in source.events():
        kind = event[0]
        if kind == "data":
            buf += event[1]
            pos = 0
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                if skipping:
                    skipping = False
                else:
                    lineno += 1
                    yield lineno, bytes(buf[pos:nl]), None
                pos = nl + 1
            del buf[:pos]
            if len(buf) > max_line:
                if not skipping:
                    lineno += 1
                    yield lineno, None, R_TOO_LARGE
                    skipping = True
                buf.clear()
        elif kind == "damaged":
            lineno += 1
            yield lineno, None, event[2] if len(event) > 2 else R_CORRUPT_GZIP
            buf.clear()
            skipping = False
        elif kind == "truncated":
            if buf.strip() and not skipping:
                lineno += 1
                yield lineno, None, R_TRUNCATED
            buf.clear()
            skipping = False
    if buf.strip() and not skipping:
        yield lineno + 1, bytes(buf), None


def _first_str(*values: Any) -> Optional[str]:
    for v in values:
        if v is not None and v != "":
            return v if isinstance(v, str) else str(v)
    return None


def _iter_jsonl(path: str, params: ReaderParams) -> Iterator[Record]:
    with open_input(path) as fh:
        for lineno, line, problem in _iter_lines(fh, params.record_cap):
            fallback_id = _synthetic_id(path, lineno)
            if problem is not None:
                yield make_document(fallback_id, source=path, record_offset=lineno), problem
                continue
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError:
                    obj = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                yield make_document(fallback_id, source=path, record_offset=lineno), R_BAD_JSON
                continue
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            doc = make_document(
                _first_str(obj.get("id")) or fallback_id,
                url=_first_str(obj.get("url"), meta.get("warc_url"), meta.get("url")),
                source=path,
                warc_date=_first_str(obj.get("warc_date"), meta.get("warc_date"), meta.get("date_download")),
                record_offset=lineno,
            )
            text = obj.get("text")
            if not isinstance(text, str) or not text:
                yield doc, R_NO_TEXT
                continue
            if len(text) > params.max_bytes:
                yield doc, R_TOO_LARGE
                continue
            doc["text"] = text
            yield doc, None


# ----------------------------------------------------------------------------------------------------
# Parquet and Arrow

_TABLE_COLUMNS = ("id", "text", "url", "warc_date")
_BATCH_ROWS = 1024


def _table_columns(path: str, names: List[str]) -> List[str]:
    if "text" not in names:
        raise UserValueError(f"{path} has no 'text' column (columns: {', '.join(names)})")
    return [c for c in _TABLE_COLUMNS if c in names]


def _batch_documents(batch, columns: List[str], path: str, first_row: int) -> Iterator[Record]:
    values = {name: batch.column(batch.schema.get_field_index(name)).to_pylist() for name in columns}
    texts = values["text"]
    ids = values.get("id")
    urls = values.get("url")
    dates = values.get("warc_date")
    for i in range(batch.num_rows):
        row = first_row + i
        doc = make_document(
            _first_str(ids[i] if ids else None) or _synthetic_id(path, row),
            url=_first_str(urls[i]) if urls else None,
            source=path,
            warc_date=_first_str(dates[i]) if dates else None,
            record_offset=row,
        )
        text = texts[i]
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str) or not text:
            yield doc, R_NO_TEXT
            continue
        doc["text"] = text
        yield doc, None


def _arrow_input(path: str):
    """A pyarrow-readable source: a memory map for local files, an in-memory buffer otherwise."""
    import pyarrow as pa

    if not (is_http_url(path) or is_filesystem_url(path)):
        local = local_path(path)
        if not os.path.exists(local):
            raise FileNotFoundError(f"input file {path} does not exist")
        return pa.memory_map(local, "r")
    with open_input(path) as fh:
        return pa.BufferReader(fh.read())


def _iter_parquet(path: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    source = _arrow_input(path)
    try:
        pf = pq.ParquetFile(source)
        columns = _table_columns(path, pf.schema_arrow.names)
        row = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
            yield from _batch_documents(batch, columns, path, row)
            row += batch.num_rows
    finally:
        source.close()


def _iter_arrow(path: str) -> Iterator[Record]:
    """Arrow IPC file format (random access) or stream format, read batch by batch."""
    import pyarrow as pa
    import pyarrow.ipc  # noqa: F401  (registers pa.ipc)

    source = _arrow_input(path)
    try:
        try:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            batches: Iterable = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            schema = reader.schema
            batches = reader
        columns = _table_columns(path, schema.names)
        row = 0
        for batch in batches:
            yield from _batch_documents(batch, columns, path, row)
            row += batch.num_rows
    finally:
        source.close()
