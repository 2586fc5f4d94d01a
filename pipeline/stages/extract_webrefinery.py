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
WRAPPER_GUARD = ":not(:has(p ~ p ~ p))"  # an element holding 3+ paragraphs is content, whatever its name


def _attribute_selectors(words: Sequence[str], guard: str) -> List[str]:
    return [f'[{attr}*="{w}" i]{guard}' for w in words for attr in ("class", "id")]


SKIP_TIERS: Sequence[List[str]] = (
    list(BOILERPLATE_TAGS) + _attribute_selectors(STRONG_WORDS, WRAPPER_GUARD)
    + _attribute_selectors(WEAK_WORDS, WRAPPER_GUARD),
    list(BOILERPLATE_TAGS) + _attribute_selectors(STRONG_WORDS, ":not(:has(p))"),
)
MIN_KEPT_SHARE = 0.5

# --- 4. line level --------------------------------------------------------------------------------

LINK_SHARE = 0.5
LINK_LINE_MAX_WORDS = 12
BOILERPLATE_LINE = re.compile(
    r"^\W*(?:advert(?:isement)?|sponsored(?: links?| content)?|continue reading(?: below)?|breaking news"
    r"|related(?: articles| stories| posts| content)?|you may also like|read more|tags?|share(?: this)?"
    r"(?: article| story| post)?|\d* ?comments?|click here)\W*$",
    re.IGNORECASE,
)

_COMMON = dict(main_content=True, list_bullets=True, alt_texts=False, form_fields=False, noscript=False,
               comments=False)
_TAG = re.compile(r"<(/?)([a-z0-9]+)[^>]*>")


def find_main_root(body):
    """The main-content element of the page's ``<body>`` (see the module docstring), or None."""
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
            return best
    return None


def marked_to_text(marked: str) -> str:
    """Plain text from resiliparse's ``minimal_html`` output, without link-dominated short lines
    and stock boilerplate lines. List items get bullets (``•``, ``1.`` in ordered lists)."""
    out = []
    lists: List[list] = []  # open lists: [ordered?, next number]
    in_link = False
    for line in marked.split("\n"):
        if "<" not in line:
            text, link_chars = line, (len(line.strip()) if in_link else 0)
        else:
            parts, link_chars, pos, prefix = [], 0, 0, ""
            for m in _TAG.finditer(line):
                piece = line[pos:m.start()]
                parts.append(piece)
                if in_link:
                    link_chars += len(piece.strip())
                pos = m.end()
                closing, tag = m.group(1), m.group(2)
                if tag == "a":
                    in_link = not closing
                elif tag in ("ul", "ol"):
                    if closing:
                        if lists:
                            lists.pop()
                    else:
                        lists.append([tag == "ol", 1])
                elif tag == "li" and not closing:
                    if lists and lists[-1][0]:
                        prefix = f"{lists[-1][1]}. "
                        lists[-1][1] += 1
                    else:
                        prefix = "\u2022 "
            piece = line[pos:]
            parts.append(piece)
            if in_link:
                link_chars += len(piece.strip())
            text = "".join(parts)
            if prefix:
                stripped = text.lstrip()
                text = text[: len(text) - len(stripped)] + prefix + stripped
            if "&" in text:
                text = html_lib.unescape(text)
        words = text.split()
        if words:
            chars = len(text.strip())
            if link_chars > LINK_SHARE * chars and len(words) < LINK_LINE_MAX_WORDS:
                continue
            if len(words) <= 4 and BOILERPLATE_LINE.match(text.strip()):
                continue
        out.append(text)
    return "\n".join(out)


def extract_main_text(tree: HTMLTree) -> Optional[str]:
    """The main text of a parsed page (steps 1-4 of the module docstring)."""
    body = tree.body
    if body is None:
        return None
    root = find_main_root(body)
    if root is not None:
        tree = HTMLTree.parse("<html><body>" + root.inner_html + "</body></html>")
    unskipped = extract_plain_text(tree, preserve_formatting=True, links=False, **_COMMON)
    if not unskipped.strip():
        return None
    for skip in SKIP_TIERS:
        marked = extract_plain_text(tree, preserve_formatting="minimal_html", links=True,
                                    skip_elements=skip, **_COMMON)
        text = marked_to_text(marked)
        if len(text) >= MIN_KEPT_SHARE * len(unskipped):
            return text
    return unskipped
