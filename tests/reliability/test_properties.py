"""Property tests (hypothesis): the document stages and the archive reader on arbitrary input.

- Every document stage of ``refinedweb``, ``refinedweb_fast`` and ``fineweb`` (not dedup), given any
  Unicode text (control characters, NULs, long runs of newlines, right-to-left scripts, emoji, mojibake,
  no surrogates) as ``text``, as ``html`` and as ``url``, keeps the document or returns a
  ``"<stage>:<rule>"`` reason, never an ``":error:"`` dead letter.
- ``normalize`` is idempotent; ``line_corrections`` never adds words and its removed fraction is in [0, 1];
  the Gopher, FineWeb signals that are fractions lie in [0, 1] (Gopher's top n-gram character fraction
  counts overlapping occurrences, as Gopher and datatrove do, so it lies in [0, n]), under both Gopher
  conventions (``paper`` and ``datatrove``), and the datatrove word tokens keep every non-space character.
- The WARC/ARC/WET reader on arbitrary bytes never raises; on real records (cut from the shared Common Crawl
  excerpt) with random byte flips or truncations it never raises and never yields a page that was not in the
  original: every page it yields has an original record id and, for gzip archives (CRC-checked), the
  original HTML.

The ``webrefinery`` settings profile keeps the file under a minute on one core; set
``HYPOTHESIS_PROFILE=webrefinery-long`` for a longer search.
"""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from functools import lru_cache
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.config import get_pipeline
from pipeline.io.readers import iter_records
from pipeline.paths import require_shared
from pipeline.stages.base import DocumentStage, apply_stage
from pipeline.stages.fineweb_filters import FineWebFiltersParams, fineweb_signals
from pipeline.stages.en_words import en_words
from pipeline.stages.gopher_quality import DEFAULT_STOP_WORDS, quality_signals, quality_signals_datatrove
from pipeline.stages.gopher_repetition import DUP_NS, TOP_NS, repetition_signals, repetition_signals_datatrove
from pipeline.stages.line_corrections import LineCorrections, LineCorrectionsParams, correct_lines
from pipeline.stages.normalize import Normalize
from pipeline.stages.text_utils import split_words

settings.register_profile("webrefinery", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("webrefinery-long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "webrefinery"))

PIPELINES = ("refinedweb", "refinedweb_fast", "fineweb")

# ---------------------------------------------------------------------------------------------------
# Strategies: hostile text


_SPECIAL = [
    "\x00", "\n", "\r\n", "\r", "\t", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029",
    "\u200b", "\u200c", "\u200d", "\ufeff", "\u00ad", "\u00a0", "\u3000", "\u0301\u0301",
    "\u202e", "\u200f", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467", "\u4e2d\u6587\u53d1\u5e03", "\u0e44\u0e17\u0e22",
    "\uac00\ub098", "\u00c3\u00a9", "\u00e2\u20ac\u2122", "\u0420\u0451\u0421\u201a", "\u00c2\u00a0",
    "\ufffd", "\U0010ffff", "...", "\u2026", "#", "- ", "\u2022 ", "|", "http://example.com/a?b=c",
    "www.example.org", "Read more", "Sign in | ", " | Share", "3 likes", "12 Comments 4 Shares", "2019",
    "HOME", "Menu", "[1]", "{", "lorem ipsum", "javascript", "privacy policy",
    "the", "and", "of", "to", "with", "that", "have", "be", " ",
]
_WORDS = ("the quick brown fox jumps over the lazy dog and then it goes to sleep with a smile that "
          "never fades because dogs have to be kind").split()


def _newline_runs():
    return st.integers(1, 3000).map(lambda n: "\n" * n)


hostile_text = st.lists(
    st.one_of(
        st.text(max_size=40),  # any code point but surrogates
        st.sampled_from(_SPECIAL),
        st.sampled_from(_WORDS).map(lambda w: w + " "),
        _newline_runs(),
        st.tuples(st.sampled_from(_SPECIAL + _WORDS), st.integers(2, 200)).map(lambda t: (t[0] + " ") * t[1]),
    ),
    max_size=40,
).map("".join)


# ---------------------------------------------------------------------------------------------------
# The stages under test (built once)


@lru_cache(maxsize=None)
def document_stages() -> Tuple[DocumentStage, ...]:
    """Every distinct configured document stage of the pipelines (same name and parameters once)."""
    seen, out = set(), []
    for name in PIPELINES:
        for stage in get_pipeline(name).build_stages():
            key = (stage.name, repr(stage.params))
            if isinstance(stage, DocumentStage) and key not in seen:
                seen.add(key)
                stage.setup()
                out.append(stage)
    return tuple(out)


def test_the_stage_list_covers_every_document_stage():
    names = {s.name for s in document_stages()}
    assert {"url_filter", "extract", "langid", "gopher_repetition", "gopher_quality", "line_corrections",
            "normalize", "c4_filters", "fineweb_filters"} <= names
    assert {s.params.extractor for s in document_stages() if s.name == "extract"} == {"trafilatura", "resiliparse"}


_RULE = re.compile(r"[a-z0-9_]+")


def assert_kept_or_rule(stage: DocumentStage, doc: Dict) -> Dict:
    out, why = apply_stage(stage, doc)
    if why is not None:
        assert ":error:" not in why, f"{why} on {doc!r:.300}"
        prefix, _, rule = why.partition(":")
        assert prefix == stage.name and _RULE.fullmatch(rule), why
    return out


def make_doc(text: str = "", html=None, url="http://example.org/page") -> Dict:
    doc = {"id": "p", "url": url, "text": text, "source": "hypothesis", "warc_date": None, "record_offset": 0}
    if html is not None:
        doc["html"] = html
    return doc


# Inputs that once broke a stage (kept as regression examples): a line of counters that made the
# counter-line regex backtrack exponentially (hours), and words of 999 dots that made C4's sentence
# count quadratic (seconds per line).
REDOS_COUNTERS = "3 likes " * 40 + "!x"
DOT_WORDS = " ".join(["." * 999 + "x"] * 200) + " end."


@pytest.mark.timeout(120)
@given(text=hostile_text)
@example(text=REDOS_COUNTERS)
@example(text=DOT_WORDS)
def test_every_stage_keeps_or_names_a_rule_for_any_text(text):
    for stage in document_stages():
        assert_kept_or_rule(stage, make_doc(text))


@pytest.mark.timeout(120)
@given(html=hostile_text)
def test_every_stage_keeps_or_names_a_rule_for_any_html(html):
    # as HTML (extract parses it) and wrapped in markup
    for stage in document_stages():
        assert_kept_or_rule(stage, make_doc(html=html))
        assert_kept_or_rule(stage, make_doc(html=f"<html><body><div><p>{html}</p></div></body></html>"))


@given(url=st.one_of(hostile_text, st.builds(lambda a, b: f"http://{a}/{b}", st.text(max_size=30), hostile_text)))
def test_every_stage_keeps_or_names_a_rule_for_any_url(url):
    for stage in document_stages():
        assert_kept_or_rule(stage, make_doc("Some text of a page.", url=url))


# ---------------------------------------------------------------------------------------------------
# Stage-specific properties


@lru_cache(maxsize=None)
def normalizer() -> Normalize:
    stage = Normalize()
    stage.setup()
    return stage


@given(text=hostile_text)
@example(text="caf\u00c3\x00\u00a9 don\u00e2\u20ac\u2122t")  # a NUL hid mojibake from the first pass
@example(text="e\x00\u0301 and A\u0303\u00a9")  # removal / NFC made a new composition or mojibake
def test_normalize_is_idempotent(text):
    norm = normalizer()
    once, _ = norm.normalize_text(text)
    twice, fixed_again = norm.normalize_text(once)
    assert twice == once
    assert not fixed_again
    assert "\x00" not in once and "\r" not in once and "\n\n\n" not in once


@given(text=hostile_text)
@example(text="Share|Tweet|Pin it")  # fragments glued together were counted twice
@example(text="Read more \u00bb\ufffd\nHOME\n2019\n")
def test_line_corrections_never_adds_words(text):
    params = LineCorrectionsParams()
    corrected, removed, total = correct_lines(text, params)
    assert len(split_words(corrected)) <= len(split_words(text))
    assert sum(removed.values()) <= total
    assert removed["call_to_action"] <= len(split_words(text))
    doc = make_doc(text)
    why = LineCorrections(params).process(doc)
    assert 0.0 <= doc["lc_removed_fraction"] <= 1.0
    if why is None:
        assert len(split_words(doc["text"])) <= len(split_words(text))


_STOP = frozenset(DEFAULT_STOP_WORDS)


@given(text=hostile_text)
def test_gopher_and_fineweb_fractions_lie_in_unit_interval(text):
    rep = repetition_signals(text)
    for name, value in rep.items():
        n = next((k for k in TOP_NS if name == f"gopher_top_{k}gram_frac"), None)
        upper = n if n is not None else 1.0  # overlapping occurrences of one n-gram count each time
        assert 0.0 <= value <= upper, (name, value)
    assert {f"gopher_dup_{n}gram_frac" for n in DUP_NS} <= set(rep)
    q = quality_signals(text, _STOP)
    for name in ("gopher_bullet_lines_frac", "gopher_ellipsis_lines_frac", "gopher_alpha_words_frac"):
        assert 0.0 <= q[name] <= 1.0, (name, q[name])
    assert q["gopher_words"] >= 0 and q["gopher_mean_word_length"] >= 0 and q["gopher_symbol_word_ratio"] >= 0
    p = FineWebFiltersParams()
    for name, value in fineweb_signals(text, tuple(p.terminal_punctuation), p.short_line_length).items():
        assert 0.0 <= value <= 1.0, (name, value)


@given(text=hostile_text)
def test_datatrove_convention_fractions_and_determinism(text):
    """The same bounds under ``convention: datatrove`` (its top n-gram fraction counts the n-gram's
    spaces too and divides by the text's length, still at most n), the same values on a second call,
    and word tokens that keep every non-space character of the text."""
    rep = repetition_signals_datatrove(text)
    assert rep == repetition_signals_datatrove(text)
    for name, value in rep.items():
        n = next((k for k in TOP_NS if name == f"gopher_top_{k}gram_frac"), None)
        assert 0.0 <= value <= (n if n is not None else 1.0), (name, value)
    q = quality_signals_datatrove(text, _STOP)
    assert q == quality_signals_datatrove(text, _STOP)
    for name in ("gopher_bullet_lines_frac", "gopher_ellipsis_lines_frac", "gopher_alpha_words_frac"):
        assert 0.0 <= q[name] <= 1.0, (name, q[name])
    assert q["gopher_words"] >= 0 and q["gopher_mean_word_length"] >= 0 and q["gopher_symbol_word_ratio"] >= 0
    assert 0 <= q["gopher_stop_words"] <= len(_STOP)
    assert "".join(en_words(text)) == "".join(text.split())


# ---------------------------------------------------------------------------------------------------
# The archive reader on arbitrary and damaged bytes

_TMP = tempfile.TemporaryDirectory(prefix="webrefinery-props-")


def read_bytes_as(data: bytes, name: str) -> List[Tuple[Dict, object]]:
    """Write ``data`` to a file called ``name`` (its suffix picks the format) and read every record."""
    path = os.path.join(_TMP.name, name)
    with open(path, "wb") as fh:
        fh.write(data)
    out = []
    for doc, why in iter_records(path):
        assert isinstance(doc, dict) and isinstance(doc.get("id"), str)
        assert why is None or (isinstance(why, str) and why.startswith("read:")), why
        out.append((doc, why))
    return out


@lru_cache(maxsize=None)
def real_members() -> Tuple[bytes, ...]:
    """The first 12 gzip members (warcinfo, requests, 4 HTML responses, metadata) of a real CC WARC."""
    data = require_shared("warc", "cc-main-2020-34-excerpt.warc.gz").read_bytes()
    members, pos = [], 0
    while len(members) < 12:
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        members.append(data[pos:end])
        pos = end
    return tuple(members)


@lru_cache(maxsize=None)
def seed_archives() -> Dict[str, Tuple[bytes, Dict[str, str]]]:
    """{file name: (bytes, {page id: html})} of the seed archive, gzipped per record and uncompressed."""
    gz = b"".join(real_members())
    plain = b"".join(zlib.decompress(m, 31) for m in real_members())
    out = {}
    import bz2
    import lzma

    import zstandard

    variants = (("seed.warc.gz", gz), ("seed.warc", plain), ("seed.warc.zst", zstandard.ZstdCompressor(write_checksum=True).compress(plain)),
                ("seed.warc.bz2", bz2.compress(plain)), ("seed.warc.xz", lzma.compress(plain)))
    for name, data in variants:
        pages = {d["id"]: d["html"] for d, why in read_bytes_as(data, name) if why is None}
        out[name] = (data, pages)
    return out


def test_seed_archive_has_pages():
    for name, (_, pages) in seed_archives().items():
        assert len(pages) == 4, name


@given(data=st.binary(max_size=4096), name=st.sampled_from(["a.warc.gz", "a.warc", "a.arc", "a.arc.gz", "a.wet",
                                                             "a.warc.zst", "a.jsonl.xz"]))
def test_reader_never_raises_on_arbitrary_bytes(data, name):
    read_bytes_as(data, name)


@given(data=st.binary(max_size=2048), head=st.sampled_from([b"WARC/1.0\r\n", b"\x1f\x8b\x08", b"http://a.b/ 1.2.3.4 20240101000000 text/html 10\n",
                                                            b"\x28\xb5\x2f\xfd", b"BZh9", b"\xfd7zXZ\x00"]))
def test_reader_never_raises_on_bytes_that_start_like_a_record(data, head):
    for name in ("b.warc.gz", "b.warc", "b.arc.gz", "b.wet"):
        read_bytes_as(head + data, name)


@given(
    name=st.sampled_from(["seed.warc.gz", "seed.warc", "seed.warc.zst", "seed.warc.bz2", "seed.warc.xz"]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_damaged_real_archive_yields_only_original_pages(name, flips, cut):
    data, pages = seed_archives()[name]
    damaged = bytearray(data)
    for where, mask in flips:
        damaged[int(where * len(damaged))] ^= mask
    if cut is not None:
        damaged = damaged[: int(cut * len(damaged))]
    plain_flipped = name == "seed.warc" and bool(flips)
    for doc, why in read_bytes_as(bytes(damaged), name):
        if why is not None or plain_flipped:
            continue  # rejections may carry made-up ids; an uncompressed file has no checksum to catch flips
        assert doc["id"] in pages, doc["id"]
        assert doc["html"] == pages[doc["id"]], f"page {doc['id']} changed"


@given(cut=st.integers(0, 200_000))
def test_cut_real_archive_keeps_every_page_before_the_cut(cut):
    data, pages = seed_archives()["seed.warc.gz"]
    cut = min(cut, len(data))
    got = {d["id"] for d, why in read_bytes_as(data[:cut], "seed.warc.gz") if why is None}
    members = real_members()
    complete = 0
    offset = 0
    for m in members:  # pages of the members that lie wholly before the cut
        if offset + len(m) > cut:
            break
        offset += len(m)
        complete += 1
    before = {d["id"] for d, why in read_bytes_as(b"".join(members[:complete]), "pre.warc.gz") if why is None}
    assert got == before


# ---------------------------------------------------------------------------------------------------
# Exact-substring dedup: winnowed candidates mark exactly the windows the exhaustive shuffle marks


def _marks_exhaustive(texts, k):
    from pipeline.dedup.substring import first_positions, later_occurrences, text_windows

    groups = {}
    for node, text in enumerate(texts):
        for fp, pos in first_positions(text_windows(text, k)[3]).items():
            groups.setdefault(fp, []).append((node, pos))
    return sorted(m for item in groups.items() for m in later_occurrences(item))


def _marks_winnowed(texts, k):
    import numpy as np

    from pipeline.dedup.substring import candidate_windows, later_occurrences, shared_anchors, text_anchors, text_windows

    by_anchor = {}
    for node, text in enumerate(texts):
        for h in text_anchors(text, k)[1].tolist():
            by_anchor.setdefault(h, []).append(node)
    shared = {}
    for item in by_anchor.items():
        for node, h in shared_anchors(item):
            shared.setdefault(node, []).append(h)
    groups = {}
    for node, hs in shared.items():
        hq, _ = text_anchors(texts[node], k)
        windows = text_windows(texts[node], k)[3]
        first = {}
        for pos in np.flatnonzero(candidate_windows(hq, np.array(hs, dtype=np.uint64), k, len(windows))).tolist():
            first.setdefault(windows[pos], pos)
        for fp, pos in first.items():
            groups.setdefault(fp, []).append((node, pos))
    return sorted(m for item in groups.items() for m in later_occurrences(item))


@given(
    k=st.integers(2, 12),
    docs=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=60), min_size=1, max_size=8),
)
def test_winnowed_substring_candidates_mark_what_the_exhaustive_shuffle_marks(k, docs):
    # a 6-word vocabulary: repeats, overlaps and hash ties everywhere
    vocab = ["a", "bb", "c", "dd", "e", "ff"]
    texts = [" ".join(vocab[i] for i in doc) for doc in docs]
    assert _marks_winnowed(texts, k) == _marks_exhaustive(texts, k)
