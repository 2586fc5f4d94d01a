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
   teaser grids) can reach the text; its ``<ul>`` become ``<ol>`` on the way, because resiliparse's
   main-content pass drops every ``<ul>`` (on a whole page they are mostly menus; inside an article
   they are mostly content, and link lists are caught by step 4). No root: the whole body is used.
2. **Boilerplate elements skipped** (resiliparse's ``skip_elements``, matched in C): ``h1`` (the
   title is not part of the article body), ``figure``/``figcaption``, ARIA navigation and
   complementary roles (``nav``, ``aside``, ``footer``, ``button`` and hidden elements resiliparse
   drops itself), and ``header`` and ``form`` unless they hold
   three or more ``<p>`` (some sites wrap the article in a ``<header>``, ASP.NET the whole page in one
   ``<form>``); elements whose ``class``
   contains a boilerplate word: share/social/related/comment/newsletter/promo/sidebar/cookie/
   advert/... (``STRONG_WORDS``) or byline/author/caption/tags/meta/nav/menu/widget/... (``WEAK_WORDS``),
   and whose ``id`` contains one of ``ID_WORDS`` (fewer: every selector is tried on every element).
   A name-matched element that holds three or more ``<p>`` is kept (a wrapper named
   ``has-share-buttons`` around the article is not boilerplate). resiliparse's own main-content
   heuristics (``main_content=True``) run as well.
3. **Safety net.** When the skipped text keeps less than ``RAW_KEPT_SHARE`` of the root's raw text
   and of its visible text (``inner_text``: scripts, styles and runs of white space left out, so an
   upper bound of the unskipped text; measured with the raw text alone, which counts scripts, the
   unskipped pass ran on 60-75% of pages, with the visible text on 15-37% and the same choices), the
   root is also serialised without our skip list; when the skipped text keeps less than
   ``MIN_KEPT_SHARE`` of that, a milder list (tags, and strong words on elements without any ``<p>``)
   is tried, and failing that the unskipped text is used (at once when it is shorter than
   ``SHORT_PAGE_CHARS``: no filter keeps a page that short). A substring match on a wrapper can
   therefore never empty a page.
4. **Blocks** (on the text serialised with link markup, ``minimal_html``): a block is a line, or all
   lines of one top-level list item. A block made mostly of link text (``LINK_SHARE``) with fewer
   than ``LINK_LINE_MAX_WORDS`` words is dropped (menus, "related" lists, tag clouds; table rows,
   tab-separated, are data and exempt), a whole list goes when ``LIST_LINK_SHARE`` of its text is
   links and its items average fewer than ``LIST_ITEM_MAX_WORDS`` words (teaser lists: a linked
   headline and a one-line dek per item), and so is a short block that is only a stock boilerplate
   phrase ("Advertisement", "Continue reading", "Related articles", "Share", "Tags:", "Learn more",
   "Latest stories", "Powered by", and the common ones in German, French, Spanish, Indonesian and
   Japanese), only a date, a time or a relative time ("Updated at 1:23 p.m.", "3 days ago"), article
   furniture ("Posted on ... by", "Filed under", "Reporting by", "5 min read", "1 of 6", icon-font
   names such as ``arrow_forward_ios``, escaped tracking-pixel markup), a copyright, cookie or
   affiliate-link notice, or a call to action ("Subscribe to our newsletter", "Follow us on ...",
   "Join our ...", "Click here ...", "This slideshow requires JavaScript"; table rows exempt). List
   items start with a bullet (``\u2022``), ordered or not, as trafilatura's ``-``.

There is no cascade: every page is extracted here (no trafilatura fallback; the ``extractor`` column
says ``webrefinery``). On the article benchmark it reaches trafilatura's precision at about a seventh
of trafilatura's CPU (README, ``bench/bench_extract.py``).

Where the time goes (per-page minimum of 3 tries, 2026-12-02, loaded 2-core machine; article benchmark /
400 WARC pages, ms per page): resiliparse's C does nearly all of it: the skip-list pass 1.26 / 2.14
(42% / 48%; its class/id word selectors ~0.25 / ~0.5 of that, ~20 us each per page on the WARC pages,
lexbor tries every selector on every element), parsing 0.48 / 0.49, the root search 0.36 / 0.44
(mostly the 19-class group), the depth guard 0.29 / 0.31, the unskipped pass of step 3 0.12 / 0.44
(on 16% / 30% of pages), the second tier 0.01 / 0.18 (2% / 10%), the root re-parse 0.17 / 0.06, the
visible text 0.08 / 0.13; the Python block pass 0.26 / 0.31. Fixed in the 2026-12-02 pass: indexing a
resiliparse ``NodeList`` (``nodes[i]``, iteration) walks the whole page per element, ~0.2 ms each on an
80 kB page, ``nodes.item(i)`` does not; the raw text that step 3 compared with counts scripts (the
unskipped pass ran on 60-75% of pages); a page-wide ``<form>`` sent whole sites through all three
passes. Measured and not faster, with the same output: one combined selector list instead of the
root groups (or folded into the depth guard's query), the depth selector restricted to
``:last-child`` or leaf elements, the skip list as one selector string or one ``:is()``, ``div``-only
or case-sensitive class selectors (cheaper, but they change the output), any Python scan of the HTML
(one ``str`` search of a 150 kB page costs ~0.1 ms, a ``class=`` regex ~1 ms), ``main_content=False``
inside a root (10% faster, dev precision 0.969 -> 0.949). Also measured (2026-12-02, loaded machine)
and not kept, with the same text on all 2,361 HTML pages of the shared WARCs: pruning the class/id word
selectors and the root class group per page to the words that occur in some ``class``/``id`` value of
the markup (a provable superset: one lookahead regex per attribute name over the ASCII-lower-cased
bytes, full lists when a value holds ``&``, 8% of pages). The scan costs ~0.5 ms per 150 kB page (four
passes of ~0.1 ms: encode, lower, class, id) and saves ~0.5 ms on a root-less search page (the words
that are left are the ones that match, whose ``:has`` guard is the costly part) but ~0.1 ms on an
article (its skip passes run on the small root): ``bench/bench_extract.py --limit 400 --no-beam
--extractors webrefinery --per-page-rounds 3 --agreement-pages -1 --webrefinery-baseline 7cf247e``,
per-page minima vs 7cf247e, WARC pages 0.98x, article benchmark 0.85x (scanning only root-less pages:
0.96x / 0.90x); the 894 pages of news-articles-aeb, web-pages-mixed, cc-main-2020-34-excerpt and
serp-archive-0000, per-page minimum of 3 tries, 0.93x (serp-archive-0000 alone 0.97x).
``extract_plain_text`` takes a string or an ``HTMLTree``, not a DOM node, so the root must be re-parsed.

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
UNIQUE_ROOT_SELECTORS = frozenset(ROOT_SELECTORS[:2])
ROOT_CANDIDATES = 6  # matches of one selector group looked at (each costs a node wrapper)
ROOT_MIN_CHARS = 200
ROOT_MIN_SHARE = 0.2  # of the body's text

# --- 2. boilerplate elements ----------------------------------------------------------------------

# (nav, aside, footer, button and hidden elements are dropped by resiliparse itself in every pass:
# main_content=True, hidden_elements=False; listing them again cost a selector match per element)
BOILERPLATE_TAGS: Sequence[str] = ("h1", "figure", "figcaption", '[role="navigation"]', '[role="complementary"]')
# Substrings of class names; words that resiliparse's main-content pass already drops as whole
# class tokens (sidebar, cookie, advert, modal, pagination, menu, ...) are left out: every selector
# costs time on every element, and on the dev half they changed nothing.
STRONG_WORDS: Sequence[str] = (
    "share", "social", "related", "recommend", "comment", "newsletter", "subscribe", "breadcrumb", "promo",
    "popup",
)
WEAK_WORDS: Sequence[str] = (
    "byline", "author", "caption", "credit", "tags", "meta", "date", "widget", "banner", "disclaimer",
    "footer", "nav",
)
ID_WORDS: Sequence[str] = ("comment", "sidebar", "related", "share", "footer", "nav")
WRAPPER_GUARD = ":not(:has(p ~ p ~ p))"  # an element holding 3+ paragraphs is content, whatever its name
# Tags that are mostly boilerplate but some sites wrap the whole page in (ASP.NET's page-wide <form>,
# a <header> around the article): skipped only without 3+ paragraphs, as a name-matched element.
WRAPPER_TAGS: Sequence[str] = ("header", "form")


def _attribute_selectors(attr: str, words: Sequence[str], guard: str) -> List[str]:
    return [f'[{attr}*="{w}" i]{guard}' for w in words]


_TAG_SKIPS = list(BOILERPLATE_TAGS) + [tag + WRAPPER_GUARD for tag in WRAPPER_TAGS]
SKIP_TIERS: Sequence[List[str]] = (
    _TAG_SKIPS + _attribute_selectors("class", tuple(STRONG_WORDS) + tuple(WEAK_WORDS), WRAPPER_GUARD)
    + _attribute_selectors("id", ID_WORDS, WRAPPER_GUARD),
    _TAG_SKIPS + _attribute_selectors("class", STRONG_WORDS, ":not(:has(p))"),
)
MIN_KEPT_SHARE = 0.5
SHORT_PAGE_CHARS = 300  # unskipped text shorter than this (~50 words, Gopher's minimum) goes out as it is
RAW_KEPT_SHARE = 0.3  # of the raw text (with scripts), then of the visible text: no unskipped pass needed

# --- 4. blocks ------------------------------------------------------------------------------------

LINK_SHARE = 0.5
LINK_LINE_MAX_WORDS = 12
LIST_ITEM_MAX_WORDS = 25  # a list of links is dropped as a whole when its items average fewer words
LIST_LINK_SHARE = 0.3  # ... and this share of its text is link text
BOILERPLATE_LINE = re.compile(
    r"^\W*(?:advert(?:isement)?|sponsored(?: links?| content)?|continue reading(?: below)?|breaking news"
    r"|related(?: articles| stories| posts| content)?|you may also like|read more|tags?|share(?: this)?"
    r"(?: article| story| post)?|\d* ?comments?|click here|(?:learn|see|show|load|view) (?:more|all)"
    # the same stock phrases in other languages common in crawls (de, fr, es, ja)
    r"|anzeige|werbung|teilen|weitere artikel|verwandte artikel|mehr zum thema|publicit\u00e9|partager"
    r"|(?:\u00e0 )?lire aussi|articles similaires|publicidad|compartir|noticias relacionadas|art\u00edculos relacionados"
    r"|\u30bf\u30b0|\u95a2\u9023\u8a18\u4e8b|\u5e83\u544a|iklan"
    # headings of teaser lists, stray furniture words
    r"|(?:our )?(?:latest|top|more|popular|trending) (?:stories|news|posts|articles)|most (?:read|popular|viewed)"
    r"|editor'?s'? picks?|recent posts|ads?|more|powered by(?: \S+)?|filed under(?:\W.*)?|%d bloggers?\b.*)\W*$",
    re.IGNORECASE,
)
# Site furniture that reads like prose: copyright notices, cookie notices, a date alone on a line.
NOTICE_LINE = re.compile(
    r"^\W*(?:\u00a9|\(c\)|copyright\b)|\u00a9\s*(?:19|20)\d\d\b|\ball rights reserved\b|\b(?:uses|use of) cookies\b"
    r"|\baffiliate (?:links?|commissions?|programs?|partners?)\b|\breferral links?\b",
    re.IGNORECASE,
)
NOTICE_LINE_MAX_WORDS = 40
# Calls to action: subscribe / sign up / follow us / newsletter / get the app, on a short line.
CTA_LINE = re.compile(
    r"\b(?:sign up|subscribe|subscribing|follow (?:us|him|her|them)|newsletters?|download (?:our|the) app"
    r"|join our|click here|(?:requires|enable|turn on) javascript|javascript (?:is )?(?:disabled|required))\b",
    re.IGNORECASE,
)
CTA_LINE_MAX_WORDS = 25
# Article furniture on a short line: "Posted on ... by ...", "Filed under", "Reporting by", reading times,
# gallery counters ("1 of 6"), icon-font ligature names ("arrow_forward_ios"), escaped tracking-pixel markup.
META_LINE = re.compile(
    r"^\W*(?:posted (?:on|by|in)\b|filed under\b|(?:additional )?reporting by\b|(?:written|compiled|edited|editing) by\b"
    r"|\d+\s*min(?:ute)?s?\.? read\b|(?:estimated )?reading time\b|tempo de leitura\b|lesezeit\b|temps de lecture\b"
    r"|\d+ of \d+\W*$|[a-z]+(?:_[a-z]+)+\W*$|(?:<|&lt;)img\b)",
    re.IGNORECASE,
)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
DATE_LINE = re.compile(
    r"^\W*(?:(?:updated|published|posted)(?: on| at)?:?\s*)?(?:[a-z]+day,?\s*)?"
    r"(?:" + _MONTH + r"\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}|\d{1,2}\s+" + _MONTH + r",?\s+\d{4}"
    r"|\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4})"
    r"(?:\s*[,|\u2013-]?\s*(?:at\s*)?\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s*[a-z]{2,4})?)?\W*$"
    r"|^\W*\d{1,2}:\d{2}(?:\s*[ap]\.?m\.?)?(?:\s*[a-z]{2,4})?\W*$"
    # a time alone after "updated"/"published"/"posted", or a relative time ("3 days ago")
    r"|^\W*(?:updated|published|posted)(?: on| at)?:?\s*\d{1,2}[:.]\d{2}(?:\s*[ap]\.?m\.?)?(?:\s*[a-z]{2,4})?\W*$"
    r"|^\W*(?:(?:updated|published|posted):?\s*)?(?:an?|\d+)\s+(?:sec(?:ond)?|min(?:ute)?|hour|hr|day|week|month|year)s?"
    r"\s+ago\W*$",
    re.IGNORECASE,
)

_COMMON = dict(main_content=True, list_bullets=True, alt_texts=False, form_fields=False, noscript=False,
               comments=False)
_UL = re.compile(r"<(/?)ul\b", re.IGNORECASE)
_TAG = re.compile(r"<(/?)([a-z0-9]+)[^>]*>")


def find_main_root(body):
    """(the main-content element of the page's ``<body>``, its raw text length) or (None, None)."""
    total = None  # the body's raw text length: only needed when a candidate is found
    for selector in ROOT_SELECTORS:
        best, best_len = None, 0
        if selector in UNIQUE_ROOT_SELECTORS:  # mostly one per page: the first match, one node wrapper
            first = body.query_selector(selector)
            candidates = () if first is None else (first,)
        else:
            matches = body.query_selector_all(selector)
            # ``item(i)``: one node wrapper; ``matches[i]`` and iteration cost a walk of the whole
            # page per element in resiliparse 2.0 (measured ~0.2 ms each on a 80 kB page)
            candidates = (matches.item(i) for i in range(min(len(matches), ROOT_CANDIDATES)))
        for node in candidates:
            if node is None:
                break
            n = len(node.text)
            if n > best_len:
                best, best_len = node, n
        if best is not None and best_len >= ROOT_MIN_CHARS:
            if total is None:
                total = len(body.text)
            if best_len >= ROOT_MIN_SHARE * total:
                return best, best_len
    return None, None


def _keep_block(text: str, link_chars: int) -> bool:
    """Whether a block (one line, or all lines of one top-level list item) is main text."""
    text = text.strip()
    if not text:
        return True  # blank lines: kept as separators (collapsed later)
    n_words = text.count(" ") + 1  # words up to runs of spaces: cheap, and only compared to small limits
    if n_words >= NOTICE_LINE_MAX_WORDS:
        return True
    if link_chars > LINK_SHARE * len(text) and n_words < LINK_LINE_MAX_WORDS and "\t" not in text:
        return False  # (a tab: a table row, kept as data, as trafilatura keeps tables)
    if n_words <= 10:
        if n_words <= 4 and BOILERPLATE_LINE.match(text):
            return False
        if DATE_LINE.match(text) or META_LINE.match(text):
            return False
    if n_words <= CTA_LINE_MAX_WORDS and "\t" not in text and CTA_LINE.search(text):
        return False
    low = text.lower()
    if ("\u00a9" in text or "(c)" in low or "copyright" in low or "rights reserved" in low or "cookies" in low
         or "affiliate" in low or "referral" in low) \
            and NOTICE_LINE.search(text):
        return False
    return True


def _emit_list(items: List[tuple], out: List[str]) -> None:
    """Append the kept items of one top-level list (``[(lines, link_chars)]``) to ``out``: nothing
    when the whole list is mostly link text in short items (menus, related stories, teaser lists
    whose items are a linked headline and a one-line dek), else item by item."""
    if len(items) >= 2:
        words = [w for lines, _ in items for line in lines for w in line.split()]
        chars = sum(len(w) for w in words) + len(words)  # single-spaced: indentation does not count
        links = sum(n for _, n in items)
        if links > LIST_LINK_SHARE * chars and len(words) < LIST_ITEM_MAX_WORDS * len(items):
            return
    for lines, links in items:
        if _keep_block(" ".join(lines), links):
            out.extend(lines)


def _bulleted(piece: str) -> str:
    stripped = piece.lstrip()
    return piece[: len(piece) - len(stripped)] + "\u2022 " + stripped


def marked_to_text(marked: str) -> str:
    """Plain text from resiliparse's ``minimal_html`` output (``links=True``), block by block: a block
    is a line, or all lines of one top-level list item, and a whole list is judged too; blocks made
    mostly of link text with few words, stock boilerplate phrases, lone dates and copyright/cookie
    notices are dropped. List items start with a bullet (``\u2022``, ordered or not, as
    trafilatura's ``-``)."""
    out: List[str] = []
    append = out.append
    keep_block = _keep_block
    split_tags = _TAG.split  # [text, "/" or "", tag, text, ...]: cheaper than a match object per tag
    items: List[tuple] = []  # the open top-level list: [(lines, link_chars)]
    block: List[str] = []  # lines of the open top-level list item
    block_links = 0
    li_depth = list_depth = 0
    in_link = False
    bullet = False  # a list item opened and its first text has not come yet
    for line in marked.split("\n"):
        if "<" not in line and not li_depth and not list_depth:
            # the common line: no tag, outside lists (so no list is open: ``items`` is empty)
            stripped = line.strip()
            if not stripped:
                append(line)  # blank lines: kept as separators (collapsed later)
                continue
            if bullet:  # an empty list item closed on an earlier line: its bullet goes here
                line, bullet = _bulleted(line), False
            if keep_block(line, len(stripped) if in_link else 0):
                append(line)
            continue
        in_item = li_depth > 0
        list_closed = False
        link_chars = 0
        if "<" not in line:
            text = line
            if in_link:
                link_chars = len(line.strip())
            if bullet and text.strip():
                text, bullet = _bulleted(text), False
        else:
            pieces = split_tags(line)
            parts = []
            last = len(pieces) - 1
            for i in range(0, last + 1, 3):
                piece = pieces[i]
                if piece:
                    if bullet and piece.strip():
                        piece, bullet = _bulleted(piece), False
                    parts.append(piece)
                    if in_link:
                        link_chars += len(piece.strip())
                if i == last:
                    break
                closing, tag = pieces[i + 1], pieces[i + 2]
                if tag == "a":
                    in_link = not closing
                elif tag == "li":
                    if closing:
                        li_depth = max(0, li_depth - 1)
                    else:
                        li_depth += 1
                        in_item = bullet = True
                elif tag == "ol" or tag == "ul":
                    if closing:
                        list_depth = max(0, list_depth - 1)
                        list_closed = list_depth == 0
                    else:
                        list_depth += 1
            text = "".join(parts)
            if "&" in text:
                text = html_lib.unescape(text)
        if in_item:
            if text.strip():
                block.append(text)
                block_links += link_chars
            if li_depth == 0:  # the top-level item closed on this line
                items.append((block, block_links))
                block, block_links = [], 0
        elif list_depth > 0 or list_closed:
            if text.strip():
                items.append(([text], link_chars))
        elif keep_block(text, link_chars):
            append(text)
        if items and (list_closed or (list_depth == 0 and li_depth == 0)):
            _emit_list(items, out)
            items = []
    if block:
        items.append((block, block_links))
    _emit_list(items, out)
    return "\n".join(out)


def extract_main_text(tree: HTMLTree) -> Optional[str]:
    """The main text of a parsed page (steps 1-4 of the module docstring)."""
    body = tree.body
    if body is None:
        return None
    root, raw_chars = find_main_root(body)
    node = body if root is None else root
    if root is not None:
        # <ul> as <ol>: resiliparse's main-content pass drops every <ul> (menus, on a whole page);
        # inside an article root lists are mostly content, and link lists go by the block rule
        tree = HTMLTree.parse("<html><body>" + _UL.sub(r"<\1ol", root.inner_html) + "</body></html>")
    unskipped = None
    visible_chars = None
    for skip in SKIP_TIERS:
        text = marked_to_text(extract_plain_text(tree, preserve_formatting="minimal_html", links=True,
                                                 skip_elements=skip, **_COMMON))
        if raw_chars is not None and len(text) >= RAW_KEPT_SHARE * raw_chars:
            return text  # plenty of the root's raw text left: no need to compare
        if visible_chars is None:
            # the raw text counts scripts and white space; the visible text (scripts, styles and white
            # space runs left out) is the cheap upper bound of the unskipped text
            visible_chars = len(node.inner_text)
        if len(text) >= RAW_KEPT_SHARE * visible_chars:
            return text
        if unskipped is None:
            unskipped = extract_plain_text(tree, preserve_formatting=True, links=False, **_COMMON)
            if len(unskipped) < SHORT_PAGE_CHARS and len(text) < MIN_KEPT_SHARE * len(unskipped):
                break  # too short for any quality filter to keep: a milder tier is not worth its pass
        if len(text) >= MIN_KEPT_SHARE * len(unskipped):
            return text
    return unskipped or None
