"""Webrefinery's own main-text extractor (``extract`` stage, ``extractor: webrefinery``).

Built on resiliparse's lexbor DOM and its C plain-text serialiser; the decisions that make the text
precise are ours, and every one of them runs in C (CSS selectors) or on the short extracted text,
never as a Python walk over the DOM (in resiliparse 2.0 every Python DOM-node wrapper costs time
proportional to the page's size, so a Python walk is quadratic).

1. **Main-content root.** Groups of CSS selectors, most specific first: schema.org
   ``itemprop=articleBody``; the article-body class names of common CMSs (``entry-content``,
   ``article-body``, ``post-content``, ...); ``<article>``; ``<main>`` / ``role=main``. In the first
   group with a match, the largest of its first few matches (by text length) becomes the root when it
   holds at least ``ROOT_MIN_CHARS`` characters and ``ROOT_MIN_SHARE`` of the body's text. The root's
   inner HTML is re-parsed as a page of its own, so nothing outside it (menus, sidebars, footers,
   teaser grids) can reach the text. No root: the whole body is used.
2. **Boilerplate elements skipped** (resiliparse's ``skip_elements``, matched in C): the tags
   ``nav``, ``aside``, ``footer``, ``header``, ``h1`` (the title is not part of the article body),
   ``figure``/``figcaption``, ``form``, ``button``, hidden elements; and elements whose ``class`` or
   ``id`` contains a boilerplate word: share/social/related/comment/newsletter/promo/sidebar/cookie/
   advert/... (``STRONG_WORDS``) and byline/author/caption/tags/meta/nav/menu/widget/... (``WEAK_WORDS``).
   A class-matched element that holds three or more ``<p>`` is kept (a wrapper named
   ``has-share-buttons`` around the article is not boilerplate). resiliparse's own main-content
   heuristics (``main_content=True``) run as well.
3. **Safety net.** The same root is also serialised without our skip list; when the skipped version
   keeps less than ``MIN_KEPT_SHARE`` of that text, a milder list (tags and strong words on
   elements without any ``<p>``) is tried, and failing that the unskipped text is used. A
   substring match on a wrapper can therefore never empty a page.
4. **Line level** (on the extracted text, serialised with link markup): a line made mostly of link
   text (``LINK_SHARE``) with fewer than ``LINK_LINE_MAX_WORDS`` words is dropped (menus, "related"
   lists, tag clouds that survived), and so is a line that is only a stock boilerplate phrase
   ("Advertisement", "Continue reading", "Related articles", "Share", "Tags:", ...).

Deterministic: module-level constants only, no state kept across pages. The caller (the stage) owns
the guards: size limit before parsing, the depth guard on the parsed tree (shared with resiliparse),
and the timeout.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import List, Optional, Sequence

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

# --- 1. main-content root -------------------------------------------------------------------------

ROOT_SELECTORS: Sequence[str] = (
    '[itemprop="articleBody" i]',
    ", ".join("." + c for c in (
        "article-body", "article__body", "articleBody", "article-content", "article__content",
        "article-text", "articletext", "entry-content", "entry__content", "post-content", "post__content",
        "post-body", "story-body", "story-content", "c-entry-content", "content-body", "body-content",
        "td-post-content", "single-post-content",
    )),
    "article",
    'main, [role="main"]',
)
ROOT_CANDIDATES = 6  # matches of one selector group looked at (each costs a node wrapper)
ROOT_MIN_CHARS = 200
ROOT_MIN_SHARE = 0.2  # of the body's text

# --- 2. boilerplate elements ----------------------------------------------------------------------

BOILERPLATE_TAGS: Sequence[str] = (
    "h1", "header", "nav", "aside", "footer", "figure", "figcaption", "form", "button",
    '[role="navigation"]', '[role="complementary"]', "[hidden]", '[aria-hidden="true"]',
)
STRONG_WORDS: Sequence[str] = (
    "share", "sharing", "social", "related", "recommend", "comment", "newsletter", "subscribe", "signup",
    "breadcrumb", "promo", "sidebar", "cookie", "consent", "gdpr", "advert", "popup", "modal",
)
WEAK_WORDS: Sequence[str] = (
    "byline", "author", "caption", "credit", "tags", "meta", "date", "toolbar", "pagination", "widget",
    "banner", "disclaimer", "footer", "nav", "menu",
)
ID_WORDS: Sequence[str] = (  # ids are matched for fewer words: each selector costs time on every element
    "comment", "sidebar", "related", "share", "social", "newsletter", "cookie", "footer", "nav", "menu",
)
WRAPPER_GUARD = ":not(:has(p ~ p ~ p))"  # an element holding 3+ paragraphs is content, whatever its name


def _attribute_selectors(attr: str, words: Sequence[str], guard: str) -> List[str]:
    return [f'[{attr}*="{w}" i]{guard}' for w in words]


SKIP_TIERS: Sequence[List[str]] = (
    list(BOILERPLATE_TAGS) + _attribute_selectors("class", tuple(STRONG_WORDS) + tuple(WEAK_WORDS), WRAPPER_GUARD)
    + _attribute_selectors("id", ID_WORDS, WRAPPER_GUARD),
    list(BOILERPLATE_TAGS) + _attribute_selectors("class", STRONG_WORDS, ":not(:has(p))"),
)
MIN_KEPT_SHARE = 0.5
RAW_KEPT_SHARE = 0.3  # of the root's raw text (which includes white space and scripts): no comparison needed

# --- 4. line level --------------------------------------------------------------------------------

LINK_SHARE = 0.5
LINK_LINE_MAX_WORDS = 12
BOILERPLATE_LINE = re.compile(
    r"^\W*(?:advert(?:isement)?|sponsored(?: links?| content)?|continue reading(?: below)?|breaking news"
    r"|related(?: articles| stories| posts| content)?|you may also like|read more|tags?|share(?: this)?"
    r"(?: article| story| post)?|\d* ?comments?|click here)\W*$",
    re.IGNORECASE,
)
# Site furniture that reads like prose: copyright notices, cookie notices, a date alone on a line.
NOTICE_LINE = re.compile(
    r"^\W*(?:\u00a9|\(c\)|copyright\b)|\ball rights reserved\b|\b(?:uses|use of) cookies\b",
    re.IGNORECASE,
)
NOTICE_LINE_MAX_WORDS = 40
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
DATE_LINE = re.compile(
    r"^\W*(?:(?:updated|published|posted)(?: on| at)?:?\s*)?(?:[a-z]+day,?\s*)?"
    r"(?:" + _MONTH + r"\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}|\d{1,2}\s+" + _MONTH + r",?\s+\d{4}"
    r"|\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4})"
    r"(?:,?\s*(?:at\s*)?\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s*[a-z]{2,4})?)?\W*$",
    re.IGNORECASE,
)

_COMMON = dict(main_content=True, list_bullets=True, alt_texts=False, form_fields=False, noscript=False,
               comments=False)
_UL = re.compile(r"<(/?)ul\b", re.IGNORECASE)
_TAG = re.compile(r"<(/?)([a-z0-9]+)[^>]*>")


def find_main_root(body):
    """(the main-content element of the page's ``<body>`` or None, its raw text length)."""
    total = len(body.text)
    for selector in ROOT_SELECTORS:
        best, best_len = None, 0
        for i, node in enumerate(body.query_selector_all(selector)):
            if i >= ROOT_CANDIDATES:
                break
            n = len(node.text)
            if n > best_len:
                best, best_len = node, n
        if best is not None and best_len >= max(ROOT_MIN_CHARS, ROOT_MIN_SHARE * total):
            return best, best_len
    return None, total


def _keep_block(text: str, link_chars: int) -> bool:
    """Whether a block (one line, or all lines of one top-level list item) is main text."""
    text = text.strip()
    if not text:
        return True  # blank lines: kept as separators (collapsed later)
    n_words = text.count(" ") + 1  # words up to runs of spaces: cheap, and only compared to small limits
    if n_words >= NOTICE_LINE_MAX_WORDS:
        return True
    if link_chars > LINK_SHARE * len(text) and n_words < LINK_LINE_MAX_WORDS:
        return False
    if n_words <= 10:
        if n_words <= 4 and BOILERPLATE_LINE.match(text):
            return False
        if DATE_LINE.match(text):
            return False
    low = text.lower()
    if ("\u00a9" in text or "(c)" in low or "copyright" in low or "rights reserved" in low or "cookies" in low) \
            and NOTICE_LINE.search(text):
        return False
    return True


def marked_to_text(marked: str) -> str:
    """Plain text from resiliparse's ``minimal_html`` output (``links=True``), block by block: a block
    is a line, or all lines of one top-level list item; blocks made mostly of link text with few
    words, stock boilerplate phrases, lone dates and copyright/cookie notices are dropped. List items
    start with a bullet (``\u2022``, ordered or not, as trafilatura's ``-``)."""
    out: List[str] = []
    block: List[str] = []  # lines of the open top-level list item
    block_links = 0
    li_depth = 0
    in_link = False
    bullet = False  # a list item opened and its first text has not come yet
    for line in marked.split("\n"):
        in_item = li_depth > 0
        link_chars = 0
        if "<" not in line:
            text = line
            if in_link:
                link_chars = len(line.strip())
        else:
            parts, pos = [], 0
            for m in _TAG.finditer(line):
                piece = line[pos:m.start()]
                if piece:
                    if bullet and piece.strip():
                        piece = piece.replace(piece.lstrip(), "\u2022 " + piece.lstrip(), 1)
                        bullet = False
                    parts.append(piece)
                    if in_link:
                        link_chars += len(piece.strip())
                pos = m.end()
                closing, tag = m.group(1), m.group(2)
                if tag == "a":
                    in_link = not closing
                elif tag == "li":
                    if closing:
                        li_depth = max(0, li_depth - 1)
                    else:
                        li_depth += 1
                        in_item = True
                        bullet = True
            piece = line[pos:]
            if piece:
                if bullet and piece.strip():
                    piece = piece.replace(piece.lstrip(), "\u2022 " + piece.lstrip(), 1)
                    bullet = False
                parts.append(piece)
                if in_link:
                    link_chars += len(piece.strip())
            text = "".join(parts)
            if "&" in text:
                text = html_lib.unescape(text)
        if bullet and text.strip() and "<" not in line:
            text = text.replace(text.lstrip(), "\u2022 " + text.lstrip(), 1)
            bullet = False
        if in_item:
            if text.strip():
                block.append(text)
                block_links += link_chars
            if li_depth == 0:  # the top-level item closed on this line
                if _keep_block(" ".join(block), block_links):
                    out.extend(block)
                block, block_links = [], 0
            continue
        if _keep_block(text, link_chars):
            out.append(text)
    if block and _keep_block(" ".join(block), block_links):
        out.extend(block)
    return "\n".join(out)


def extract_main_text(tree: HTMLTree) -> Optional[str]:
    """The main text of a parsed page (steps 1-4 of the module docstring)."""
    body = tree.body
    if body is None:
        return None
    root, raw_chars = find_main_root(body)
    if root is not None:
        # <ul> as <ol>: resiliparse's main-content pass drops every <ul> (menus, on a whole page);
        # inside an article root lists are mostly content, and link lists go by the block rule
        tree = HTMLTree.parse("<html><body>" + _UL.sub(r"<\1ol", root.inner_html) + "</body></html>")
    unskipped = None
    for skip in SKIP_TIERS:
        text = marked_to_text(extract_plain_text(tree, preserve_formatting="minimal_html", links=True,
                                                 skip_elements=skip, **_COMMON))
        if len(text) >= RAW_KEPT_SHARE * raw_chars:  # plenty of the raw text left: no need to compare
            return text
        if unskipped is None:
            unskipped = extract_plain_text(tree, preserve_formatting=True, links=False, **_COMMON)
        if len(text) >= MIN_KEPT_SHARE * len(unskipped):
            return text
    return unskipped or None
