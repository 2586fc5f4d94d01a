"""English word tokens as datatrove 0.10 counts them (its Gopher filters' ``convention: datatrove``).

datatrove splits English text into words with spaCy's blank English tokenizer and drops the
white-space tokens. This module reproduces that tokenizer's decisions without depending on spaCy,
written from its documented algorithm and checked against it token by token
(``bench/bench_gopher_agreement.py --tokens``):

1. the text is split on white space (any ``str.isspace`` character);
2. each chunk is peeled from both ends, repeatedly: a *prefix* (one opening mark: brackets,
   quotes, ``# * & _ § % = — –``, currency signs, symbols of Unicode category So, a ``+`` not
   before a digit, a run of two or more dots) and a *suffix* (one closing mark, ``'s``/``’s``, a run
   of dots, a unit or currency after a digit (``10km`` -> ``10 km``), a ``.`` after a lower-case
   letter, a digit, ``%``, a mark or two upper-case letters; so ``Smith.`` -> ``Smith .`` but
   ``U.S.`` and ``A.`` stay whole), stopping early when what remains is a *special case*;
3. what is left is split at *infixes*: runs of dots, ``…``, symbols, ``+ - * ^`` between digits,
   ``.`` between a lower-case and an upper-case letter, ``,`` between letters, hyphens
   (``- – — -- --- —— ~``) between letters (``well-known`` -> ``well - known``), and ``: < > = /``
   between a letter or digit and a letter; URLs (``http://...``, ``www....``, ``host.tld/...``)
   stay whole;
4. special cases are English contractions (``don't`` -> ``do n't``, ``I'm`` -> ``I 'm``,
   ``cannot`` -> ``can not``, also without the apostrophe: ``dont`` -> ``do nt``), abbreviations
   whose final period stays (``Mr.``, ``e.g.``, ``Jan.``, ``Calif.``, ``a.``), clock times
   (``5pm`` -> ``5 pm``) and a few emoticons.

So punctuation marks are tokens of their own (``"Yes," he said.`` has 6 tokens), which is what
moves datatrove's alphabetic-word fraction, word counts and n-grams away from a white-space split.
Measured against spaCy 3.8 (``bench/bench_gopher_agreement.py --tokens``): identical tokens on 736 of
737 and 887 of 888 English web pages (the two corpora of the README); the differences left are runs of
several apostrophes. Special cases spaCy has for other phrasings (rare contractions, more emoticons)
are not all listed; the decisions such differences could move are in the benchmark's tables.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Dict, List, Tuple

# --- character classes ---------------------------------------------------------------------

_OPEN_CLOSE_MARKS = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_CURRENCY_SIGNS = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_CURRENCY = tuple(_CURRENCY_SIGNS) + ("US$", "C$", "A$")
PREFIX_CHARS = frozenset(_OPEN_CLOSE_MARKS + _QUOTES + _CURRENCY_SIGNS + "§%=—–")
SUFFIX_CHARS = frozenset(_OPEN_CLOSE_MARKS + _QUOTES + "—–")
_PERIOD_AFTER = frozenset("0123456789%²-+|" + _OPEN_CLOSE_MARKS + _QUOTES)
QUOTE_CHARS = frozenset(_QUOTES)
_UNITS = tuple(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h "
    "kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %".split()
)
_HYPHENS = ("-", "–", "—", "--", "---", "——", "~")
_DIGITS = frozenset("0123456789")
_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
_URL_RE = re.compile(
    r"(?:[\w+\-.]{2,}://)?"  # optional scheme
    r"(?:\S+(?::\S*)?@)?"  # optional user (mailto:x@, user:pass@)
    r"(?:(?:\d{1,3}\.){3}\d{1,3}|"  # an IPv4 address, or
    rf"(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_\-]{{0,62}})?[{_HOST_CHAR}]\.)+"  # host labels
    r"[a-z\u00df-\u00f6\u00f8-\u00ff]{2,63})"  # and a lower-case top-level domain ("lower.Upper" is two words)
    r"(?::\d{2,5})?(?:[/?#]\S*)?"  # port, path
)


def _is_symbol(c: str) -> bool:
    """Unicode "other symbol" (emoji, dingbats, ©, °, ...)."""
    return not c.isascii() and unicodedata.category(c) == "So"


def _is_alpha(c: str) -> bool:
    return c.isalpha()


def _is_lower(c: str) -> bool:
    """Lower-case, or a letter of a script without case (kana, Han, Hangul, ...: both lower and upper)."""
    return c.isalpha() and not c.isupper()


def _is_upper(c: str) -> bool:
    return c.isalpha() and not c.islower()


# --- special cases -------------------------------------------------------------------------


def _cases(word: str) -> Tuple[str, ...]:
    return (word, word[:1].upper() + word[1:])


def _special_cases() -> Dict[str, Tuple[str, ...]]:
    """{chunk: its tokens} for English contractions, abbreviations, clock times and emoticons."""
    out: Dict[str, Tuple[str, ...]] = {}

    def add(tokens: Tuple[str, ...], titled: bool = True) -> None:
        variants = [tokens]
        if titled:
            variants.append((tokens[0][:1].upper() + tokens[0][1:],) + tokens[1:])
        for toks in variants:
            out["".join(toks)] = toks

    # negations: do n't, ca n't (+ 've after modals), with ', ’ or no apostrophe
    negated = {"do": 1, "does": 1, "did": 1, "is": 0, "are": 0, "was": 0, "were": 0, "has": 0, "have": 0,
               "had": 1, "could": 1, "would": 1, "should": 1, "might": 1, "must": 1, "need": 1, "dare": 0,
               "ought": 1, "may": 1, "ca": 1, "wo": 1, "sha": 1, "ai": 0}
    for verb, takes_have in negated.items():
        for ap in ("'", "’", ""):
            add((verb, f"n{ap}t"))
            if takes_have:
                add((verb, f"n{ap}t", f"{ap}ve"))
    # subject + verb: I 'm, they 're, we 'd 've ... ("'s" is a suffix anyway). With no apostrophe
    # only where the joined form is not an English word ("hell", "well", "its", "shed" are not split).
    full = ("d", "ll", "re", "ve", "d've", "ll've")
    three = ("d", "ll", "d've", "ll've")
    subjects = {
        "i": (("m", "ve", "ll", "d", "ll've", "d've"), ("m", "ve", "d", "ll've", "d've")),
        "you": (full, full),
        "he": (three, ("d", "d've", "ll've", "s")),
        "she": (three, ("d've", "ll've", "s")),
        "it": (three, three),
        "we": (full, ("d", "ve", "d've", "ll've")),
        "they": (full, full),
        "that": (three, three + ("s",)),
        "this": (three, three + ("s",)),
        **{w: (full, full) for w in ("these", "those")},
        **{w: (full, full + ("s",)) for w in ("there", "what", "how", "where", "when", "why")},
        "who": (full, ("d", "ll", "ve", "d've", "ll've", "s")),  # "whore" is a word
    }
    for subject, (with_apostrophe, without) in subjects.items():
        forms = ("i", "I") if subject == "i" else _cases(subject)
        for form in forms:
            for ap in ("'", "’"):
                for ending in with_apostrophe:
                    parts = tuple(f"{ap}{e}" for e in ending.split("'"))
                    out[form + "".join(parts)] = (form,) + parts
            for ending in without:
                parts = tuple(ending.split("'"))
                out[form + "".join(parts)] = (form,) + parts
    for joined, tokens in (("cannot", ("can", "not")), ("gonna", ("gon", "na")), ("gotta", ("got", "ta"))):
        add(tokens)
    for modal in ("could", "would", "should", "might", "must"):
        for ap in ("'", "’"):
            add((modal, f"{ap}ve"))
    for ap in ("'", "’"):
        add((f"c{ap}m", "on"))
    out["y'all"] = ("y'", "all")
    out["yall"] = ("y", "all")
    # words that keep their apostrophe
    for ap in ("'", "’"):
        for word in (f"{ap}em", f"{ap}cause", f"{ap}Cause", f"{ap}nuff", "w/o"):
            out[word] = (word,)
        for word in ("ma", "o", "ol", "nothin", "somethin", "doin", "goin", "lovin", "havin"):
            for form in _cases(word):
                joined = f"{form}{ap}am" if word == "ma" else f"{form}{ap}clock" if word == "o" else form + ap
                out[joined] = (joined,)
    for unit in "CFKcfk":  # "°C." is three tokens even though a period after one capital stays attached
        out[f"°{unit}."] = ("°", unit, ".")
    for token in ("'s", "'S", "’s", "’S", "'re", "’re", "'ll", "’ll", "'d", "’d", "n't", "n’t", "''", "’’"):
        out[token] = (token,)
    # abbreviations whose final period stays (only those the period rule would otherwise split)
    abbreviations = (
        "Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. Dec. Del. Dr. E.g. Feb. Fla. "
        "Ga. Gen. Gov. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. "
        "Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Prof. "
        "Rep. Rev. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. a.m. p.m. co. e.g. i.e. vs. v.s. ä. ö. ü. Ph.D. and/or"
    ).split() + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]
    for abbreviation in abbreviations:
        out[abbreviation] = (abbreviation,)
    for hour in range(1, 13):
        for suffix in ("am", "pm", "a.m.", "p.m."):
            out[f"{hour}{suffix}"] = (str(hour), suffix)
    for emoticon in EMOTICONS:
        out[emoticon] = (emoticon,)
    return out


# Emoticons and quote pairs ("(see below):" ends in the token "):").
EMOTICONS = frozenset(
    ":) :-) :)) :( :-( :(( ;) ;-) :/ :-/ :| :-| :] :-] :} :> :-> :3 :0 :1 :* :-* :P :p :D "
    "): )-: (: (-: (; (-; (= =( =) =/ =| =[ =] ]= [= [: [-: <3 </3 ^_^ -_- :'( :') 8) 8-) ;D '' ’’".split()
)
_MAX_JOIN = 4


SPECIAL_CASES = _special_cases()
# Special cases that hold an affix character ("Mr.", "e.g.", ":)", "'em", "°C."): spaCy's special-case
# matcher applies them again when the affix rules cut them apart ("(D-Minn.)," -> "( D - Minn. ) ,")
# ("°c." wins over "c." in "19.44°c.": the longest special case at a position is taken).
JOINABLE = frozenset(k for k in SPECIAL_CASES if not k.isalpha())


# --- affixes -------------------------------------------------------------------------------


def prefix_length(s: str) -> int:
    """Length of the prefix at the start of ``s`` (0: none)."""
    c = s[0]
    if c in PREFIX_CHARS:
        return 1
    if c == "+":
        return 0 if len(s) > 1 and s[1] in _DIGITS else 1
    if c == "." and s[1:2] == ".":
        return len(s) - len(s.lstrip("."))
    if s.startswith(("US$", "C$", "A$")):
        return 3 if s[0] == "U" else 2
    if _is_symbol(c):
        return 1
    return 0


def suffix_length(s: str) -> int:
    """Length of the suffix at the end of ``s`` (0: none): the leftmost start among the rules."""
    n = len(s)
    best = n
    last = s[-1]
    if last in SUFFIX_CHARS or _is_symbol(last):
        best = n - 1
    if last == "." and n >= 2 and s[-2] == ".":
        best = min(best, n - (n - len(s.rstrip("."))))
    if n >= 2 and s[-2] in "'’" and last in "sS":
        best = min(best, n - 2)
    if last == "+" and n >= 2 and s[-2] in _DIGITS:
        best = min(best, n - 1)
    if last == "." and n >= 2:
        before = s[-2]
        if before in _PERIOD_AFTER or _is_lower(before) or (n >= 3 and _is_upper(before) and _is_upper(s[-3])):
            best = min(best, n - 1)
        elif n >= 3 and s[-3] == "°" and before in "FfCcKk":
            best = min(best, n - 1)
    if s[-1] not in _DIGITS and any(ch in _DIGITS for ch in s):
        for unit in _UNITS + _CURRENCY:
            k = len(unit)
            if n > k and s.endswith(unit) and s[-k - 1] in _DIGITS:
                best = min(best, n - k)
    return n - best


# --- infixes -------------------------------------------------------------------------------


def _infix_at(s: str, i: int) -> int:
    """Length of an infix starting at ``s[i]`` (0: none)."""
    c = s[i]
    n = len(s)
    prev = s[i - 1] if i else ""
    nxt = s[i + 1] if i + 1 < n else ""
    if c == "." and nxt == ".":
        return len(s[i:]) - len(s[i:].lstrip("."))
    if c == "…" or _is_symbol(c):
        return 1
    if c in "+-*^" and prev in _DIGITS and (nxt in _DIGITS or nxt == "-") and prev:
        return 1
    if c == "." and prev and nxt and (_is_lower(prev) or prev in QUOTE_CHARS) and (_is_upper(nxt) or nxt in QUOTE_CHARS):
        return 1
    if c == "," and prev and nxt and _is_alpha(prev) and _is_alpha(nxt):
        return 1
    if c in "-–—~" and prev and (_is_alpha(prev) or prev in _DIGITS):
        for h in _HYPHENS:
            k = len(h)
            if s.startswith(h, i) and i + k < n and _is_alpha(s[i + k]):
                return k
    if c in ":<>=/" and prev and nxt and (_is_alpha(prev) or prev in _DIGITS) and _is_alpha(nxt):
        return 1
    return 0


def split_infixes(s: str, out: List[str]) -> None:
    """Append the pieces of ``s`` split at its infixes to ``out``."""
    start = i = 0
    n = len(s)
    while i < n:
        k = _infix_at(s, i) if i or s[i] in "….:" or _is_symbol(s[i]) else 0
        if k:
            if i > start:
                out.append(s[start:i])
            out.append(s[i : i + k])
            i += k
            start = i
        else:
            i += 1
    if start < n:
        out.append(s[start:])


# --- the tokenizer -------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def tokenize_chunk(chunk: str) -> Tuple[str, ...]:
    """Tokens of one white-space-free chunk (cached: web text repeats its chunks)."""
    special = SPECIAL_CASES.get(chunk)
    if special is not None:
        return special
    prefixes: List[str] = []
    suffixes: List[str] = []
    s = chunk
    last_size = -1
    while s and len(s) != last_size:
        if s in SPECIAL_CASES:
            break
        last_size = len(s)
        pre = prefix_length(s)
        if pre:
            rest = s[pre:]
            if rest and rest in SPECIAL_CASES:
                prefixes.append(s[:pre])
                s = rest
                break
        suf = suffix_length(s[pre:]) if len(s) > pre else 0
        if suf:
            rest = s[:-suf]
            if rest and rest in SPECIAL_CASES:
                suffixes.append(s[-suf:])
                s = rest
                break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
        if s in SPECIAL_CASES:
            break
    out = prefixes
    kept = (len(out), len(out))  # tokens of a special case: never joined again
    if s:
        special = SPECIAL_CASES.get(s)
        if special is not None:
            out.extend(special)
            kept = (kept[0], len(out))
        elif _URL_RE.fullmatch(s):
            out.append(s)
        else:
            split_infixes(s, out)
    out.extend(reversed(suffixes))
    if len(out) > 1:
        out = _join_specials(out, kept)
    return tuple(out)


def _join_specials(tokens: List[str], kept: Tuple[int, int] = (0, 0)) -> List[str]:
    """Adjacent tokens that together spell a special case become its tokens (except the tokens
    ``kept[0]:kept[1]``, which a special case produced already)."""
    out: List[str] = []
    i, n = 0, len(tokens)
    lo, hi = kept
    while i < n:
        for k in range(min(_MAX_JOIN, n - i), 1, -1):
            joined = "".join(tokens[i : i + k])
            if (lo == hi or i + k <= lo or i >= hi) and joined in JOINABLE:
                out.extend(SPECIAL_CASES[joined])
                i += k
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _plain(chunk: str) -> bool:
    """A chunk of letters only (or digits only) is one token unless it is a special case."""
    return (chunk.isalpha() or (chunk.isascii() and chunk.isdigit())) and chunk not in SPECIAL_CASES


def en_words(text: str) -> List[str]:
    """datatrove's English word tokens of ``text`` (see the module docstring)."""
    out: List[str] = []
    append, extend = out.append, out.extend
    for chunk in text.split():
        if _plain(chunk):
            append(chunk)
        else:
            extend(tokenize_chunk(chunk))
    return out
