"""Fuzz target: the web-archive reader (``pipeline.io.readers.iter_records``) on fuzzer bytes, as WARC, ARC
and WET files, gzipped or not.

Run (atheris/libFuzzer flags pass through; the seed corpus is written to a temporary folder at start):

    python fuzz/fuzz_warc.py -max_total_time=60 CORPUS_DIR
    python fuzz/fuzz_warc.py --no-atheris -runs=2000          # random-mutation fallback, no atheris

Input layout: the first byte picks the format (``warc``, ``arc``, ``wet``: the reader chooses by file
name); the rest is the file. Seeds are real records cut from the shared archives
(``$WEBREFINERY_DATA/warc``): Common Crawl WARC and WET, an ARC crawl, wget ``resource`` records, a
ClueWeb-style file with header quirks, a record cut off mid-way; each gzipped per record and uncompressed,
and a few compressed whole with zstd, bzip2 and xz.

What counts as a crash (each is an assertion in ``check_one_input``):

- any exception escaping the reader;
- a record that is not ``(document, reason)`` with every core field, a non-empty string id, an integer
  ``record_offset`` inside the file (inside the decompressed stream for zstd/bzip2/xz files, so only
  non-negative there), and a reason that is ``None`` or one of ``READ_REASONS``;
- a page larger than ``max_bytes`` characters (the reader must cap what it decodes);
- two reads of the same bytes that disagree (the reader must be deterministic).

Importable: ``check_one_input(data)`` is the target, ``seed_inputs()`` the seeds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import run_fuzzer  # noqa: E402  (the folder of this file, also when imported)

if __name__ == "__main__":  # instrument the project's code (not third-party libraries) for coverage
    try:
        import atheris

        with atheris.instrument_imports(include=["pipeline"]):
            from pipeline.io import readers
    except ImportError:
        from pipeline.io import readers
else:
    from pipeline.io import readers

from pipeline.document import CORE_FIELDS  # noqa: E402
from pipeline.paths import require_shared  # noqa: E402

FORMATS = ("warc", "arc", "wet")
PARAMS = readers.ReaderParams(max_bytes=1 << 16, max_expansion=4)  # small caps: bombs stay cheap
_STREAM_MAGIC = (b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00")  # offsets count decompressed bytes
_calls = 0


class _ScratchFile:
    """One file the reader can open by path, rewritten for every input. On Linux an anonymous memory
    file (``memfd``: nothing left on disk even when libFuzzer ends the process with ``exit``)."""

    def __init__(self):
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("webrefinery-fuzz-warc")
            self.path = f"/proc/self/fd/{self.fd}"
        else:  # pragma: no cover - other systems
            self._tmp = tempfile.NamedTemporaryFile(prefix="webrefinery-fuzz-", suffix=".bin")
            self.fd, self.path = self._tmp.fileno(), self._tmp.name

    def write(self, content: bytes) -> str:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, content, 0)
        return self.path


_SCRATCH = _ScratchFile()


def read_records(fmt: str, content: bytes):
    """Every (document, reason) the reader yields for ``content`` read as format ``fmt``."""
    path = _SCRATCH.write(content)
    return list(readers.iter_records(path, fmt, params=PARAMS))


def check_one_input(data: bytes) -> None:
    """The fuzz target: read ``data[1:]`` in the format picked by ``data[0]``; assert the invariants."""
    global _calls
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    content = data[1:]
    records = read_records(fmt, content)
    limit = None if content.startswith(_STREAM_MAGIC) else len(content)
    for doc, why in records:
        assert isinstance(doc, dict) and set(CORE_FIELDS) <= set(doc), doc.keys()
        assert isinstance(doc["id"], str) and doc["id"], doc["id"]
        assert isinstance(doc["record_offset"], int) and 0 <= doc["record_offset"], doc["record_offset"]
        assert limit is None or doc["record_offset"] <= limit, doc["record_offset"]
        assert why is None or why in readers.READ_REASONS, why
        if why is None:
            html, text = doc.get("html"), doc.get("text")
            assert isinstance(html, str) or isinstance(text, str)
            assert len(html or "") <= PARAMS.max_bytes and len(text or "") <= PARAMS.max_bytes
    _calls += 1
    if _calls % 16 == 0:  # determinism, on a sample of inputs (it doubles the cost)
        again = read_records(fmt, content)
        assert again == records, "two reads of the same bytes disagree"


def _members(path: str, count: int, limit: int = 64 << 10) -> bytes:
    """The first ``count`` gzip members of a real archive (stopping before ``limit`` bytes)."""
    data = open(path, "rb").read()
    pos, out = 0, []
    while len(out) < count and pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        if out and end > limit:
            break
        out.append(data[pos:end])
        pos = end
    return b"".join(out)


def seed_inputs() -> list:
    """Real records cut from the shared archives, each gzipped and uncompressed, with a format byte."""
    warc = require_shared("warc")
    picks = [
        ("warc", "cc-main-2020-34-excerpt.warc.gz", 6),
        ("warc", "example-com.warc.gz", 8),
        ("warc", "wget-crawl-0000.warc.gz", 3),
        ("warc", "clueweb-quirk.warc.gz", 2),
        ("warc", "truncated-record.warc.gz", 3),
        ("warc", "serp-archive-0000.warc.gz", 1),
        ("wet", "cc-main-2024-22-one-page.warc.wet.gz", 2),
        ("arc", "archive-org-2008.arc.gz", 4),
    ]
    seeds = []
    for fmt, name, count in picks:
        gz = _members(str(warc / name), count)
        code = bytes([FORMATS.index(fmt)])
        seeds.append(code + gz)
        try:
            plain = b"".join(_iter_inflate(gz))
        except zlib.error:  # a cut last member: keep what inflates
            plain = b""
        if plain:
            seeds.append(code + plain[: 64 << 10])
            if name.startswith(("cc-main-2020", "archive-org")):  # whole-file zstd, bzip2, xz
                import bz2
                import lzma

                import zstandard

                for pack in (zstandard.ZstdCompressor(write_checksum=True).compress, bz2.compress, lzma.compress):
                    seeds.append(code + pack(plain[: 16 << 10]))
    return seeds


def _iter_inflate(gz: bytes):
    while gz:
        d = zlib.decompressobj(31)
        yield d.decompress(gz)
        if not d.eof:
            return
        gz = d.unused_data


def main(argv=None) -> int:
    return run_fuzzer(argv or sys.argv, check_one_input, seed_inputs(), "fuzz_warc")


if __name__ == "__main__":
    sys.exit(main())
