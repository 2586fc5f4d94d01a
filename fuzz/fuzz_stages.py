"""Fuzz target: the document stages of ``refinedweb``, ``refinedweb_fast`` and ``fineweb`` (not dedup), and
the quality layer's ``pii`` and ``decontaminate``, on fuzzer strings, plus the text invariants of
normalize, line_corrections, PII redaction and the Gopher/FineWeb signals.

Run (atheris/libFuzzer flags pass through; the seed corpus is written to a temporary folder at start):

    python fuzz/fuzz_stages.py -max_total_time=60 CORPUS_DIR
    python fuzz/fuzz_stages.py --no-atheris -runs=500           # random-mutation fallback, no atheris

Input layout: byte 0 picks the stage and where the string goes (``text``, ``html`` or ``url``); byte 1
picks how the rest becomes a string (UTF-8 with replacement; UTF-16-LE; UTF-32-LE folded into the
code-point range; surrogates are dropped in every mode). Seeds: real documents from the shared Common Crawl
JSONL, passages of *Botchan*, the start of a real news page's HTML, and hostile strings (NULs, controls,
newline runs, right-to-left text, emoji, mojibake).

What counts as a crash (assertions in ``check_one_input``):

- a stage raising, or returning anything but ``None`` (keep) or ``"<stage>:<rule>"``: ``apply_stage``
  turns exceptions into ``<stage>:error:<Type>``, so an ``:error:`` reason is a crash here;
- ``normalize(normalize(x)) != normalize(x)``;
- ``line_corrections`` giving more words than it got, or a removed fraction outside [0, 1];
- a Gopher or FineWeb fraction outside [0, 1] (the top n-gram character fraction counts overlapping
  occurrences, as Gopher and datatrove do: it must lie in [0, n]);
- PII redaction changing any character outside its matched spans, or a count that is not the number of
  matches (the ``pii`` and ``decontaminate`` stages are fuzzed too).

Importable: ``check_one_input(data)`` is the target, ``seed_inputs()`` the seeds, ``text_of(data)`` the
byte-to-string mapping.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_common import run_fuzzer  # noqa: E402  (the folder of this file, also when imported)

if __name__ == "__main__":  # instrument the project's code (not third-party libraries) for coverage
    try:
        import atheris

        with atheris.instrument_imports(include=["pipeline"]):
            import pipeline.config  # noqa: F401
            import pipeline.stages  # noqa: F401

            pipeline.stages.load_all()
    except ImportError:
        pass

from pipeline.config import get_pipeline  # noqa: E402
from pipeline.paths import require_shared  # noqa: E402
from pipeline.stages.base import DocumentStage, apply_stage  # noqa: E402
from pipeline.stages.fineweb_filters import FineWebFiltersParams, fineweb_signals  # noqa: E402
from pipeline.stages.gopher_quality import DEFAULT_STOP_WORDS, quality_signals  # noqa: E402
from pipeline.stages.gopher_repetition import TOP_NS, repetition_signals  # noqa: E402
from pipeline.stages.line_corrections import LineCorrectionsParams, correct_lines  # noqa: E402
from pipeline.stages.normalize import Normalize  # noqa: E402
from pipeline.stages.text_utils import split_words  # noqa: E402

PIPELINES = ("refinedweb", "refinedweb_fast", "fineweb")
FIELDS = ("text", "html", "url")
_RULE = re.compile(r"[a-z0-9_]+")
_SURROGATES = re.compile("[\ud800-\udfff]")


def build_stages() -> list:
    """Every distinct configured document stage of the pipelines, set up."""
    seen, out = set(), []
    for name in PIPELINES:
        for stage in get_pipeline(name).build_stages():
            key = (stage.name, repr(stage.params))
            if isinstance(stage, DocumentStage) and key not in seen:
                seen.add(key)
                stage.setup()
                out.append(stage)
    return out


def quality_stages() -> list:
    """The quality layer's pattern stages (``pii`` with every kind, ``decontaminate`` in cut mode), set up."""
    from pipeline.quality import pii
    from pipeline.quality.stages import DecontaminateParams, DecontaminateStage, PiiParams, PiiStage

    out = [PiiStage(PiiParams(kinds=pii.KINDS)), DecontaminateStage(DecontaminateParams(mode="cut", min_chars=0))]
    for stage in out:
        stage.setup()
    return out


logging.getLogger("trafilatura").setLevel(logging.CRITICAL)  # it logs every unparsable input
STAGES = build_stages() + quality_stages()
NORMALIZE = Normalize()
NORMALIZE.setup()
LC_PARAMS = LineCorrectionsParams()
STOP_WORDS = frozenset(DEFAULT_STOP_WORDS)
FW_PARAMS = FineWebFiltersParams()


def text_of(data: bytes) -> str:
    """The string a fuzz input carries after its two control bytes (never holds surrogates)."""
    mode, body = data[1] % 3, data[2:]
    if mode == 0:
        text = body.decode("utf-8", "replace")
    elif mode == 1:
        text = body[: len(body) // 2 * 2].decode("utf-16-le", "surrogatepass")
    else:
        n = len(body) // 4
        codes = [int.from_bytes(body[4 * i: 4 * i + 4], "little") % 0x110000 for i in range(n)]
        text = "".join(map(chr, codes))
    return _SURROGATES.sub("", text)


def check_text_invariants(text: str) -> None:
    once, _ = NORMALIZE.normalize_text(text)
    twice, _ = NORMALIZE.normalize_text(once)
    assert twice == once, f"normalize is not idempotent: {once!r:.200} -> {twice!r:.200}"
    corrected, removed, total = correct_lines(text, LC_PARAMS)
    assert len(split_words(corrected)) <= len(split_words(text)), "line_corrections added words"
    assert 0 <= sum(removed.values()) <= total, (removed, total)
    for name, value in repetition_signals(text).items():
        n = next((k for k in TOP_NS if name == f"gopher_top_{k}gram_frac"), 1)
        assert 0.0 <= value <= n, (name, value)
    q = quality_signals(text, STOP_WORDS)
    for name in ("gopher_bullet_lines_frac", "gopher_ellipsis_lines_frac", "gopher_alpha_words_frac"):
        assert 0.0 <= q[name] <= 1.0, (name, q[name])
    for name, value in fineweb_signals(text, tuple(FW_PARAMS.terminal_punctuation), FW_PARAMS.short_line_length).items():
        assert 0.0 <= value <= 1.0, (name, value)
    check_pii_invariants(text)


def check_pii_invariants(text: str) -> None:
    """Redaction changes only the matched spans (each becomes its placeholder) and counts every match."""
    from pipeline.quality import pii

    out, counts, matches = pii.redact(text, kinds=pii.KINDS)
    pos, o = 0, 0
    for m in matches:
        assert pos <= m.start < m.end <= len(text), (m, pos)
        assert out[o:o + m.start - pos] == text[pos:m.start], "pii changed text outside a match"
        o += m.start - pos
        ph = pii.DEFAULT_PLACEHOLDERS[m.kind]
        assert out[o:o + len(ph)] == ph
        o, pos = o + len(ph), m.end
    assert out[o:] == text[pos:] and sum(counts.values()) == len(matches)


def check_one_input(data: bytes) -> None:
    """The fuzz target: one stage on the string (as text, html or url), then the text invariants."""
    if len(data) < 2:
        return
    text = text_of(data)
    stage = STAGES[data[0] % len(STAGES)]
    field = FIELDS[(data[0] // len(STAGES)) % len(FIELDS)]
    doc = {"id": "fuzz", "url": "http://example.org/page", "text": "Some text.", "source": "fuzz",
           "warc_date": None, "record_offset": 0}
    doc[field] = text
    _, why = apply_stage(stage, doc)
    if why is not None:
        assert ":error:" not in why, why
        prefix, _, rule = why.partition(":")
        assert prefix == stage.name and _RULE.fullmatch(rule), why
    check_text_invariants(text)


_HOSTILE = [
    "\x00\x00 the and of \x00", "\n" * 500 + "word " * 50, "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467 " * 30, "caf\u00c3\u00a9 don\u00e2\u20ac\u2122t \u0420\u0451\u0421\u201a",
    "Read more \u00bb | Share | 3 likes\nHOME\n2019\n", "<div>" * 300 + "text" + "</div>" * 300,
    "http://a.b/c www.example.org https://x.y/?q=1 ...", "\u4e2d\u6587\u53d1\u5e03 iPhone 11 \u0e44\u0e17\u0e22",
    "\r\n\x0b\x0c\x85\u2028\u2029\t \u00a0\u3000\u200b\ufeff\u00ad",
]


def seed_inputs() -> list:
    """Real documents and HTML from the shared data, and hostile strings, with control bytes."""
    texts = []
    with gzip.open(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= 8:
                break
            texts.append(json.loads(line)["text"][:4000])
    lines = require_shared("text", "botchan.txt").read_text(encoding="utf-8-sig").splitlines()
    texts.append("\n".join(lines[120:160]))
    pages = sorted(require_shared("html", "article-extraction-benchmark").glob("*.html.gz"))[:2]
    for page in pages:
        texts.append(gzip.decompress(page.read_bytes()).decode("utf-8", "replace")[:16000])
    texts.extend(_HOSTILE)
    seeds = []
    for k, text in enumerate(texts):
        for field in range(len(FIELDS)):
            selector = (k % len(STAGES)) + field * len(STAGES)
            seeds.append(bytes([selector % 256, 0]) + text.encode("utf-8", "surrogatepass"))
    return seeds


def main(argv=None) -> int:
    return run_fuzzer(argv or sys.argv, check_one_input, seed_inputs(), "fuzz_stages")


if __name__ == "__main__":
    sys.exit(main())
