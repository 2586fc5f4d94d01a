"""RefinedWeb's line-wise corrections: remove boilerplate lines and fragments, drop over-edited pages.

RefinedWeb (Penedo et al. 2023) removes "undesirable lines" left by extraction: social-media
counters, navigation buttons, mostly upper-case lines, numbers; and if more than 5% of a document's
words were removed, it drops the whole document. The paper does not give exact rules, so each rule
here is a named function that can be switched off (``rules`` parameter) and is tested on its own:

- ``call_to_action`` (a *fragment* rule, applied first): strips call-to-action fragments such as
  "Read more...", "Sign in", "Add to cart", "0 items in cart", "Share on Facebook" from the start
  or the end of a line. To leave prose intact a fragment is only stripped where it stands apart:
  at the line start when followed by a separator (``|``, ``•``, ``»``, ``:``, ...) or the line end;
  at the line end when preceded by a separator, by sentence punctuation (``. ! ? …``) or the line
  start. "Sign in to view your orders." is kept; "Posted in News | Read more »" loses "Read more ».
  A line left empty is removed (its words counted under this rule).
- ``counter`` : the line is only social-media counters ("3 likes", "1.2K shares", "15 comments",
  "Likes: 3", "12 Comments 4 Shares").
- ``numeric``: the line has digits and no letters ("2019", "12/03/2019 14:05", "+1 555 0100").
- ``uppercase``: more than ``uppercase_fraction`` (0.5) of the line's letters are upper case.
- ``single_word``: the line is a single token ("Home", "Menu", "Share").

Whole-line rules are checked in the order above; a removed line counts its words (whitespace
words, ``text_utils.split_words``) under the first rule that matched. Blank lines are kept as
paragraph breaks, but runs of
blank lines left behind by removals are collapsed to one. If removed words / all words of the
document > ``max_removed_fraction`` (0.05) the document is rejected as
``line_corrections:too_many_removed``; otherwise its ``text`` is replaced by the corrected text.

Columns: ``lc_removed_<rule>`` (int32 words removed by each rule; 0 when the rule is off),
``lc_removed_words`` (int32) and ``lc_removed_fraction`` (float32).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from pipeline.stages.base import DocumentStage, ParamError, check_range, register
from pipeline.stages.text_utils import has_no_space_script, split_words

# --- call-to-action fragments ------------------------------------------------------------------

# Phrases (regex fragments, matched case-insensitively as whole words). Kept to navigation and
# e-commerce buttons that are never content on their own.
CALL_TO_ACTION_PHRASES = [
    r"read (?:the )?(?:full )?(?:more|article|story|post)",
    r"continue reading",
    r"keep reading",
    r"click here(?: to [a-z]+)?",
    r"learn more",
    r"(?:see|show|view|load) (?:more|all|less|details)",
    r"more info(?:rmation)?",
    r"sign (?:in|up|out)",
    r"log ?(?:in|out)",
    r"register",
    r"create (?:an )?account",
    r"my account",
    r"forgot (?:your )?password\??",
    r"subscribe(?: now| today| to our newsletter)?",
    r"(?:share|tweet|pin)(?: (?:this|it)(?: (?:article|post|page|story))?)?",
    r"(?:email|print) (?:this|it)(?: (?:article|post|page|story))?",
    r"share on (?:facebook|twitter|linkedin|pinterest|whatsapp|reddit|email|x)",
    r"(?:like|follow) us on (?:facebook|twitter|instagram|linkedin|youtube|pinterest)",
    r"add to (?:cart|basket|bag|wish ?list|favou?rites|compare)",
    r"buy now",
    r"shop now",
    r"order now",
    r"(?:view|my|your|shopping) (?:cart|basket|bag)",
    r"checkout",
    r"(?:you have )?\d* ?items? in (?:your )?(?:shopping )?(?:cart|basket|bag)",
    r"your (?:shopping )?(?:cart|basket|bag) is empty",
    r"back to top",
    r"skip to (?:main )?(?:content|navigation)",
    r"leave a (?:comment|reply)",
    r"(?:post a )?reply",
    r"(?:accept|allow) (?:all )?cookies",
    r"download now",
    r"watch now",
    r"(?:previous|next) (?:post|article|page|story)",
]
_CTA = "(?:" + "|".join(CALL_TO_ACTION_PHRASES) + r")\b"
_CTA_TAIL = r"[\s.…»›>→!]*"  # "Read more...", "Read More »", "Continue reading →"
# Separators between navigation items. No ":" ("Email: x@y.z" is content, not a button).
_SEP = r"\s*[|•·»›«‹>→/–—-]+\s*"
_LEADING_CTA_RE = re.compile(rf"^\s*\b{_CTA}{_CTA_TAIL}(?:{_SEP}|$)", re.IGNORECASE)
_TRAILING_CTA_RE = re.compile(rf"(?:^|(?<=[.!?…\"')\]])|{_SEP})\s*{_CTA}{_CTA_TAIL}$", re.IGNORECASE)
# A trailing fragment is short: only the end of a long line is searched.
_TRAILING_WINDOW = 120


def strip_call_to_action(line: str) -> Tuple[str, int]:
    """(line without leading/trailing call-to-action fragments, number of words removed)."""
    removed = 0
    while True:
        m = _LEADING_CTA_RE.search(line)
        if not m or m.end() == 0:
            break
        removed += len(m.group(0).split())
        line = line[m.end() :]
    while line:
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
_COUNT = r"\d+(?:[.,]\d+)*\s*[kKmMbB]?\+?"
_ONE_COUNTER = rf"(?:{_COUNT}\s*{_COUNTER_LABELS}|{_COUNTER_LABELS}\s*:?\s*\(?{_COUNT}\)?)"
_COUNTER_LINE_RE = re.compile(rf"^[\W_]*{_ONE_COUNTER}(?:[\W_]+{_ONE_COUNTER})*[\W_]*$", re.IGNORECASE)
_LETTER_RE = re.compile(r"[^\W\d_]")
_DIGIT_RE = re.compile(r"\d")
_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LETTERS = _ASCII_UPPER + bytes(range(ord("a"), ord("z") + 1))


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
    letters = upper = 0
    for c in line:
        if c.isalpha():
            letters += 1
            if c.isupper():
                upper += 1
    return upper / letters if letters else 0.0


def is_single_word_line(line: str) -> bool:
    """True when the line is exactly one word (one whitespace token; a run of Chinese, Japanese or
    Thai characters without spaces is several words, see ``text_utils``)."""
    return len(line.split(maxsplit=1)) == 1 and not has_no_space_script(line)


RULES = ("call_to_action", "counter", "numeric", "uppercase", "single_word")


@dataclasses.dataclass
class LineCorrectionsParams:
    max_removed_fraction: float = 0.05
    uppercase_fraction: float = 0.5
    rules: Sequence[str] = RULES

    def validate(self) -> None:
        check_range("line_corrections", "max_removed_fraction", self.max_removed_fraction, 0.0, 1.0)
        check_range("line_corrections", "uppercase_fraction", self.uppercase_fraction, 0.0, 1.0)
        if isinstance(self.rules, str):
            raise ParamError(f"stage 'line_corrections': 'rules' must be a list of rule names, got {self.rules!r}")
        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ParamError(f"stage 'line_corrections': unknown rules {unknown}; known: {list(RULES)}")


def correct_lines(text: str, params: LineCorrectionsParams) -> Tuple[str, Dict[str, int], int]:
    """(corrected text, words removed per rule, words in the original text)."""
    enabled = set(params.rules)
    removed = {r: 0 for r in RULES}
    line_rules: List[Tuple[str, Callable[[str], bool]]] = []
    if "counter" in enabled:
        line_rules.append(("counter", is_counter_line))
    if "numeric" in enabled:
        line_rules.append(("numeric", is_numeric_line))
    if "uppercase" in enabled:
        limit = params.uppercase_fraction
        line_rules.append(("uppercase", lambda s: uppercase_letter_fraction(s) > limit))
    if "single_word" in enabled:
        line_rules.append(("single_word", is_single_word_line))
    strip_cta = "call_to_action" in enabled

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
        n_words = len(split_words(line))
        total_words += n_words
        if strip_cta:
            line, cta_words = strip_call_to_action(line)
            if cta_words:
                removed["call_to_action"] += cta_words
                if not line:
                    continue
                n_words = len(split_words(line))
        for rule, matches in line_rules:
            if matches(line):
                removed[rule] += n_words
                break
        else:
            out.append(line)
            prev_blank = False
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out), removed, total_words


@register
class LineCorrections(DocumentStage):
    """Remove boilerplate lines/fragments; reject documents that lost too many words."""

    name = "line_corrections"
    Params = LineCorrectionsParams
    columns = {
        **{f"lc_removed_{r}": pa.int32() for r in RULES},
        "lc_removed_words": pa.int32(),
        "lc_removed_fraction": pa.float32(),
    }

    def process(self, doc) -> Optional[str]:
        text = doc.get("text") or ""
        corrected, removed, total = correct_lines(text, self.params)
        n_removed = sum(removed.values())
        fraction = n_removed / total if total else 0.0
        for rule, count in removed.items():
            doc[f"lc_removed_{rule}"] = count
        doc["lc_removed_words"] = n_removed
        doc["lc_removed_fraction"] = fraction
        if fraction > self.params.max_removed_fraction:
            return "too_many_removed"
        doc["text"] = corrected
        return None
