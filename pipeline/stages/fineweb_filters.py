"""FineWeb's three custom quality filters (Penedo et al. 2024, "The FineWeb Datasets", §3.5).

FineWeb removes a document when (its published thresholds and comparison directions):

- the fraction of lines ending with terminal punctuation is <= ``min_line_punct_ratio`` (0.12)
  -> ``fineweb_filters:line_punct_ratio``;
- the fraction of characters in duplicated lines is >= ``max_dup_line_char_frac`` (0.1)
  -> ``fineweb_filters:dup_line_char_frac``;
- the fraction of lines of at most ``short_line_length`` (30) characters is >=
  ``max_short_line_ratio`` (0.67) -> ``fineweb_filters:short_line_ratio``.

So a kept document has a punctuation ratio strictly above 0.12, a duplicated-character fraction
strictly below 0.1 and a short-line ratio strictly below 0.67.

Lines are the non-empty stripped lines (``text_utils.split_lines``): FineWeb's code counts the
empty strings between paragraphs as (short, unpunctuated) lines, which penalizes text that has
blank lines between paragraphs; here layout does not change the signals. Terminal punctuation is
``. ' " ! ?`` (FineWeb's set) plus the typographic closing quotes ``” ’`` and the ellipsis ``…``.
A duplicated line is an occurrence of a line seen earlier in the document; its characters are
divided by the characters of all lines.

Columns (float32): ``fineweb_line_punct_ratio``, ``fineweb_dup_line_char_frac``,
``fineweb_short_line_ratio``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import pyarrow as pa

from pipeline.stages.base import DocumentStage, ParamError, check_range, register
from pipeline.stages.gopher_repetition import duplicate_stats
from pipeline.stages.text_utils import split_lines


@dataclasses.dataclass
class FineWebFiltersParams:
    min_line_punct_ratio: float = 0.12
    max_dup_line_char_frac: float = 0.1
    max_short_line_ratio: float = 0.67
    short_line_length: int = 30
    terminal_punctuation: Sequence[str] = (".", "'", '"', "!", "?", "”", "’", "…")

    def validate(self) -> None:
        s = "fineweb_filters"
        check_range(s, "min_line_punct_ratio", self.min_line_punct_ratio, 0.0, 1.0)
        check_range(s, "max_dup_line_char_frac", self.max_dup_line_char_frac, 0.0, 1.0)
        check_range(s, "max_short_line_ratio", self.max_short_line_ratio, 0.0, 1.0)
        check_range(s, "short_line_length", self.short_line_length, 0)
        if isinstance(self.terminal_punctuation, str) or not all(
            isinstance(p, str) and p for p in self.terminal_punctuation
        ):
            raise ParamError(
                f"stage '{s}': 'terminal_punctuation' must be a list of strings, got {self.terminal_punctuation!r}"
            )


def fineweb_signals(text: str, terminal_punctuation: tuple, short_line_length: int) -> dict:
    """FineWeb's three line signals of ``text``, keyed by column name."""
    lines = split_lines(text)
    n = len(lines)
    if not n:
        return {"fineweb_line_punct_ratio": 0.0, "fineweb_dup_line_char_frac": 0.0, "fineweb_short_line_ratio": 0.0}
    punct = sum(1 for line in lines if line.endswith(terminal_punctuation))
    short = sum(1 for line in lines if len(line) <= short_line_length)
    _, dup_chars = duplicate_stats(lines)
    total_chars = sum(map(len, lines))
    return {
        "fineweb_line_punct_ratio": punct / n,
        "fineweb_dup_line_char_frac": dup_chars / total_chars,
        "fineweb_short_line_ratio": short / n,
    }


@register
class FineWebFilters(DocumentStage):
    """FineWeb's line-punctuation, duplicated-line-characters and short-line filters."""

    name = "fineweb_filters"
    Params = FineWebFiltersParams
    columns = {
        "fineweb_line_punct_ratio": pa.float32(),
        "fineweb_dup_line_char_frac": pa.float32(),
        "fineweb_short_line_ratio": pa.float32(),
    }

    def process(self, doc) -> Optional[str]:
        p = self.params
        sig = fineweb_signals(doc.get("text") or "", tuple(p.terminal_punctuation), p.short_line_length)
        doc.update(sig)
        if sig["fineweb_line_punct_ratio"] <= p.min_line_punct_ratio:
            return "line_punct_ratio"
        if sig["fineweb_dup_line_char_frac"] >= p.max_dup_line_char_frac:
            return "dup_line_char_frac"
        if sig["fineweb_short_line_ratio"] >= p.max_short_line_ratio:
            return "short_line_ratio"
        return None
