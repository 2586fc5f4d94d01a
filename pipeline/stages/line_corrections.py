"""RefinedWeb's line-wise corrections: remove boilerplate lines and fragments, drop over-edited pages.

RefinedWeb (Penedo et al. 2023) removes "undesirable lines" left by extraction: social-media
counters, navigation buttons, mostly upper-case lines, numbers; and if more than 5% of a document's
words were removed, it drops the whole document. The paper does not give exact rules, so each rule
here is a named function that can be switched off (``rules`` parameter) and is tested on its own:

- ``call_to_action`` (a *fragment* rule, applied first): strips call-to-action fragments such as
  "Read more...", "Sign in", "Add to cart", "0 items in cart", "Share on Facebook" from the start
  or the end of a line. To leave prose intact a fragment is only stripped where it stands apart:
  at the line start when followed by a separator (``|``, ``•``, ``»``, ``/``, ``-``, ...; not
  ``:``, since "Email: a@b.c" is content) or the line end; at the line end when preceded by a
  separator, by sentence punctuation (``. ! ? …``) or the line start. "Sign in to view your
  orders." is kept; "Posted in News | Read more »" loses "| Read more »". A line left empty is
  removed. The words of stripped fragments (separators included) count under this rule, as the
  line's words before minus after.
- ``counter`` : the line is only social-media counters ("3 likes", "1.2K shares", "15 comments",
  "Likes: 3", "12 Comments 4 Shares").
- ``numeric``: the line has digits and no letters ("2019", "12/03/2019 14:05", "+1 555 0100").
- ``uppercase``: more than ``uppercase_fraction`` (0.5) of the line's letters are upper case.
- ``single_word``: the line is a single token ("Home", "Menu", "Share").

Whole-line rules are checked in the order above; a removed line counts its words (whitespace
tokens; characters for Chinese/Japanese/Thai, see ``text_utils.split_words``) under the first rule
that matched. Blank lines are kept as paragraph breaks, but runs of blank lines left behind by
removals are collapsed to one. If removed words / all words of the
document > ``max_removed_fraction`` (0.05) the document is rejected as
``line_corrections:too_many_removed``; otherwise its ``text`` is replaced by the corrected text.

Columns: ``lc_removed_<rule>`` (int32 words removed by each rule; 0 when the rule is off),
``lc_removed_words`` (int32) and ``lc_removed_fraction`` (float32).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, ParamError, Rule, register
from pipeline.stages.text_utils import has_no_space_script, split_words

# --- call-to-action fragments ------------------------------------------------------------------

# Call-to-action phrases (literal, case-insensitive, whole words; any count may precede them, as
# in "0 items in cart"). Kept to navigation, sharing and e-commerce buttons that are never
# content on their own.
CALL_TO_ACTION_PHRASES = (
    "read more", "read full article", "read the full article", "read full story", "read the full story",
    "read full post", "read article", "read post", "read story", "continue reading", "keep reading",
    "click here", "learn more", "see more", "show more", "view more", "load more", "see all", "view all",
    "show all", "show less", "see details", "view details", "more info", "more information",
    "sign in", "sign up", "sign out", "log in", "login", "log out", "logout", "register",
    "create account", "create an account", "my account", "forgot password", "forgot your password",
    "subscribe", "subscribe now", "subscribe today", "subscribe to our newsletter",
    "share", "share this", "share this article", "share this post", "share this page", "share this story",
    "share it", "tweet", "tweet this", "pin it", "email this", "email this article", "print this",
    "print this page", "print this article",
    "share on facebook", "share on twitter", "share on linkedin", "share on pinterest", "share on whatsapp",
    "share on reddit", "like us on facebook", "follow us on facebook", "follow us on twitter",
    "follow us on instagram", "follow us on linkedin", "follow us on youtube", "follow us on pinterest",
    "add to cart", "add to basket", "add to bag", "add to wishlist", "add to wish list", "add to favorites",
    "add to favourites", "add to compare", "buy now", "shop now", "order now", "view cart", "my cart",
    "your cart", "shopping cart", "view basket", "shopping bag", "checkout",
    "item in cart", "items in cart", "item in your cart", "items in your cart", "items in your shopping cart",
    "item in basket", "items in basket", "items in your basket", "items in bag", "items in your bag",
    "your cart is empty", "your shopping cart is empty", "your basket is empty",
    "back to top", "skip to content", "skip to main content", "skip to navigation",
    "leave a comment", "leave a reply", "post a reply", "reply", "accept cookies", "accept all cookies",
    "allow cookies", "download now", "watch now", "previous post", "next post", "previous article",
    "next article", "previous page", "next page", "previous story", "next story",
)
_CTA = (
    r"(?:you have\s+)?(?:\d+\s+)?(?:"
    + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in sorted(CALL_TO_ACTION_PHRASES, key=len, reverse=True))
    + r")\b"
)
# Cheap guards before the regexes (supersets: a line that passes still goes through the regex):
# a leading fragment starts with one of these words (or a count), a trailing one ends with one.
_CTA_FIRST_WORDS = tuple(sorted({p.split()[0] for p in CALL_TO_ACTION_PHRASES} | {"you"}))
_CTA_LAST_WORDS = tuple(sorted({p.split()[-1] for p in CALL_TO_ACTION_PHRASES}))
_CTA_TAIL_CHARS = " .…»›>→!"
_CTA_TAIL = f"[\\s{re.escape(_CTA_TAIL_CHARS.strip())}]*"  # "Read more...", "Read More »", "Continue reading →"
# Separators between navigation items. No ":" ("Email: x@y.z" is content, not a button).
_SEP = r"\s*[|•·»›«‹>→/–—-]+\s*"
_LEADING_CTA_RE = re.compile(rf"^\s*{_CTA}{_CTA_TAIL}(?:{_SEP}|$)", re.IGNORECASE)
_TRAILING_CTA_RE = re.compile(rf"(?:^|(?<=[.!?…\"')\]])|{_SEP})\s*{_CTA}{_CTA_TAIL}$", re.IGNORECASE)
# A trailing fragment is short: only the end of a long line is searched.
_TRAILING_WINDOW = 120


def strip_call_to_action(line: str) -> Tuple[str, int]:
    """(line without leading/trailing call-to-action fragments, number of words removed)."""
    removed = 0
    while line:
        head = line[:32].lstrip().lower()
        if not (head.startswith(_CTA_FIRST_WORDS) or head[:1].isdigit()):
            break
        m = _LEADING_CTA_RE.search(line)
        if not m or m.end() == 0:
            break
        removed += len(m.group(0).split())
        line = line[m.end() :]
    while line:
        if not line[-48:].lower().rstrip(_CTA_TAIL_CHARS).endswith(_CTA_LAST_WORDS):
            break
        m = _TRAILING_CTA_RE.search(line, max(0, len(line) - _TRAILING_WINDOW))
        if not m or m.start() == len(line):
            break
        removed += len(m.group(0).split())
        line = line[: m.start()].rstrip()
    return line.strip(), removed


# --- whole-line rules --------------------------------------------------------------------------

_COUNTER_LABELS = (
    r"(?:likes?|shares?|comments?|views?|retweets?|reposts?|tweets?|followers?|following|"
    r"subscribers?|repl(?:y|ies)|reactions?|votes?|upvotes?|favou?rites?|faves?|pins?|reblogs?|notes?|"
    r"claps?|hearts?|plays?|downloads?|answers?|responses?)"
)
# Written so that a line splits into counters and separators in one way only: a number takes all of
# its ",234"/".5" groups, a "+" or ")" after it, and the white space before them; a separator is
# non-empty unless a ")" or "+" ended the counter before it. With two ways per counter (the earlier
# pattern let "\s*" or "[\W_]+" take the same spaces) a failing match backtracks exponentially:
# "3 likes " * 30 + "!x" took hours.
_COUNT = r"\d+(?:[.,]\d+)*(?![.,]\d)(?:\s*[kKmMbB])?(?:\s*\+|(?!\s*\+))"
_ONE_COUNTER = (
    rf"(?:{_COUNT}\s*{_COUNTER_LABELS}"
    rf"|{_COUNTER_LABELS}\s*(?::\s*)?\(?{_COUNT}(?:\s*\)|(?!\s*\))))"
)
_COUNTER_SEP = r"(?:(?<=[)+])[\W_]*|(?<![)+])[\W_]+)"
_COUNTER_LINE_RE = re.compile(
    rf"^[\W_]*{_ONE_COUNTER}(?:{_COUNTER_SEP}{_ONE_COUNTER})*[\W_]*$", re.IGNORECASE
)
_LETTER_RE = re.compile(r"[^\W\d_]")
_DIGIT_RE = re.compile(r"\d")
_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LOWER = bytes(range(ord("a"), ord("z") + 1))
_ASCII_LETTERS = _ASCII_UPPER + _ASCII_LOWER


def is_counter_line(line: str) -> bool:
    """True for lines made only of social-media counters ("3 likes", "1.2K shares", "Likes: 3")."""
    return _COUNTER_LINE_RE.match(line) is not None


def is_numeric_line(line: str) -> bool:
    """True for lines with at least one digit and no letter (numbers, dates, prices, phones)."""
    return _LETTER_RE.search(line) is None and _DIGIT_RE.search(line) is not None


def uppercase_letter_fraction(line: str) -> float:
    """Upper-case letters / letters of ``line`` (0.0 when it has no letters)."""
    if line.isascii():
        b = line.encode("ascii")
        letters = len(b) - len(b.translate(None, _ASCII_LETTERS))
        if not letters:
            return 0.0
        upper = len(b) - len(b.translate(None, _ASCII_UPPER))
        return upper / letters
    letters = sum(map(str.isalpha, line))
    if not letters:
        return 0.0
    return sum(map(str.isupper, line)) / letters


def is_mostly_uppercase(line: str, limit: float) -> bool:
    """True when more than ``limit`` of the line's letters are upper case. Shortcut for text in
    Latin script: with L ASCII lower-case letters among n characters, the upper-case fraction is
    at most 1 - L/n, so most lines are decided without looking at every character."""
    b = line.encode("ascii", "ignore") if not line.isascii() else line.encode("ascii")
    lower = len(b) - len(b.translate(None, _ASCII_LOWER))
    if 1.0 - lower / len(line) <= limit:
        return False
    return uppercase_letter_fraction(line) > limit


def is_single_word_line(line: str) -> bool:
    """True when the line is exactly one word (one whitespace token; a run of Chinese, Japanese or
    Thai characters without spaces is several words, see ``text_utils``)."""
    return len(line.split(maxsplit=1)) == 1 and not has_no_space_script(line)


RULES = ("call_to_action", "counter", "numeric", "uppercase", "single_word")


def correct_lines(text: str, params: "LineCorrectionsParams") -> Tuple[str, Dict[str, int], int]:
    """(corrected text, words removed per rule, words in the original text).

    Applies the rule functions above in order; cheap exact guards skip calls that cannot match
    (counter and numeric lines contain a digit; a single-word line contains no space)."""
    enabled = set(params.rules)
    removed = {r: 0 for r in RULES}
    do_cta = "call_to_action" in enabled
    do_counter = "counter" in enabled
    do_numeric = "numeric" in enabled
    do_upper = "uppercase" in enabled
    do_single = "single_word" in enabled
    limit = params.uppercase_fraction
    # Text without Chinese/Japanese/Thai: words are whitespace tokens (the fast path).
    spaced = not has_no_space_script(text)
    count_words = (lambda s: len(s.split())) if spaced else (lambda s: len(split_words(s)))
    digit = _DIGIT_RE.search

    total_words = 0
    out: List[str] = []
    prev_blank = True  # drop leading blank lines
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            if not prev_blank:
                out.append("")
                prev_blank = True
            continue
        n_words = count_words(line)
        total_words += n_words
        if do_cta:
            line, cta_words = strip_call_to_action(line)
            if cta_words:
                # words before minus words after: a fragment glued to a word ("Share|Tweet") is not
                # counted twice, so a line never loses more words than it had
                left = count_words(line) if line else 0
                removed["call_to_action"] += n_words - left
                if not line:
                    continue
                n_words = left
        has_digit = digit(line) is not None
        if do_counter and has_digit and is_counter_line(line):
            rule = "counter"
        elif do_numeric and has_digit and is_numeric_line(line):
            rule = "numeric"
        elif do_upper and is_mostly_uppercase(line, limit):
            rule = "uppercase"
        elif do_single and " " not in line and "\t" not in line and is_single_word_line(line):
            rule = "single_word"
        else:
            out.append(line)
            prev_blank = False
            continue
        removed[rule] += n_words
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out), removed, total_words


@register
class LineCorrections(DocumentStage):
    """Remove boilerplate lines/fragments; reject documents that lost too many words."""

    name = "line_corrections"
    rules = (
        Rule("too_many_removed", "lc_removed_fraction", pa.float32(), "<=",
             Param("max_removed_fraction", 0.05, lo=0.0, hi=1.0)),
    )
    parameters = (
        Param("uppercase_fraction", 0.5, lo=0.0, hi=1.0),
        Param("rules", RULES, kind="any", type=Sequence[str]),
    )
    signal_columns = {**{f"lc_removed_{r}": pa.int32() for r in RULES}, "lc_removed_words": pa.int32()}

    @staticmethod
    def validate_params(params) -> None:
        if isinstance(params.rules, str):
            raise ParamError(f"stage 'line_corrections': 'rules' must be a list of rule names, got {params.rules!r}")
        unknown = [r for r in params.rules if r not in RULES]
        if unknown:
            raise ParamError(f"stage 'line_corrections': unknown rules {unknown}; known: {list(RULES)}")

    def process(self, doc) -> Optional[str]:
        text = doc.get("text") or ""
        corrected, removed, total = correct_lines(text, self.params)
        n_removed = sum(removed.values())
        fraction = n_removed / total if total else 0.0
        for rule, count in removed.items():
            doc[f"lc_removed_{rule}"] = count
        doc["lc_removed_words"] = n_removed
        doc["lc_removed_fraction"] = fraction
        why = self.check(doc)
        if why:
            return why
        doc["text"] = corrected
        return None


LineCorrectionsParams = LineCorrections.Params
