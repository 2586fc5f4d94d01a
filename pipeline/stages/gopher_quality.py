"""Gopher document-wise quality filters (Rae et al. 2021), as used by RefinedWeb's MDR.

Keep a document only when (defaults, all parameters):

- ``min_words`` <= words <= ``max_words`` (50 .. 100,000);
- mean word length in [``min_mean_word_length``, ``max_mean_word_length``] ([3, 10]);
- symbol-to-word ratio <= ``max_symbol_word_ratio`` (0.1), symbols being ``#``, ``...`` and ``…``
  (occurrences in the text, ``....`` counts once);
- at most ``max_bullet_lines_frac`` (0.9) of the lines start with a bullet;
- at most ``max_ellipsis_lines_frac`` (0.3) of the lines end with an ellipsis (``...`` or ``…``);
- at least ``min_alpha_words_frac`` (0.8) of the tokens contain an alphabetic character;
- at least ``min_stop_words`` (2) occurrences of the stop words {the, be, to, of, and, that, have,
  with} (occurrences, as datatrove and Dolma count them; case-insensitive, edge punctuation ignored).

Definitions. *Tokens* are ``text_utils.split_words`` (whitespace, character-based for Chinese,
Japanese, Thai: see that module). *Words* are the tokens that are not made only of punctuation
(``"-"``, ``"|"``, ``"…"`` are tokens but not words); a word's length excludes leading/trailing
punctuation. The alphabetic-token fraction is taken over all tokens, so documents made of
separators and numbers fail it. *Lines* are the non-empty stripped lines. For scripts without
spaces, tokens are single characters, so the mean word length is ~1 and the English stop-word rule
cannot pass: these rules are English rules and belong after English language ID, as in RefinedWeb.

Every signal is recorded as a column (also on rejected documents).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import re
from operator import methodcaller
from typing import Optional, Sequence

import pyarrow as pa

from pipeline.stages.base import DocumentStage, ParamError, check_range, register
from pipeline.stages.text_utils import PUNCTUATION, split_lines, split_words

DEFAULT_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

# Characters that start a bulleted line.
BULLETS = ("-", "*", "•", "‣", "⁃", "◦", "●", "○", "▪", "▫", "■", "□", "◆", "◇", "►", "▶", "➢", "➤", "→", "·", "–", "—")

_ALPHA_RE = re.compile(r"[^\W\d_]")  # any letter (Unicode-aware)


@dataclasses.dataclass
class GopherQualityParams:
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_frac: float = 0.9
    max_ellipsis_lines_frac: float = 0.3
    min_alpha_words_frac: float = 0.8
    min_stop_words: int = 2
    stop_words: Sequence[str] = DEFAULT_STOP_WORDS

    def validate(self) -> None:
        s = "gopher_quality"
        check_range(s, "min_words", self.min_words, 0)
        check_range(s, "max_words", self.max_words, self.min_words)
        check_range(s, "min_mean_word_length", self.min_mean_word_length, 0)
        check_range(s, "max_mean_word_length", self.max_mean_word_length, self.min_mean_word_length)
        check_range(s, "max_symbol_word_ratio", self.max_symbol_word_ratio, 0)
        check_range(s, "max_bullet_lines_frac", self.max_bullet_lines_frac, 0, 1)
        check_range(s, "max_ellipsis_lines_frac", self.max_ellipsis_lines_frac, 0, 1)
        check_range(s, "min_alpha_words_frac", self.min_alpha_words_frac, 0, 1)
        check_range(s, "min_stop_words", self.min_stop_words, 0)
        if isinstance(self.stop_words, str) or not all(isinstance(w, str) and w for w in self.stop_words):
            raise ParamError(f"stage '{s}': 'stop_words' must be a list of non-empty words, got {self.stop_words!r}")


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


@register
class GopherQuality(DocumentStage):
    """Reject documents failing Gopher's document-wise quality heuristics."""

    name = "gopher_quality"
    Params = GopherQualityParams
    columns = {
        "gopher_words": pa.int32(),
        "gopher_mean_word_length": pa.float32(),
        "gopher_symbol_word_ratio": pa.float32(),
        "gopher_bullet_lines_frac": pa.float32(),
        "gopher_ellipsis_lines_frac": pa.float32(),
        "gopher_alpha_words_frac": pa.float32(),
        "gopher_stop_words": pa.int32(),
    }

    def setup(self) -> None:
        self._stop_words = frozenset(w.lower() for w in self.params.stop_words)

    def process(self, doc) -> Optional[str]:
        if not hasattr(self, "_stop_words"):
            self.setup()
        sig = quality_signals(doc.get("text") or "", self._stop_words)
        doc.update(sig)
        p = self.params
        if sig["gopher_words"] < p.min_words:
            return "min_words"
        if sig["gopher_words"] > p.max_words:
            return "max_words"
        if sig["gopher_mean_word_length"] < p.min_mean_word_length:
            return "min_mean_word_length"
        if sig["gopher_mean_word_length"] > p.max_mean_word_length:
            return "max_mean_word_length"
        if sig["gopher_symbol_word_ratio"] > p.max_symbol_word_ratio:
            return "symbol_word_ratio"
        if sig["gopher_bullet_lines_frac"] > p.max_bullet_lines_frac:
            return "bullet_lines"
        if sig["gopher_ellipsis_lines_frac"] > p.max_ellipsis_lines_frac:
            return "ellipsis_lines"
        if sig["gopher_alpha_words_frac"] < p.min_alpha_words_frac:
            return "alpha_words"
        if sig["gopher_stop_words"] < p.min_stop_words:
            return "stop_words"
        return None
