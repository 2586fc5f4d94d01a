"""Tests of the input readers (pipeline/io/readers.py, pipeline/io/remote.py) on the real shared archives.

Counts are checked against an independent reader (warcio, a different WARC implementation) and the
figures of the shared data README; damaged archives are built in a temporary folder from real ones.
"""

from __future__ import annotations

import codecs
import collections
import functools
import gzip
import io
import json
import random
import re
import socket
import zlib

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.document import CORE_FIELDS, doc_key
from pipeline.io import readers
from pipeline.io.readers import detect_format, expand_inputs, iter_records
from pipeline.io.remote import RemoteInputError, open_input
from pipeline.paths import require_shared

HTML_TYPES = {"text/html", "application/xhtml+xml"}
WARC_DIR = require_shared("warc")
CC_DIR = require_shared("cc")
ARCHIVES = sorted(p.name for p in WARC_DIR.iterdir() if p.name.endswith(".gz"))
JSONL_FILES = sorted(p.name for p in CC_DIR.iterdir() if p.name.endswith(".jsonl.gz"))
NEWS = "news-articles-aeb.warc.gz"


# ---------------------------------------------------------------------------------------------------
# helpers (independent of the code under test)


def read_all(path, **kw):
    return list(iter_records(str(path), **kw))


def good(records):
    return [d for d, why in records if why is None]


def reasons(records):
    return collections.Counter(why for _, why in records if why)


class Summary(collections.namedtuple("Summary", "id url offset reason")):
    """What the count tests need of a record (the html is left out to keep the cache small)."""


@functools.lru_cache(maxsize=None)
def summary(name):
    """(id, url, offset, reason) of every record of a shared archive, read once per test session."""
    return tuple(Summary(d["id"], d["url"], d["record_offset"], why) for d, why in iter_records(str(WARC_DIR / name)))


def n_good(name):
    return sum(r.reason is None for r in summary(name))


def gzip_members(data: bytes):
    """[(start, end)] of the gzip members of a clean file."""
    spans, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        spans.append((pos, end))
        pos = end
    return spans


def warcio_html_pages(path):
    """{record offset: record id} of 2xx HTML responses/resources, read with warcio."""
    pages = {}
    with open(path, "rb") as fh:
        it = ArchiveIterator(fh, arc2warc=True)
        for rec in it:
            if rec.rec_type not in ("response", "resource"):
                continue
            if rec.http_headers is not None:
                ctype = rec.http_headers.get_header("Content-Type") or ""
                m = re.search(r"\b(\d{3})\b", rec.http_headers.statusline or "")  # 'HTTP/1.1 200 OK' quirk
                status = int(m.group(1)) if m else 0
            else:
                ctype, status = rec.rec_headers.get_header("Content-Type") or "", 200
            if ctype.split(";")[0].strip().lower() in HTML_TYPES and 200 <= status < 300:
                pages[it.get_record_offset()] = rec.rec_headers.get_header("WARC-Record-ID")
    return pages


@pytest.fixture(scope="module")
def clean_news():
    data = (WARC_DIR / NEWS).read_bytes()
    records = read_all(WARC_DIR / NEWS)
    return data, gzip_members(data), {d["record_offset"]: d["id"] for d in good(records)}


def write_warc(path, pages, gz=True):
    """pages: (uri, HTTP status line, [(header, value)], body bytes, record type), written by warcio."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=gz)
        for uri, status, headers, body, rtype in pages:
            http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(uri, rtype, payload=io.BytesIO(body), http_headers=http))
    return path


def raw_record(block: bytes, rtype="response", uri="http://example.org/", rid="<urn:uuid:raw-1>",
               ctype="application/http; msgtype=response") -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Record-ID: {rid}\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: {ctype}\r\nContent-Length: {len(block)}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ---------------------------------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("name, fmt", [
    ("a.warc.gz", "warc"), ("a.WARC", "warc"), ("CC-MAIN-x.warc.wet.gz", "wet"), ("x.wet", "wet"),
    ("x.warc.wat.gz", "warc"), ("crawl.arc.gz", "arc"), ("crawl.arc", "arc"), ("d.jsonl.gz", "jsonl"),
    ("d.json.gz", "jsonl"), ("d.ndjson", "jsonl"), ("t.parquet", "parquet"), ("s.arrow", "arrow"),
    ("https://data.commoncrawl.org/crawl-data/x.warc.gz?download=1", "warc"), ("gs://b/p/x.arrows", "arrow"),
])
def test_detect_format_by_name(name, fmt):
    assert detect_format(name) == fmt


def test_detect_format_rejects_unknown_names():
    with pytest.raises(ValueError, match="notes.txt"):
        detect_format("notes.txt")
    with pytest.raises(ValueError, match="unknown input format"):
        iter_records("x.warc.gz", fmt="pdf")


# ---------------------------------------------------------------------------------------------------
# every shared archive, cross-checked with warcio


@pytest.mark.parametrize("name", ARCHIVES)
def test_every_shared_archive_reads_into_well_formed_documents(name):
    records = read_all(WARC_DIR / name)
    for doc, why in records:
        assert set(CORE_FIELDS) <= set(doc)
        assert doc["source"] == str(WARC_DIR / name)
        assert isinstance(doc["id"], str) and doc["id"]
        assert isinstance(doc["record_offset"], int)
        assert why is None or why in readers.READ_REASONS
        if why is None and ".wet." in name:
            assert doc["text"].strip() and "html" not in doc
        elif why is None:
            assert doc["text"] == "" and isinstance(doc["html"], str) and doc["html"].strip()
        else:
            assert "html" not in doc
    assert len({doc_key(d) for d, _ in records}) == len(records)


@pytest.mark.parametrize("name", [n for n in ARCHIVES if ".wet." not in n and "truncated" not in n])
def test_html_pages_and_offsets_match_warcio(name):
    expected = warcio_html_pages(WARC_DIR / name)
    pages = [r for r in summary(name) if r.reason is None]
    assert {r.offset for r in pages} == set(expected)
    assert len(pages) == len(expected)
    if name.endswith(".warc.gz"):
        assert {r.offset: r.id for r in pages} == expected


def test_counts_stated_in_the_data_readme():
    serp = [f"serp-archive-000{i}.warc.gz" for i in range(4)]
    assert sum(n_good(n) for n in serp) == 1890
    assert all(r.reason is None for n in serp for r in summary(n))
    for name in ("archive-org-2008.warc.gz", "archive-org-2008.arc.gz"):
        c = collections.Counter(r.reason for r in summary(name))
        assert c[None] + c["read:http_status"] == 140  # HTML responses, 2xx or not
        assert sum(c.values()) == 299 and c["read:non_html"] == 299 - 140
    assert n_good(NEWS) == 181
    assert n_good("web-pages-mixed.warc.gz") == 109
    assert n_good("wget-crawl-0000.warc.gz") + n_good("wget-crawl-0001.warc.gz") == 37
    assert n_good("clueweb-quirk.warc.gz") == 29


def test_repeated_record_ids_are_all_kept():
    pages = [r for r in summary("serp-archive-0000.warc.gz") if r.reason is None]
    ids = [r.id for r in pages]
    assert len(ids) - len(set(ids)) == 55  # the README: 55 repeated WARC-Record-IDs
    assert len({(r.id, r.offset) for r in pages}) == len(pages)


def test_news_html_equals_the_raw_payload():
    path = WARC_DIR / NEWS
    payloads = {}
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            payloads[rec.rec_headers.get_header("WARC-Record-ID")] = rec.content_stream().read()
    docs = good(read_all(path))
    assert all(d["html"] == payloads[d["id"]].decode("utf-8") for d in docs)
    assert all(d["url"].startswith("http") and d["warc_date"] == "2020-01-01T00:00:00Z" for d in docs)


def test_quirky_archives_decode_cleanly():
    clue = good(read_all(WARC_DIR / "clueweb-quirk.warc.gz"))  # EUC-JP, LF-only headers, lying gzip header
    assert all(d["html"].lstrip().startswith("<") and "\ufffd" not in d["html"] for d in clue)
    assert sum("ヘッドポーター" in d["html"] for d in clue) >= 20
    wget = good(read_all(WARC_DIR / "wget-crawl-0001.warc.gz"))  # really chunked bodies, <uri> targets
    assert all(not re.match(r"\s*[0-9a-fA-F]+\r?\n", d["html"]) for d in wget)
    assert all(d["url"].startswith("https://") and not d["url"].startswith("<") for d in wget)
    serp = good(read_all(WARC_DIR / "serp-archive-0001.warc.gz"))  # 'HTTP/1.1 HTTP/1.1 200 OK', lying TE/CE
    assert all(d["html"].lstrip()[:1] == "<" for d in serp)


def test_arc_and_warc_of_the_same_crawl_agree():
    arc = read_all(WARC_DIR / "archive-org-2008.arc.gz")
    warc = read_all(WARC_DIR / "archive-org-2008.warc.gz")
    by_url = lambda recs: sorted((d["url"], d["warc_date"], why, d.get("html")) for d, why in recs)  # noqa: E731
    assert by_url(arc) == by_url(warc)
    arc_ids = [d["id"] for d, _ in arc]
    assert len(set(arc_ids)) == len(arc_ids) and arc_ids == [d["id"] for d, _ in read_all(WARC_DIR / "archive-org-2008.arc.gz")]


def test_plain_and_damaged_arc(tmp_path):
    data = (WARC_DIR / "archive-org-2008.arc.gz").read_bytes()
    spans = gzip_members(data)
    clean = read_all(WARC_DIR / "archive-org-2008.arc.gz")
    plain = b"".join(zlib.decompressobj(31).decompress(data[s:e]) for s, e in spans)
    (tmp_path / "crawl.arc").write_bytes(plain)
    rec = read_all(tmp_path / "crawl.arc")
    view = lambda recs: [(d["url"], why, d.get("html")) for d, why in recs]  # noqa: E731
    assert view(rec) == view(clean)
    assert all(plain[d["record_offset"]:].startswith(d["url"].encode() + b" ") for d, _ in rec)
    blob = bytearray(data)
    hit = [40, 41, 150, 290]
    for k in hit:
        blob[spans[k][0] + 30] ^= 0xFF
    (tmp_path / "damaged.arc.gz").write_bytes(bytes(blob))
    rec = read_all(tmp_path / "damaged.arc.gz")
    lost = {spans[k][0] for k in hit}
    assert [(d["id"], why) for d, why in rec if d["record_offset"] not in lost] == [
        (d["id"], why) for d, why in clean if d["record_offset"] not in lost]
    assert sorted(d["record_offset"] for d, why in rec if why == "read:corrupt_gzip") == sorted(lost)


def test_wet_conversion_records_become_text_documents():
    wet = read_all(WARC_DIR / "cc-main-2024-22-one-page.warc.wet.gz")
    warc = good(read_all(WARC_DIR / "cc-main-2024-22-one-page.warc.gz"))
    assert len(wet) == 1 and wet[0][1] is None
    assert wet[0][0]["url"] == warc[0]["url"] and len(wet[0][0]["text"]) > 100
    assert read_all(WARC_DIR / "cc-main-2024-22-one-page.warc.wat.gz") == []  # metadata only


# ---------------------------------------------------------------------------------------------------
# truncation and corruption


def test_shared_truncated_archives():
    rec = read_all(WARC_DIR / "truncated-record.warc.gz")
    assert [why for _, why in rec] == ["read:truncated"]
    assert rec[0][0]["id"].startswith("<urn:uuid:") and rec[0][0]["url"].startswith("http")
    ukwa = read_all(WARC_DIR / "ukwa-truncated.warc.gz")
    assert len(good(ukwa)) == len(warcio_html_pages(WARC_DIR / "ukwa-truncated.warc.gz")) == 2


def test_flipped_bytes_cost_only_their_own_members(tmp_path, clean_news):
    data, spans, clean = clean_news
    rng = random.Random(20240601)
    damaged = set(rng.sample(range(5, len(spans) - 5), 9))
    blob = bytearray(data)
    for k in damaged:
        start, end = spans[k]
        for pos in rng.sample(range(start + 20, end - 12), 3):  # inside the deflate data
            blob[pos] ^= 0x5A
    # two neighbours: the second one broken right after its gzip header (so resync cannot start there)
    pair = next(k for k in range(10, len(spans)) if not {k - 1, k, k + 1, k + 2} & damaged)
    for k, at in ((pair, spans[pair][0] + 400), (pair + 1, spans[pair + 1][0] + 12)):
        blob[at] ^= 0xFF
        damaged.add(k)
    # and one member whose gzip magic itself is destroyed (neighbours intact)
    magic = next(k for k in range(len(spans) - 3, 0, -1) if not {k - 1, k, k + 1} & damaged)
    blob[spans[magic][0]] ^= 0xFF
    damaged.add(magic)
    path = tmp_path / "flipped.warc.gz"
    path.write_bytes(bytes(blob))
    rec = read_all(path)
    got = {d["record_offset"]: d["id"] for d in good(rec)}
    lost = {spans[k][0] for k in damaged}
    assert got == {o: i for o, i in clean.items() if o not in lost}
    assert reasons(rec) == {"read:corrupt_gzip": len(lost)}
    assert {d["record_offset"] for d, why in rec if why} == lost


def test_member_cut_in_the_middle_and_garbage_appended(tmp_path, clean_news):
    data, spans, clean = clean_news
    k = 60
    start, end = spans[k]
    cut = data[: start + (end - start) // 2] + data[end:]
    garbage = random.Random(5).randbytes(5000)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(cut + garbage)
    rec = read_all(path)
    shift = (end - start) - (end - start) // 2
    expected = {(o if o < start else o - shift): i for o, i in clean.items() if o != start}
    assert {d["record_offset"]: d["id"] for d in good(rec)} == expected
    assert reasons(rec) == {"read:corrupt_gzip": 2}  # the cut member, and the garbage at the end


def test_archive_cut_mid_record_keeps_everything_before(tmp_path, clean_news):
    data, spans, clean = clean_news
    start, end = spans[100]
    path = tmp_path / "short.warc.gz"
    path.write_bytes(data[: start + (end - start) // 3])
    rec = read_all(path)
    assert {d["record_offset"]: d["id"] for d in good(rec)} == {o: i for o, i in clean.items() if o < start}
    assert [(d["record_offset"], why) for d, why in rec if why] == [(start, "read:truncated")]
    assert rec[-1][0]["id"] == clean[start]


def test_plain_warc_offsets_truncation_and_junk(tmp_path, clean_news):
    data, spans, clean = clean_news
    plain = b"".join(zlib.decompressobj(31).decompress(data[s:e]) for s, e in spans)
    path = tmp_path / "news.warc"
    path.write_bytes(plain)
    docs = good(read_all(path))
    assert [d["id"] for d in docs] == list(clean.values())
    assert all(plain[d["record_offset"]: d["record_offset"] + 9] == b"WARC/1.0\r" for d in docs)
    tenth = docs[10]["record_offset"]
    junk = plain[:tenth] + b"this is not a warc record\r\n" * 40 + plain[tenth:]
    (tmp_path / "junk.warc").write_bytes(junk)
    rec = read_all(tmp_path / "junk.warc")
    assert [d["id"] for d in good(rec)] == list(clean.values()) and reasons(rec) == {"read:bad_header": 1}
    (tmp_path / "cut.warc").write_bytes(plain[: docs[150]["record_offset"] + 5000])
    rec = read_all(tmp_path / "cut.warc")
    assert [d["id"] for d in good(rec)] == list(clean.values())[:150]
    assert reasons(rec) == {"read:truncated": 1}


def test_max_bytes_rejects_large_payloads_without_decoding(clean_news):
    limit = 150_000
    with open(WARC_DIR / NEWS, "rb") as fh:
        lengths = {r.rec_headers.get_header("WARC-Record-ID"): int(r.rec_headers.get_header("Content-Length"))
                   for r in ArchiveIterator(fh)}
    rec = read_all(WARC_DIR / NEWS, max_bytes=limit)
    too_large = {d["id"] for d, why in rec if why == "read:too_large"}
    assert too_large == {i for i, n in lengths.items() if n > limit}
    assert 0 < len(too_large) < 181 and len(rec) == 181


def test_decompression_bombs_are_capped(tmp_path):
    page = raw_record(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>after the bomb</p>", rid="<urn:uuid:ok>")
    # a record that claims 10**12 bytes and inflates to 5 MB of zeros: without the cap it would swallow the next record
    head = b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:bomb>\r\nContent-Type: application/http\r\n"
    bomb = head + b"Content-Length: 1000000000000\r\n\r\n" + b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + bytes(5_000_000)
    zeros = bytes(3_000_000)  # a member of pure filler
    body = gz(b"<html>" + b" " * 3_000_000 + b"</html>")  # an HTTP body that inflates past max_bytes
    http_bomb = raw_record(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n" + body,
                           rid="<urn:uuid:http-bomb>")
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(gz(bomb) + gz(zeros) + gz(http_bomb) + gz(page))
    rec = read_all(path, max_bytes=20_000)
    assert [(d["id"], why) for d, why in rec] == [
        ("<urn:uuid:bomb>", "read:too_large"), ("<urn:uuid:http-bomb>", "read:too_large"), ("<urn:uuid:ok>", None)]
    assert "after the bomb" in rec[-1][0]["html"]


# ---------------------------------------------------------------------------------------------------
# HTTP handling, charsets, encodings


def test_http_status_types_and_record_kinds(tmp_path):
    html = b"<html><body>hello</body></html>"
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html
    parts = [
        raw_record(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n" + html, rid="<a-404>"),
        raw_record(b"HTTP/1.1 HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html, rid="<b-dbl>"),
        raw_record(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG", rid="<c-png>", uri="http://x.org/i.png"),
        raw_record(b"HTTP/1.0 200 OK\nContent-Type: application/xhtml+xml\n\n" + html, rid="<d-lf>"),
        raw_record(b"HTTP/1.1 OK\r\nContent-Type: text/html\r\n\r\n" + html, rid="<e-nostatus>"),
        raw_record(b"HTTP/1.1 200 OK\r\n\r\n" + html, rid="<f-notype>"),
        raw_record(ok, rtype="request", rid="<g-req>", ctype="application/http; msgtype=request"),
        raw_record(ok, rtype="revisit", rid="<h-rev>"),
        raw_record(b"software: x\r\n", rtype="warcinfo", rid="<i-info>", ctype="application/warc-fields"),
        raw_record(html, rtype="resource", rid="<j-res>", ctype="text/html; charset=utf-8", uri="<http://x.org/r>"),
        raw_record(b"log line", rtype="resource", rid="<k-log>", ctype="text/plain"),
        raw_record(b"not http at all", rid="<l-nohttp>"),
        raw_record(b"HTTP/1.1 301 Moved\r\nContent-Type: text/html\r\nLocation: /\r\n\r\n", rid="<m-301>"),
    ]
    path = tmp_path / "kinds.warc.gz"
    path.write_bytes(b"".join(gz(p) for p in parts))
    got = [(d["id"], why) for d, why in read_all(path)]
    assert got == [
        ("<a-404>", "read:http_status"), ("<b-dbl>", None), ("<c-png>", "read:non_html"), ("<d-lf>", None),
        ("<e-nostatus>", "read:bad_http"), ("<f-notype>", "read:non_html"), ("<j-res>", None),
        ("<k-log>", "read:non_html"), ("<l-nohttp>", "read:bad_http"), ("<m-301>", "read:http_status"),
    ]
    docs = {d["id"]: d for d, _ in read_all(path)}
    assert docs["<c-png>"]["url"] == "http://x.org/i.png" and docs["<j-res>"]["url"] == "http://x.org/r"
    assert docs["<b-dbl>"]["html"] == html.decode() and docs["<j-res>"]["html"] == html.decode()


def test_transfer_and_content_encodings(tmp_path):
    import brotli

    html = "<html><body>" + "Grüße aus Köln. " * 200 + "</body></html>"
    raw = html.encode("utf-8")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + 700]), raw[i:i + 700]) for i in range(0, len(raw), 700)) + b"0\r\n\r\n"
    gzipped = gz(raw)
    gz_chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(gzipped), gzipped)
    cases = [
        ("gzip", [("Content-Encoding", "gzip")], gzipped),
        ("deflate", [("Content-Encoding", "deflate")], zlib.compress(raw)),
        ("rawdeflate", [("Content-Encoding", "deflate")], zlib.compress(raw)[2:-4]),
        ("br", [("Content-Encoding", "br")], brotli.compress(raw)),
        ("chunked", [("Transfer-Encoding", "chunked")], chunked),
        ("chunked-gzip", [("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")], gz_chunked),
        ("lying", [("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")], raw),  # stored decoded
        ("lying-br", [("Content-Encoding", "br")], raw),
    ]
    pages = [(f"http://x.org/{name}", "200 OK", [("Content-Type", "text/html; charset=utf-8")] + hdrs, body, "response")
             for name, hdrs, body in cases]
    path = write_warc(tmp_path / "enc.warc.gz", pages)
    docs = read_all(path)
    assert [(d["url"].rsplit("/", 1)[1], why) for d, why in docs] == [(c[0], None) for c in cases]
    assert all(d["html"] == html for d, _ in docs)


@pytest.mark.parametrize("declared, body, expected", [
    ("windows-1252", "<p>caf\u00e9 \u201cquoted\u201d \u2013 na\u00efve</p>".encode("cp1252"), "caf\u00e9 \u201cquoted\u201d \u2013 na\u00efve"),
    ("Shift_JIS", "<p>日本語のページです。東京都</p>".encode("shift_jis"), "日本語のページです。東京都"),
    ("x-bogus-charset", "<p>naïve Grüße</p>".encode("utf-8"), "naïve Grüße"),
    ("x-bogus-charset", "<p>caf\u00e9 cr\u00e8me br\u00fbl\u00e9e</p>".encode("cp1252"), "caf"),
    ("ISO-8859-1", "<p>naïve Grüße, mis-declared UTF-8</p>".encode("utf-8"), "naïve Grüße"),
    ('"utf-8"', "<p>quoted label ✓</p>".encode("utf-8"), "quoted label ✓"),
    (None, '<meta http-equiv="Content-Type" content="text/html; charset=EUC-JP"><p>ヘッドポーター吉田かばん</p>'.encode("euc_jp"),
     "ヘッドポーター吉田かばん"),
    (None, codecs.BOM_UTF8 + "<p>with a BOM ✓</p>".encode("utf-8"), "<p>with a BOM ✓</p>"),
    ("utf-8", "<p>Привет, мир! Это страница в кодировке windows-1251, а заголовок врёт.</p>".encode("cp1251"), "Привет, мир"),
])
def test_charsets_decode_without_crashing(tmp_path, declared, body, expected):
    ctype = "text/html" + (f"; charset={declared}" if declared else "")
    path = write_warc(tmp_path / "cs.warc.gz", [("http://x.org/p", "200 OK", [("Content-Type", ctype)], body, "response")])
    (doc, why), = read_all(path)
    assert why is None and expected in doc["html"]


# ---------------------------------------------------------------------------------------------------
# JSONL, Parquet, Arrow


def test_cc_extracted_jsonl_layout():
    path = CC_DIR / "cc-main-2019-30-extracted.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rec = read_all(path)
    assert len(rows) == len(rec) == 697
    assert len(good(rec)) == sum(bool(r["text"]) for r in rows)
    assert reasons(rec) == {"read:no_text": sum(not r["text"] for r in rows)}
    for n, (row, (doc, why)) in enumerate(zip(rows, rec), start=1):
        assert (doc["id"], doc["url"], doc["warc_date"], doc["record_offset"]) == (
            row["id"], row["metadata"]["warc_url"], row["metadata"]["warc_date"], n)
        assert why is not None or doc["text"] == row["text"]


@pytest.mark.parametrize("name", JSONL_FILES)
def test_every_shared_jsonl_reads(name):
    rec = read_all(CC_DIR / name)
    assert rec and all(d["text"] for d in good(rec))
    assert all(d["url"] and d["url"].startswith("http") for d in good(rec))


def test_jsonl_bad_lines_are_counted(tmp_path):
    lines = [
        json.dumps({"id": "a", "text": "first", "url": "http://a.org"}),
        "{not json",
        json.dumps({"id": "c", "url": "http://c.org"}),
        "",
        json.dumps({"text": "no id here", "warc_date": "2020-01-01"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": 7, "text": "numeric id"}),
    ]
    payload = ("\n".join(lines) + "\n").encode()
    for name, data in (("d.jsonl", payload), ("d.jsonl.gz", gz(payload[:40]) + gz(payload[40:]))):
        path = tmp_path / name
        path.write_bytes(data)
        got = [(d["id"], d["record_offset"], d["text"], why) for d, why in read_all(path)]
        assert got == [
            ("a", 1, "first", None), (f"{name}:2", 2, "", "read:bad_json"), ("c", 3, "", "read:no_text"),
            (f"{name}:5", 5, "no id here", None), (f"{name}:6", 6, "", "read:bad_json"), ("7", 7, "numeric id", None),
        ]


def _table(n):
    return pa.table({
        "id": [f"doc-{i}" if i % 7 else None for i in range(n)],
        "text": [f"text {i}" if i % 11 else None for i in range(n)],
        "url": [f"http://x.org/{i}" for i in range(n)],
        "language": ["en"] * n,
    })


def test_parquet_and_arrow_file_and_stream(tmp_path):
    n = 2500  # more than one read batch
    table = _table(n)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=700)
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=900)
    with pa.OSFile(str(tmp_path / "s.arrows"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=600)
    for name in ("t.parquet", "t.arrow", "s.arrows"):
        rec = read_all(tmp_path / name)
        assert [d["record_offset"] for d, _ in rec] == list(range(n))
        assert [d["id"] for d, _ in rec] == [f"doc-{i}" if i % 7 else f"{name}:{i}" for i in range(n)]
        assert [why for _, why in rec] == [None if i % 11 else "read:no_text" for i in range(n)]
        assert all(d["text"] == f"text {d['record_offset']}" and d["url"].endswith(f"/{d['record_offset']}") for d in good(rec))


def test_table_without_text_column_is_an_error(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "content": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet.*'text'.*id, content"):
        read_all(tmp_path / "bad.parquet")


# ---------------------------------------------------------------------------------------------------
# expand_inputs and open_input


def test_expand_inputs_folders_globs_and_errors(tmp_path):
    for rel in ("b.warc.gz", "a.jsonl", "sub/c.parquet", "README.txt", ".hidden.warc.gz", "sub/d.arrow"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert expand_inputs([str(tmp_path)]) == [str(tmp_path / r) for r in ("a.jsonl", "b.warc.gz", "sub/c.parquet", "sub/d.arrow")]
    assert expand_inputs([str(tmp_path / "**" / "*.*")]) == [str(tmp_path / r) for r in ("a.jsonl", "b.warc.gz", "sub/c.parquet", "sub/d.arrow")]
    assert expand_inputs([str(tmp_path / "b.warc.gz"), str(tmp_path / "*.warc.gz")]) == [str(tmp_path / "b.warc.gz")]
    with pytest.raises(ValueError, match="nowhere.warc.gz"):
        expand_inputs([str(tmp_path / "nowhere.warc.gz")])
    with pytest.raises(ValueError, match=r"\*\.arc\.gz"):
        expand_inputs([str(tmp_path / "*.arc.gz")])
    with pytest.raises(ValueError, match="README.txt"):
        expand_inputs([str(tmp_path / "README.txt")])
    url = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/x.warc.gz"
    assert expand_inputs([url]) == [url]
    shared = expand_inputs([str(WARC_DIR)])
    assert shared == [str(WARC_DIR / n) for n in ARCHIVES]


def test_expand_inputs_common_crawl_path_list(tmp_path):
    entries = [f"crawl-data/CC-MAIN-2024-22/segments/1715/warc/CC-MAIN-2024052{i}-00000.warc.gz" for i in range(3)]
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gz(("\n".join(entries) + "\n\n").encode()))
    assert expand_inputs([str(listing)]) == ["https://data.commoncrawl.org/" + e for e in entries]
    mirror = tmp_path / "mirror"
    assert expand_inputs([str(listing)], commoncrawl_base_url=str(mirror)) == [f"{mirror}/{e}" for e in entries]
    (tmp_path / "empty.paths").write_text("\n")
    with pytest.raises(ValueError, match="empty.paths"):
        expand_inputs([str(tmp_path / "empty.paths")])


def test_open_input_local_and_offline_http(tmp_path):
    (tmp_path / "f.warc").write_bytes(b"WARC/1.0")
    with open_input(str(tmp_path / "f.warc")) as fh:
        assert fh.read() == b"WARC/1.0"
    with pytest.raises(FileNotFoundError, match="missing.warc"):
        open_input(str(tmp_path / "missing.warc"))
    with socket.socket() as s:  # a port nobody listens on: connection refused, like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteInputError, match="local paths"):
        open_input(f"http://127.0.0.1:{port}/x.warc.gz", timeout_s=5)


@pytest.fixture()
def local_http_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path (no outside network involved)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_inputs_stream_like_local_files(tmp_path, local_http_server):
    (tmp_path / "news.warc.gz").write_bytes((WARC_DIR / NEWS).read_bytes())
    (tmp_path / "cc.jsonl.gz").write_bytes((CC_DIR / "ccnet-head-en-0091.jsonl.gz").read_bytes())
    pq.write_table(_table(50), tmp_path / "t.parquet")
    (tmp_path / "warc.paths").write_text("news.warc.gz\ncc.jsonl.gz\n")
    for name in ("news.warc.gz", "cc.jsonl.gz", "t.parquet"):
        remote = read_all(f"{local_http_server}/{name}")
        local = read_all(tmp_path / name)
        strip = lambda recs: [({k: v for k, v in d.items() if k != "source"}, why) for d, why in recs]  # noqa: E731
        assert remote and strip(remote) == strip(local)
    assert expand_inputs([f"{local_http_server}/warc.paths"], commoncrawl_base_url=local_http_server) == [
        f"{local_http_server}/news.warc.gz", f"{local_http_server}/cc.jsonl.gz"]
    with pytest.raises(RemoteInputError, match="HTTP 404"):
        read_all(f"{local_http_server}/missing.warc.gz")


def _compressors():
    import bz2
    import lzma

    import zstandard

    def zstd_frames(data: bytes) -> bytes:  # several checksummed frames, as the zstd CLI and parallel writers make
        c = zstandard.ZstdCompressor(level=3, write_checksum=True)
        return b"".join(c.compress(data[i:i + 1_000_000]) for i in range(0, len(data), 1_000_000))

    return {".zst": zstd_frames, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("ext", [".zst", ".bz2", ".xz"])
def test_whole_file_zstd_bzip2_xz_archives_and_jsonl_read_like_gzip(tmp_path, ext):
    compress = _compressors()[ext]
    ref = read_all(WARC_DIR / NEWS)
    raw = gzip.decompress((WARC_DIR / NEWS).read_bytes())
    path = tmp_path / f"news.warc{ext}"
    path.write_bytes(compress(raw))
    assert detect_format(str(path)) == "warc"
    got = read_all(path)
    pick = lambda recs: [(d["id"], d.get("url"), d.get("html"), why) for d, why in recs]  # noqa: E731
    assert pick(got) == pick(ref) and len(good(got)) == 181
    # offsets are positions in the decompressed stream: each points at its record's header there
    for doc, _ in got[:20]:
        assert raw[doc["record_offset"]:doc["record_offset"] + 5] == b"WARC/"
    # JSONL too
    jsonl = CC_DIR / JSONL_FILES[0]
    (tmp_path / f"cc.jsonl{ext}").write_bytes(compress(gzip.decompress(jsonl.read_bytes())))
    text_of = lambda recs: [(d["id"], d.get("text"), w) for d, w in recs]  # noqa: E731
    assert text_of(read_all(tmp_path / f"cc.jsonl{ext}")) == text_of(read_all(jsonl))


@pytest.mark.parametrize("ext", [".zst", ".bz2", ".xz"])
def test_cut_or_damaged_zstd_bzip2_xz_keep_the_records_before_and_count_the_loss(tmp_path, ext):
    raw = gzip.decompress((WARC_DIR / NEWS).read_bytes())
    blob = _compressors()[ext](raw)
    pages = {d["id"]: d["html"] for d in good(read_all(WARC_DIR / NEWS))}
    path = tmp_path / f"news.warc{ext}"
    path.write_bytes(blob[: len(blob) // 2])
    cut = read_all(path)
    assert set(reasons(cut)) == {"read:truncated"} and len(good(cut)) >= 50
    assert all(pages[d["id"]] == d["html"] for d in good(cut))
    damaged = bytearray(blob)
    for k in range(8):
        damaged[len(blob) // 2 + 97 * k] ^= 0x5A
    path.write_bytes(bytes(damaged))
    hurt = read_all(path)
    assert set(reasons(hurt)) == {"read:corrupt_stream"} and len(good(hurt)) >= 50
    assert all(pages[d["id"]] == d["html"] for d in good(hurt))  # no page carries damaged bytes
    assert len(hurt) <= len(pages)  # the file's remainder is one counted loss, not a stream of junk records


def test_whole_file_compression_names_and_misuse():
    assert detect_format("gs://b/x.jsonl.zst") == "jsonl" and detect_format("x.warc.wet.zst") == "wet"
    assert detect_format("CC-MAIN-1.warc.xz") == "warc" and detect_format("a.ndjson.bz2") == "jsonl"
    assert readers._is_supported("a/b.warc.zstd")
    with pytest.raises(ValueError, match="not for this file type"):
        detect_format("x.parquet.zst")


def test_params_are_validated():
    with pytest.raises(ValueError, match="max_bytes"):
        iter_records(str(WARC_DIR / NEWS), max_bytes=0)
    assert readers.ReaderParams().max_bytes == 10_000_000
