"""Gopher document-wise quality filters (Rae et al. 2021, appendix A.1.1), as used by RefinedWeb's MDR.

Keep a document only when (defaults, all parameters):

- ``min_words`` <= words <= ``max_words`` (50 .. 100,000);
- mean word length in [``min_mean_word_length``, ``max_mean_word_length``] ([3, 10]);
- symbol-to-word ratio <= ``max_symbol_word_ratio`` (0.1);
- at most ``max_bullet_lines_frac`` (0.9) of the lines start with a bullet;
- at most ``max_ellipsis_lines_frac`` (0.3) of the lines end with an ellipsis (``...`` or ``…``);
- at least ``min_alpha_words_frac`` (0.8) of the tokens contain an alphabetic character;
- at least ``min_stop_words`` (2) stop words of {the, be, to, of, and, that, have, with}.

The paper defines each signal in one sentence; ``convention`` chooses how they are read (the README's
"Gopher signals: two readings" gives the paper's sentences and both readings side by side):

``convention: paper`` (default). *Tokens* are ``text_utils.split_words`` (whitespace, character-based
for Chinese, Japanese, Thai: see that module). *Words* are the tokens that are not made only of
punctuation (``"-"``, ``"|"``, ``"…"`` are tokens but not words); a word's length excludes
leading/trailing punctuation. Symbols are the occurrences of ``#``, ``...`` and ``…`` in the text
(``....`` counts once), all three together, over the words. The alphabetic-token fraction is taken
over all tokens, so documents made of separators and numbers fail it. *Lines* are the non-empty
stripped lines; bullets are ``BULLETS`` (22 marks). Stop words are counted as occurrences
(case-insensitive, edge punctuation ignored), as Dolma counts them. For scripts without spaces,
tokens are single characters, so the mean word length is ~1 and the English stop-word rule cannot
pass: these rules are English rules and belong after English language ID, as in RefinedWeb.

``convention: datatrove`` (datatrove 0.10's ``GopherQualityFilter``, which FineWeb used). Tokens
are ``en_words`` (spaCy's English tokenizer, reproduced: punctuation marks are tokens of their own,
``don't`` is ``do n't``); words are the tokens with a character outside ``DATATROVE_PUNCTUATION``,
their full length counts. The symbol ratio is the larger of ``#`` and ``...``/``…`` counts ("for
either the hash symbol or the ellipsis") over *all* tokens, punctuation included; so is the
alphabetic fraction. Lines are ``str.splitlines()`` (empty lines count in the denominator),
bullets only ``•`` and ``-`` after leading white space. Stop words: how many *distinct* stop words
occur as exact, case-sensitive tokens ("at least two of the following words"; ``The`` is not
``the``). A text without words has a mean word length of 0 here (datatrove: NaN, which passes the
length rules; either way ``min_words`` rejects it first).

Every signal is recorded as a column (also on rejected documents), in the convention's reading.
"""

from __future__ import annotations

import itertools
import string
import operator
import re
from operator import methodcaller

import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, Rule, register
from pipeline.stages.en_words import en_words
from pipeline.stages.gopher_repetition import CONVENTIONS
from pipeline.stages.text_utils import PUNCTUATION, split_lines, split_words

DEFAULT_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

# Characters that start a bulleted line.
BULLETS = ("-", "*", "•", "‣", "⁃", "◦", "●", "○", "▪", "▫", "■", "□", "◆", "◇", "►", "▶", "➢", "➤", "→", "·", "–", "—")

_ALPHA_RE = re.compile(r"[^\W\d_]")  # any letter (Unicode-aware)


def quality_signals(text: str, stop_words: frozenset) -> dict:
    """All Gopher quality signals of ``text``, keyed by column name."""
    tokens = split_words(text)
    n_tokens = len(tokens)
    # Per-token work stays in C (map/compress/filter) for the common case of purely alphabetic
    # tokens; only the others ("word,", "2019", "it's") are stripped of edge punctuation and
    # searched for a letter.
    is_alpha = list(map(str.isalpha, tokens))
    pure = list(itertools.compress(tokens, is_alpha))
    rest = list(itertools.compress(tokens, map(operator.not_, is_alpha)))
    rest_words = list(filter(None, map(str.strip, rest, itertools.repeat(PUNCTUATION, len(rest)))))
    n_words = len(pure) + len(rest_words)
    word_chars = sum(map(len, pure)) + sum(map(len, rest_words))
    is_stop = stop_words.__contains__
    n_stop = sum(map(is_stop, map(str.lower, pure))) + sum(map(is_stop, map(str.lower, rest_words)))
    search = _ALPHA_RE.search
    alpha_tokens = len(pure) + sum(1 for t in rest if search(t))

    lines = split_lines(text)
    n_lines = len(lines)
    bullets = sum(map(methodcaller("startswith", BULLETS), lines))
    ellipses = sum(map(methodcaller("endswith", ("...", "…")), lines))
    symbols = text.count("#") + text.count("...") + text.count("…")
    return {
        "gopher_words": n_words,
        "gopher_mean_word_length": word_chars / n_words if n_words else 0.0,
        "gopher_symbol_word_ratio": symbols / n_words if n_words else float(symbols > 0),
        "gopher_bullet_lines_frac": bullets / n_lines if n_lines else 0.0,
        "gopher_ellipsis_lines_frac": ellipses / n_lines if n_lines else 0.0,
        "gopher_alpha_words_frac": alpha_tokens / n_tokens if n_tokens else 0.0,
        "gopher_stop_words": n_stop,
    }


# datatrove's "symbol" characters: a token made only of these is not a word. ASCII punctuation, the
# typographic marks below, C0/C1 control characters except tab and newline, and sentence-final marks
# of other scripts (only those of scripts near English are listed: the convention is for English).
DATATROVE_PUNCTUATION = frozenset(
    string.punctuation
    + "—–”“„’´«»…►━、。，．：；？！～（）【】「」《》〈〉∶％１"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
    + "⁈⁉﹗"
)
DATATROVE_BULLETS = ("•", "-")


def quality_signals_datatrove(text: str, stop_words: frozenset) -> dict:
    """The Gopher quality signals as datatrove 0.10's ``GopherQualityFilter`` computes them
    (module docstring, "convention: datatrove"), keyed by column name."""
    tokens = en_words(text)
    n_tokens = len(tokens)
    symbol_chars = DATATROVE_PUNCTUATION.issuperset
    words = [t for t in tokens if not symbol_chars(t)]
    n_words = len(words)
    alpha_tokens = sum(1 for t in tokens if t.isalpha() or any(map(str.isalpha, t)))
    symbols = max(text.count("#"), text.count("...") + text.count("…"))
    lines = text.splitlines()
    n_lines = len(lines)
    bullets = sum(1 for line in lines if line.lstrip().startswith(DATATROVE_BULLETS))
    ellipses = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
    return {
        "gopher_words": n_words,
        "gopher_mean_word_length": sum(map(len, words)) / n_words if n_words else 0.0,
        "gopher_symbol_word_ratio": symbols / n_tokens if n_tokens else float(symbols > 0),
        "gopher_bullet_lines_frac": bullets / n_lines if n_lines else 0.0,
        "gopher_ellipsis_lines_frac": ellipses / n_lines if n_lines else 0.0,
        "gopher_alpha_words_frac": alpha_tokens / n_tokens if n_tokens else 0.0,
        "gopher_stop_words": len(stop_words.intersection(tokens)),
    }


# (rule, signal column, Arrow type, a kept document has `signal KEEP threshold`, threshold), checked in order
RULES = (
    Rule("min_words", "gopher_words", pa.int32(), ">=", Param("min_words", 50, lo=0)),
    Rule("max_words", "gopher_words", pa.int32(), "<=", Param("max_words", 100_000, lo="min_words")),
    Rule("min_mean_word_length", "gopher_mean_word_length", pa.float32(), ">=", Param("min_mean_word_length", 3.0, lo=0)),
    Rule("max_mean_word_length", "gopher_mean_word_length", pa.float32(), "<=",
         Param("max_mean_word_length", 10.0, lo="min_mean_word_length")),
    Rule("symbol_word_ratio", "gopher_symbol_word_ratio", pa.float32(), "<=", Param("max_symbol_word_ratio", 0.1, lo=0)),
    Rule("bullet_lines", "gopher_bullet_lines_frac", pa.float32(), "<=", Param("max_bullet_lines_frac", 0.9, lo=0, hi=1)),
    Rule("ellipsis_lines", "gopher_ellipsis_lines_frac", pa.float32(), "<=",
         Param("max_ellipsis_lines_frac", 0.3, lo=0, hi=1)),
    Rule("alpha_words", "gopher_alpha_words_frac", pa.float32(), ">=", Param("min_alpha_words_frac", 0.8, lo=0, hi=1)),
    Rule("stop_words", "gopher_stop_words", pa.int32(), ">=", Param("min_stop_words", 2, lo=0)),
)


@register
class GopherQuality(DocumentStage):
    """Reject documents failing Gopher's document-wise quality heuristics."""

    name = "gopher_quality"
    rules = RULES
    parameters = (
        Param("stop_words", DEFAULT_STOP_WORDS, kind="strings", what="non-empty words"),
        Param("convention", "paper", kind="choice", choices=CONVENTIONS),
    )

    def setup(self) -> None:
        if self.params.convention == "datatrove":  # exact, case-sensitive tokens
            self._stop_words = frozenset(self.params.stop_words)
            self._signals = quality_signals_datatrove
        else:
            self._stop_words = frozenset(w.lower() for w in self.params.stop_words)
            self._signals = quality_signals

    def measure(self, text: str) -> dict:
        if not hasattr(self, "_stop_words"):
            self.setup()
        return self._signals(text, self._stop_words)


GopherQualityParams = GopherQuality.Params
