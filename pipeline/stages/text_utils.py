"""Shared text splitting for the filter stages: words, lines, paragraphs, punctuation helpers.

Every heuristic filter (Gopher repetition and quality, line-wise corrections, C4, FineWeb) counts
"words", "lines" and "paragraphs"; they all use the definitions here so that their signals agree.

Definitions
-----------
- **Lines**: the text split on ``\\n``; each line stripped of surrounding whitespace; empty lines are
  *not* lines (a blank line is paragraph structure, not content). Counting blank lines would make
  every normally formatted document (paragraphs separated by a blank line) look full of duplicated
  lines.
- **Paragraphs**: the text split on two or more newlines (blank lines may contain spaces), each
  paragraph stripped, empty ones dropped.
- **Words** (``split_words``): whitespace-separated tokens, *except* for scripts written without
  spaces. Chinese/Japanese (Han, Hiragana, Katakana, CJK punctuation and full-width forms are left
  alone) and Thai/Lao would otherwise give a whole sentence as one "word", so each Han/kana
  character, and each Thai/Lao base character together with its combining marks, counts as one word
  (a character-based segmentation: a Chinese word has 1-2 characters on average, so word counts
  are of the right order; mean word length is then ~1, which is why Gopher's *quality* rules, which
  are English rules, belong after English language ID, as in RefinedWeb). Runs of other characters
  between them are split on whitespace as usual, so mixed text ("iPhone 11 发布") gives
  ``["iPhone", "11", "发", "布"]``. Korean uses spaces and is split on whitespace. Pure-ASCII text
  takes a fast path (``str.split``).
"""

from __future__ import annotations

import re
import string
from typing import List

# Scripts without spaces between words. Han (CJK Unified Ideographs + Ext A + compatibility +
# supplementary planes), Hiragana, Katakana (+ phonetic extensions, half-width katakana).
_CJK_CHARS = (
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0002fa1f"
)
# Thai and Lao base characters; their combining vowel/tone marks stay attached to the base.
_THAI_LAO_MARKS = "\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
_THAI_LAO = "\u0e00-\u0eff"

_NO_SPACE_SCRIPT_RE = re.compile(f"[{_CJK_CHARS}{_THAI_LAO}]")
_MIXED_WORD_RE = re.compile(
    f"[{_CJK_CHARS}]"  # one Han/kana character
    f"|[{_THAI_LAO}][{_THAI_LAO_MARKS}]*"  # one Thai/Lao base + its marks
    f"|[^\\s{_CJK_CHARS}{_THAI_LAO}]+"  # a whitespace-delimited run of anything else
)

_PARAGRAPH_SPLIT_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")

# Punctuation stripped from word edges (ASCII + the common typographic marks).
PUNCTUATION = string.punctuation + "…–—‐‑‒―•·«»‹›“”„‟‘’‚‛′″¡¿§¶†‡※°、。，．：；！？「」『』（）【】《》〈〉"


def has_no_space_script(text: str) -> bool:
    """True when ``text`` contains Han/kana/Thai/Lao characters (scripts written without spaces)."""
    if text.isascii():
        return False
    return _NO_SPACE_SCRIPT_RE.search(text) is not None


def split_words(text: str) -> List[str]:
    """Word tokens of ``text``: whitespace split, character-based for Han/kana/Thai/Lao runs."""
    if not has_no_space_script(text):
        return text.split()
    return _MIXED_WORD_RE.findall(text)


def split_lines(text: str) -> List[str]:
    """Non-empty lines of ``text``, stripped of surrounding whitespace."""
    return list(filter(None, map(str.strip, text.split("\n"))))


def split_paragraphs(text: str) -> List[str]:
    """Non-empty paragraphs of ``text`` (separated by one or more blank lines), stripped."""
    if "\n" not in text:
        text = text.strip()
        return [text] if text else []
    return list(filter(None, map(str.strip, _PARAGRAPH_SPLIT_RE.split(text))))
