"""Gopher repetition removal (Rae et al. 2021, Table A1), as used by RefinedWeb's MDR.

A document is removed when a signal is above its threshold (Table A1: 0.30, 0.30, 0.20, 0.20 for
lines/paragraphs; 0.20, 0.18, 0.16 for top 2/3/4-grams; 0.15 .. 0.10 for duplicated 5..10-grams).
``convention`` chooses how the paper's one-sentence definitions are read (README: "Gopher signals:
two readings"). Signals (all recorded as columns, also on rejected documents, so thresholds can be
changed later without re-running), ``convention: paper`` (default):

- ``gopher_dup_line_frac``: duplicated lines / lines. A *duplicated* line is an occurrence of a line
  that already appeared earlier (the first occurrence is not a duplicate: it is what would remain
  after de-duplicating the lines). Lines are the non-empty, stripped lines (``text_utils``).
- ``gopher_dup_para_frac``: the same for paragraphs (split on blank lines).
- ``gopher_dup_line_char_frac`` / ``gopher_dup_para_char_frac``: characters in duplicated lines /
  paragraphs (same counting) divided by the document's length in characters.
- ``gopher_top_{2,3,4}gram_frac``: characters covered by the most frequent word n-gram, counted
  once per occurrence (``count * chars(ngram)``), divided by the characters of all words. An
  n-gram that occurs only once is not a repetition: the signal is 0 then (otherwise any document of
  a handful of words would be "repetitive"). Ties between equally frequent n-grams: the one with
  the most characters.
- ``gopher_dup_{5..10}gram_frac``: characters of the words covered by *any* occurrence (the first
  one included) of an n-gram that occurs at least twice, each word counted once however many
  duplicated n-grams overlap it (Gopher: "taking care not to count characters that occur in
  overlapping n-grams more than once"), divided by the characters of all words.

"Characters of words" means the sum of word lengths (whitespace excluded), so numerator and
denominator count the same things; words come from ``text_utils.split_words`` (character-based for
Chinese/Japanese/Thai).

``convention: datatrove`` (datatrove 0.10's ``GopherRepetitionFilter``, which FineWeb used):
paragraphs are the text (stripped) split on runs of 2+ newlines, lines the text split on runs of
newlines, neither stripped (``" ab"`` and ``"ab"`` differ); line/paragraph fractions count repeats
only, as above, and their characters are divided by the text's length. Words are ``en_words``
(punctuation marks are words). Top n-gram: the most frequent n-gram (the earliest of equally
frequent ones), counted even when it occurs once, its length *with* the spaces between its words
times its count, over the text's length (so "a a a a a" gives 4 x 3 / 9 > 1). Duplicated n-grams:
the n-grams are scanned left to right; one seen before adds its characters (words joined without
spaces) and the scan jumps n words, any other is remembered and the scan moves one word; over the
text's length. First occurrences never count, and a repeat overlapping the previous hit is skipped.
datatrove checks paragraphs before lines, so the rule named in a rejection follows its order.

Speed: words are mapped to integer ids once; n-gram ids for n = 2..10 are built incrementally as
64-bit polynomial hashes over the id array with numpy (uint64 arithmetic wraps). For each n only
the candidate positions (where both (n-1)-grams inside repeat) are sorted to count occurrences,
so the work shrinks quickly with n. Coverage of duplicated n-grams is a difference-array
cumulative sum. A 64-bit hash collision between two different n-grams of one document has
probability ~ m^2 / 2^65 (m n-grams), i.e. never in practice.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, Rule, register
from pipeline.stages.en_words import en_words
from pipeline.stages.text_utils import split_lines, split_paragraphs, split_words

# How the signals are read: "paper" (this module's definitions) or "datatrove" (datatrove 0.10's filters).
CONVENTIONS = ("paper", "datatrove")

TOP_NS = (2, 3, 4)
DUP_NS = (5, 6, 7, 8, 9, 10)

# Odd 64-bit multiplier for the polynomial n-gram hash (any large odd constant works).
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


def duplicate_stats(items: List[str]) -> Tuple[int, int]:
    """(number of items equal to an earlier item, total characters of those items)."""
    seen = set()
    dup_items = 0
    dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


def _occurrence_counts(values: np.ndarray) -> np.ndarray:
    """For each element, how many times its value occurs in ``values`` (one sort)."""
    order = values.argsort(kind="stable")
    sorted_vals = values[order]
    starts = np.concatenate(([0], (sorted_vals[1:] != sorted_vals[:-1]).nonzero()[0] + 1, [len(values)]))
    run_lengths = starts[1:] - starts[:-1]
    counts = np.empty(len(values), dtype=np.int64)
    counts[order] = np.repeat(run_lengths, run_lengths)
    return counts


def ngram_repetition_signals(words: List[str]) -> Dict[int, float]:
    """For n in 2..4: top n-gram character fraction; for n in 5..10: duplicated n-gram character
    fraction (definitions in the module docstring). Keys are n.

    Only n-grams that can repeat are counted: the n-gram at i can occur twice only if the
    (n-1)-grams at i and i+1 both do, so each n sorts just those candidates (few, past n = 2)."""
    out = {n: 0.0 for n in TOP_NS + DUP_NS}
    n_words = len(words)
    if n_words < 2:
        return out
    # word -> position of its first occurrence (in C: dict.setdefault mapped over words, positions)
    vocab: Dict[str, int] = {}
    first_pos = np.fromiter(map(vocab.setdefault, words, itertools.count()), dtype=np.int64, count=n_words)
    if len(vocab) == n_words:  # every word distinct: no n-gram can repeat
        return out
    repeated = np.bincount(first_pos, minlength=n_words)[first_pos] > 1  # unigram occurs twice
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    csum = np.zeros(n_words + 1, dtype=np.int64)  # chars of words[i:i+n] = csum[i+n] - csum[i]
    np.cumsum(lengths, out=csum[1:])
    total_chars = int(csum[-1])
    if total_chars == 0:
        return out
    ids = first_pos.astype(np.uint64) + np.uint64(1)  # no zero ids, so "a" and "a a" hash apart
    hashes = ids
    with np.errstate(over="ignore"):  # the polynomial hash wraps around 2^64 on purpose
        for n in range(2, DUP_NS[-1] + 1):
            m = n_words - n + 1
            if m < 2:
                break
            hashes = hashes[:m] * _HASH_MULT + ids[n - 1 :]
            cand = (repeated[:m] & repeated[1 : m + 1]).nonzero()[0]
            if len(cand) < 2:
                break  # no repeated n-gram: no longer n-gram can repeat either
            counts = _occurrence_counts(hashes[cand])
            dup_starts = cand[counts >= 2]
            if not len(dup_starts):
                break
            repeated = np.zeros(m, dtype=bool)
            repeated[dup_starts] = True
            if n in TOP_NS:
                max_count = int(counts.max())
                starts = cand[counts == max_count]
                window_chars = csum[starts + n] - csum[starts]
                out[n] = float(max_count * int(window_chars.max())) / total_chars
            else:
                diff = np.zeros(n_words + 1, dtype=np.int32)
                diff[dup_starts] += 1  # indices are distinct, so plain fancy indexing is exact
                diff[dup_starts + n] -= 1
                covered = diff[:-1].cumsum() > 0
                out[n] = float(lengths[covered].sum()) / total_chars
    return out


def repetition_signals(text: str) -> Dict[str, float]:
    """All Gopher repetition signals of ``text``, keyed by column name."""
    n_chars = len(text)
    lines = split_lines(text)
    paragraphs = split_paragraphs(text)
    dup_lines, dup_line_chars = duplicate_stats(lines)
    dup_paras, dup_para_chars = duplicate_stats(paragraphs)
    signals = {
        "gopher_dup_line_frac": dup_lines / len(lines) if lines else 0.0,
        "gopher_dup_para_frac": dup_paras / len(paragraphs) if paragraphs else 0.0,
        "gopher_dup_line_char_frac": dup_line_chars / n_chars if n_chars else 0.0,
        "gopher_dup_para_char_frac": dup_para_chars / n_chars if n_chars else 0.0,
    }
    ngram = ngram_repetition_signals(split_words(text))
    for n in TOP_NS:
        signals[f"gopher_top_{n}gram_frac"] = ngram[n]
    for n in DUP_NS:
        signals[f"gopher_dup_{n}gram_frac"] = ngram[n]
    return signals


_DT_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
_DT_LINE_SPLIT = re.compile(r"\n+")


def top_ngram_chars_datatrove(words: List[str], n: int) -> int:
    """datatrove's top n-gram characters: the most frequent n-gram (the earliest of equally frequent
    ones) as words joined by spaces, its length times its count; a count of 1 is not excluded."""
    if len(words) < n:
        return 0
    counts = Counter(zip(*(itertools.islice(words, i, None) for i in range(n))))
    gram, count = max(counts.items(), key=lambda kv: kv[1])  # max() keeps the first of equal counts
    return (sum(map(len, gram)) + n - 1) * count


def dup_ngram_chars_datatrove(words: List[str], n: int) -> int:
    """datatrove's duplicated n-gram characters: scan the n-grams (words joined without spaces) left to
    right; an n-gram seen before adds its characters and the scan jumps n words, otherwise it is
    remembered and the scan moves one word. First occurrences never count."""
    seen = set()
    repeated = idx = 0
    last = len(words) - n + 1
    join = "".join
    while idx < last:
        gram = join(words[idx : idx + n])
        if gram in seen:
            repeated += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


def repetition_signals_datatrove(text: str) -> Dict[str, float]:
    """The Gopher repetition signals as datatrove 0.10's ``GopherRepetitionFilter`` computes them
    (module docstring, "convention: datatrove"), keyed by column name."""
    n_chars = len(text)
    if not n_chars:
        return dict.fromkeys(COLUMNS, 0.0)
    paragraphs = _DT_PARAGRAPH_SPLIT.split(text.strip())
    lines = _DT_LINE_SPLIT.split(text)
    dup_paras, dup_para_chars = duplicate_stats(paragraphs)
    dup_lines, dup_line_chars = duplicate_stats(lines)
    signals = {
        "gopher_dup_line_frac": dup_lines / len(lines),
        "gopher_dup_para_frac": dup_paras / len(paragraphs),
        "gopher_dup_line_char_frac": dup_line_chars / n_chars,
        "gopher_dup_para_char_frac": dup_para_chars / n_chars,
    }
    words = en_words(text)
    for n in TOP_NS:
        signals[f"gopher_top_{n}gram_frac"] = top_ngram_chars_datatrove(words, n) / n_chars
    for n in DUP_NS:
        signals[f"gopher_dup_{n}gram_frac"] = dup_ngram_chars_datatrove(words, n) / n_chars
    return signals


def _max_rule(rule: str, column: str, default: float) -> Rule:
    """A repetition rule: the document is kept when its signal is at most the threshold (in [0, 1])."""
    return Rule(rule, column, pa.float32(), "<=", Param(column[len("gopher_"):], default, lo=0.0, hi=1.0))


# Gopher Table A1's thresholds, checked in this order (parameter = column without "gopher_")
RULES = (
    _max_rule("dup_line_frac", "gopher_dup_line_frac", 0.30),
    _max_rule("dup_para_frac", "gopher_dup_para_frac", 0.30),
    _max_rule("dup_line_char_frac", "gopher_dup_line_char_frac", 0.20),
    _max_rule("dup_para_char_frac", "gopher_dup_para_char_frac", 0.20),
    *[_max_rule(f"top_{n}gram", f"gopher_top_{n}gram_frac", v) for n, v in zip(TOP_NS, (0.20, 0.18, 0.16))],
    *[_max_rule(f"dup_{n}gram", f"gopher_dup_{n}gram_frac", v) for n, v in zip(DUP_NS, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10))],
)


@register
class GopherRepetition(DocumentStage):
    """Reject documents whose lines, paragraphs or n-grams repeat too much (Gopher Table A1)."""

    name = "gopher_repetition"
    rules = RULES
    parameters = (Param("convention", "paper", kind="choice", choices=CONVENTIONS),)
    # datatrove checks paragraphs before lines (the reason differs, never the decision)
    DATATROVE_ORDER = tuple(r.name for r in RULES[:4][1::2] + RULES[:4][0::2] + RULES[4:])

    def measure(self, text: str) -> Dict[str, float]:
        if self.params.convention == "datatrove":
            return repetition_signals_datatrove(text)
        return repetition_signals(text)

    def process(self, doc) -> Optional[str]:
        signals = self.measure(doc.get("text") or "")
        doc.update(signals)
        return self.check(signals, order=self.DATATROVE_ORDER if self.params.convention == "datatrove" else None)


GopherRepetitionParams = GopherRepetition.Params
COLUMNS = GopherRepetition.columns
