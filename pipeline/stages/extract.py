"""The ``extract`` stage: main-text extraction from a page's HTML (RefinedWeb's MDR step 2).

Input: a Document whose transport field ``html`` holds the decoded HTML (``str``; ``bytes`` are
decoded here with resiliparse's encoding detection). Output: ``doc["text"]`` = the main text, and
``html`` removed (it is a transport field, never written to a shard). Documents that arrive
without ``html`` (WET records, JSONL/Parquet text) pass through untouched, so one pipeline serves
HTML and text inputs.

Extractors (parameter ``extractor``):

- ``"trafilatura"`` (default, as in RefinedWeb): precision-favouring settings
  (``favor_precision=True``, ``include_comments=False``, ``include_tables`` configurable;
  ``fast=True`` skips trafilatura's fallback extractors (readability, jusText): on the 181-page
  extraction benchmark 1.6x less CPU for F1 0.943 instead of 0.962, between the default and
  resiliparse's 12x / 0.929). Always
  ``deduplicate=False``: trafilatura's deduplication keeps a cache across documents, which makes a
  page's output depend on what the same worker extracted before it.
  lxml (libxml2) stops building the tree at 256 levels of nesting, so trafilatura returns nothing
  for such pages (counted as ``empty``) and has no pathological slow-down on deep pages.
- ``"resiliparse"``: ``extract_plain_text(main_content=True)`` with formatting preserved, no alt
  texts, links, form fields, noscript or comments; about an order of magnitude faster. Its
  main-content pass is quadratic in nesting depth inside C (measured: 5,000 levels 0.3 s,
  40,000 levels 57 s, both well under ``max_html_bytes``), so pages nested deeper than
  ``max_depth`` are rejected (``too_deep``) before extraction; the check runs on the same parsed
  tree the extractor then uses.
- ``"webrefinery"``: our own extractor (``pipeline/stages/extract_webrefinery.py``) on the same
  depth-guarded lexbor DOM: the article root found by CSS selector groups (``articleBody``, CMS
  body classes, ``<article>``, ``<main>``) and re-parsed alone, boilerplate elements (nav, aside,
  footer, header, h1, figures, forms, and share/social/related/comment/newsletter/sidebar/cookie/
  byline/... class names) skipped in C with a safety net against wrappers, then link-dominated short
  blocks and stock boilerplate lines dropped. No trafilatura fallback (the ``extractor`` column says
  ``webrefinery``). On the 181-page benchmark F1 0.963 with precision 0.957 (trafilatura 0.962 /
  0.960, resiliparse 0.929 / 0.887) at about 6x trafilatura's pages per CPU-second; numbers and
  the dev/test halves in the README.

Post-processing (all extractors): URLs removed from the text (``remove_urls``), trailing spaces
stripped from every line, at most ``max_consecutive_newlines`` (2: one blank line) in a row.

Rejections (``extract:<rule>``): ``too_large`` (HTML longer than ``max_html_bytes`` UTF-8 bytes,
checked before parsing), ``too_deep`` (resiliparse and webrefinery, see above), ``timeout`` (extraction
ran longer than ``timeout_s``; see ``pipeline/stages/timeout.py`` for how and for what cannot be
interrupted), ``empty`` (nothing, or fewer than ``min_chars`` characters, extracted). ``html`` is
dropped from rejected documents too (shards never hold it); ``source`` + ``record_offset`` locate
the raw record for an audit.

Column added: ``extractor`` (the extractor that handled the page, on kept and rejected documents;
null for pass-through text documents).
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Dict, Optional

import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, ParamError, register
from pipeline.stages.timeout import DeadlineExceeded, call_with_deadline

STAGE = "extract"


class _Reject(Exception):
    """Raised by an extractor to reject the page with a rule name."""

    def __init__(self, rule: str):
        super().__init__(rule)
        self.rule = rule


# --- extractors: (html, params) -> text or None ---------------------------------------------------


def extract_with_trafilatura(html: str, params: ExtractParams) -> Optional[str]:
    """Main text by trafilatura with precision-favouring, order-independent settings."""
    import trafilatura

    return trafilatura.extract(
        html,
        output_format="txt",
        favor_precision=True,
        include_comments=False,
        include_tables=params.include_tables,
        include_images=False,
        include_links=False,
        include_formatting=False,
        with_metadata=False,
        deduplicate=False,
        fast=params.fast,
    )


@functools.lru_cache(maxsize=8)
def css_selector_deeper_than(depth: int) -> str:
    # "* > * > ... > *" with depth+1 elements matches an element with >= depth element ancestors.
    return " > ".join(["*"] * (depth + 1))


def parse_with_depth_guard(html: str, params: ExtractParams):
    """The page's lexbor DOM (resiliparse ``HTMLTree``); ``too_deep`` when an element is nested
    deeper than ``max_depth`` (resiliparse and webrefinery share this check)."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    if params.max_depth and tree.document is not None:
        if tree.document.query_selector(css_selector_deeper_than(params.max_depth)) is not None:
            raise _Reject("too_deep")
    return tree


def extract_with_resiliparse(html: str, params: ExtractParams) -> Optional[str]:
    """Main text by resiliparse (lexbor DOM), after the nesting-depth guard."""
    from resiliparse.extract.html2text import extract_plain_text

    tree = parse_with_depth_guard(html, params)
    return extract_plain_text(
        tree,
        preserve_formatting=True,
        main_content=True,
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=False,
    )


def extract_with_webrefinery(html: str, params: ExtractParams) -> Optional[str]:
    """Main text by our own extractor (``pipeline/stages/extract_webrefinery.py``) on the same
    depth-guarded lexbor DOM as resiliparse."""
    from pipeline.stages.extract_webrefinery import extract_main_text

    return extract_main_text(parse_with_depth_guard(html, params))


EXTRACTORS: Dict[str, Callable[[str, ExtractParams], Optional[str]]] = {
    "trafilatura": extract_with_trafilatura,
    "resiliparse": extract_with_resiliparse,
    "webrefinery": extract_with_webrefinery,
}


# --- text clean-up --------------------------------------------------------------------------------

# A URL: scheme:// or www. up to whitespace (greedy: linear time on any input). Sentence
# punctuation at its end (``.``, ``)``, ...) is given back to the text.
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']+", re.IGNORECASE)
_URL_TRAILING_PUNCT = ".,;:!?)]}>'\"*"


def remove_urls(text: str) -> str:
    """Text without http(s)/ftp/www URLs. The spaces around a removed URL shrink to one space
    (none at the start or end of a line); punctuation that ended the URL's sentence stays."""
    if "://" not in text and "www." not in text.lower():
        return text
    out = []
    last = ""  # last character emitted so far ("" = start of text)
    pos = 0
    n = len(text)
    for m in _URL.finditer(text):
        start, end = m.span()
        if start < pos:  # cannot happen (URLs contain no spaces), kept as a guard
            continue
        url = m.group()
        tail = url[len(url.rstrip(_URL_TRAILING_PUNCT)):]
        before = text[pos:start]
        kept = before.rstrip(" \t")
        spaced = len(kept) < len(before)
        j = end
        while j < n and text[j] in " \t":
            j += 1
        spaced = spaced or j > end
        if kept:
            out.append(kept)
            last = kept[-1]
        if tail:
            out.append(tail)
            last = tail[-1]
        after_break_or_space = last in ("", "\n", " ", "\t")  # line start, or a space already kept
        at_line_end = j >= n or text[j] in "\r\n"
        if spaced and not after_break_or_space and not at_line_end:
            out.append(" ")
            last = " "
        pos = j
    out.append(text[pos:])
    return "".join(out)


def strip_trailing_spaces(text: str) -> str:
    """Text with the white space at the end of every line removed."""
    return "\n".join(line.rstrip() for line in text.split("\n"))


def collapse_newlines(text: str, max_newlines: int = 2) -> str:
    """Text with runs of more than ``max_newlines`` newlines cut to ``max_newlines``."""
    return re.sub("\n{%d,}" % (max_newlines + 1), "\n" * max_newlines, text)


def clean_text(text: str, params: ExtractParams) -> str:
    """Post-process extracted text: URLs out, trailing spaces out, blank-line runs collapsed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if params.remove_urls:
        text = remove_urls(text)
    text = strip_trailing_spaces(text)
    text = collapse_newlines(text, params.max_consecutive_newlines)
    return text.strip()


def html_to_str(html: bytes) -> str:
    """Decode raw HTML bytes (encoding detected from BOM/meta/content, UTF-8/cp1252 fallback)."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(html, detect_encoding(html))


def utf8_length_exceeds(text: str, limit: int) -> bool:
    """True when ``text`` takes more than ``limit`` bytes in UTF-8 (encodes only when unsure)."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


@register
class ExtractStage(DocumentStage):
    name = STAGE
    parameters = (
        Param("extractor", "trafilatura", kind="any", type=str),  # "trafilatura" | "resiliparse" | "webrefinery"
        Param("include_tables", True, kind="bool"),  # trafilatura: keep the text of <table> elements
        Param("fast", False, kind="bool"),  # trafilatura: skip its fallback extractors (1.6-1.8x faster, F1 0.943 vs 0.962 measured)
        Param("remove_urls", True, kind="bool"),
        Param("max_consecutive_newlines", 2, lo=1),  # at most one blank line
        Param("max_html_bytes", 5_000_000, lo=1),
        Param("max_depth", 1_000, lo=0),  # resiliparse, webrefinery: deepest element nesting accepted (0 = no limit)
        Param("timeout_s", 10.0, lo=0),  # 0 = no limit
        Param("min_chars", 1, lo=0),
    )
    signal_columns = {"extractor": pa.string()}

    @staticmethod
    def validate_params(params) -> None:
        if params.extractor not in EXTRACTORS:
            raise ParamError(
                f"stage '{STAGE}': 'extractor' = {params.extractor!r} is unknown; choose one of {sorted(EXTRACTORS)}"
            )

    shrinks_documents = True  # a page's text is ~30x smaller than its HTML: spread documents after extraction

    def setup(self) -> None:
        self.params.validate()
        self._extract = EXTRACTORS[self.params.extractor]
        if self.params.extractor == "trafilatura":  # import once per worker, not on the first page
            import trafilatura  # noqa: F401
        elif self.params.extractor == "webrefinery":
            import pipeline.stages.extract_webrefinery  # noqa: F401
        else:
            import resiliparse.extract.html2text  # noqa: F401

    def _extract_and_clean(self, html: str) -> Optional[str]:
        raw = self._extract(html, self.params)
        return clean_text(raw, self.params) if raw else None

    def process(self, doc) -> Optional[str]:
        if doc.get("html") is None:  # text input (WET, JSONL, ...): nothing to extract
            doc.pop("html", None)
            return None
        if not hasattr(self, "_extract"):
            self.setup()
        p = self.params
        html = doc.pop("html")  # a transport field: gone from kept and rejected documents alike
        doc["extractor"] = p.extractor
        if isinstance(html, (bytes, bytearray, memoryview)):
            if len(html) > p.max_html_bytes:
                return "too_large"
            html = html_to_str(bytes(html))
        elif utf8_length_exceeds(html, p.max_html_bytes):
            return "too_large"
        try:
            text = call_with_deadline(p.timeout_s, self._extract_and_clean, html)
        except DeadlineExceeded:
            return "timeout"
        except _Reject as rej:
            return rej.rule
        if not text or len(text) < p.min_chars:
            return "empty"
        doc["text"] = text
        return None


ExtractParams = ExtractStage.Params
