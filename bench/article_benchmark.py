"""The 181-page article-extraction benchmark: loading, the fixed dev/test split, and token P/R/F1.

One place for what both ``tests/pipeline/stages/`` and ``bench/bench_extract.py`` measure:

- pages: ``html/article-extraction-benchmark/<key>.html.gz`` with ``ground-truth.json``'s
  ``articleBody``, sorted by key (the file name, itself a sha256), decoded as the ``extract`` stage
  decodes bytes;
- **split**: in that sorted order, even positions are the *dev* half (91 pages; extractor rules
  were developed looking at these only), odd positions the *test* half (90 pages, reported
  separately, never looked at page by page);
- quality: bag-of-tokens precision, recall and F1 of the stage's text (after its clean-up) against
  the ground truth, tokens = whitespace-split, lower-cased, Unicode punctuation removed; averaged
  over pages (an empty or rejected page scores 0).
"""

from __future__ import annotations

import collections
import gzip
import json
import unicodedata
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from pipeline.paths import require_shared

BENCH = ("html", "article-extraction-benchmark")
HALVES = ("dev", "test")


class Page(NamedTuple):
    key: str
    html: str
    truth: str
    half: str  # "dev" | "test"
    raw_bytes: int  # size of the HTML as stored (after gunzip)


def half_of(position: int) -> str:
    """The half of the page at ``position`` in key-sorted order: even -> dev, odd -> test."""
    return HALVES[position % 2]


def load_pages() -> List[Page]:
    """All benchmark pages, sorted by key, each tagged with its half."""
    from pipeline.stages.extract import html_to_str

    folder = require_shared(*BENCH)
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for i, key in enumerate(sorted(truth)):
        raw = gzip.decompress((folder / f"{key}.html.gz").read_bytes())
        pages.append(Page(key, html_to_str(raw), truth[key]["articleBody"], half_of(i), len(raw)))
    return pages


def f1_tokens(text: str) -> list:
    """Whitespace tokens, lower-cased, with Unicode punctuation removed (empty tokens dropped)."""
    out = []
    for tok in text.lower().split():
        tok = "".join(ch for ch in tok if not unicodedata.category(ch).startswith("P"))
        if tok:
            out.append(tok)
    return out


def token_prf(predicted: str, truth: str) -> Tuple[float, float, float]:
    """Bag-of-tokens precision, recall, F1 of ``predicted`` against ``truth`` (empty -> 0)."""
    pred, ref = collections.Counter(f1_tokens(predicted)), collections.Counter(f1_tokens(truth))
    overlap = sum((pred & ref).values())
    p = overlap / sum(pred.values()) if pred else 0.0
    r = overlap / sum(ref.values()) if ref else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def mean_prf(texts: Dict[str, str], pages: Iterable[Page], half: Optional[str] = None) -> Tuple[float, float, float]:
    """(precision, recall, F1) averaged over the pages (of one half, or all when ``half`` is None)."""
    scores = [token_prf(texts.get(p.key, ""), p.truth) for p in pages if half is None or p.half == half]
    return tuple(sum(s[i] for s in scores) / len(scores) for i in range(3))


def extract_all(pages: Iterable[Page], **params) -> Tuple[Dict[str, str], collections.Counter]:
    """{key: text} ("" for a rejected page) and the rejection counts of one ``extract`` stage."""
    from pipeline.stages.extract import ExtractParams, ExtractStage

    stage = ExtractStage(ExtractParams(**params))
    stage.setup()
    texts, reasons = {}, collections.Counter()
    for page in pages:
        doc = {"id": page.key, "text": "", "html": page.html}
        why = stage.process(doc)
        if why:
            reasons[why] += 1
        texts[page.key] = "" if why else doc["text"]
    return texts, reasons
