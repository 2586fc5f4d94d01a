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


import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, Rule, register
from pipeline.stages.gopher_repetition import duplicate_stats
from pipeline.stages.text_utils import split_lines


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
    rules = (
        Rule("line_punct_ratio", "fineweb_line_punct_ratio", pa.float32(), ">",
             Param("min_line_punct_ratio", 0.12, lo=0.0, hi=1.0)),
        Rule("dup_line_char_frac", "fineweb_dup_line_char_frac", pa.float32(), "<",
             Param("max_dup_line_char_frac", 0.1, lo=0.0, hi=1.0)),
        Rule("short_line_ratio", "fineweb_short_line_ratio", pa.float32(), "<",
             Param("max_short_line_ratio", 0.67, lo=0.0, hi=1.0)),
    )
    parameters = (
        Param("short_line_length", 30, lo=0),
        Param("terminal_punctuation", (".", "'", '"', "!", "?", "”", "’", "…"), kind="strings"),
    )

    def measure(self, text: str) -> dict:
        p = self.params
        return fineweb_signals(text, tuple(p.terminal_punctuation), p.short_line_length)


FineWebFiltersParams = FineWebFilters.Params
