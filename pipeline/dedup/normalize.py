"""Text normalization and word tokens for deduplication (shared by MinHash and exact dedup).

The rule (``normalize_text``), applied in this order:

1. Unicode NFKC (``unicodedata.normalize("NFKC", text)``), then ``str.lower()``.
2. Each code point is classified with the Unicode database of the running Python:

   - *separator*: white space (``str.isspace``), categories ``Z*`` (spaces), ``Cc`` (controls),
     ``Cs`` (lone surrogates), ``P*`` (punctuation) and ``S*`` (symbols: ``$ + < = > ^ ` | ~``,
     currency, math, emoji, ...). A separator ends the current word and is not kept.
   - *digit*: category ``Nd`` (decimal digits of any script) becomes ``"0"`` (so "2019" and
     "2023" normalize alike, as in CCNet).
   - *dropped*: category ``Cf`` (format characters: soft hyphen, zero-width space/joiner, BOM) is
     deleted without ending the word ("hyphen\\u00adation" -> "hyphenation").
   - *solo*: Han ideographs, Hiragana, Katakana, and Thai/Lao letters are written without spaces:
     each such character is a word by itself (with the combining marks that follow it).
   - *mark*: categories ``M*`` (combining marks) stay attached to the word they follow.
   - everything else (letters, other numbers, private use, unassigned) is kept as is.
3. Words are joined with one ASCII space; no leading or trailing space.

Examples: ``"Hello,  World! It's 2019."`` -> ``"hello world it s 0000"``;
``"iPhone 11 发布"`` -> ``"iphone 00 发 布"``.

The normalized text is produced as UTF-8 bytes by a numba kernel over the code points (step 2-3),
together with the byte offsets of every word, so that shingles (n consecutive words) are plain
byte slices of one buffer: shingle ``i`` of n words is ``buf[start[i]:end[i + n - 1]]``, which is
exactly ``" ".join(words[i:i + n]).encode("utf-8")``. The classification table is built once per
process from ``unicodedata`` (about 0.3 s); results can differ across Python versions only for
characters whose Unicode category changed between Unicode versions.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import unicodedata
import zipfile
from typing import List, Tuple

import numpy as np

from pipeline.dedup.jit import lazy_njit  # numba is imported at the first kernel call

# Character classes of the table (uint8 per code point).
KEEP, SEP, DIGIT, DROP, SOLO, MARK = 0, 1, 2, 3, 4, 5

# Scripts written without spaces: Hiragana, Katakana (+ phonetic ext.), CJK ext. A, CJK unified,
# compatibility ideographs, half-width katakana, supplementary ideographs; Thai and Lao.
_SOLO_RANGES = (
    (0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x2FA1F), (0x0E00, 0x0EFF),
)

_TABLES: Tuple[np.ndarray, np.ndarray] | None = None
_TABLE_LOCK = threading.Lock()

# str.lower() is per character except for these two: U+0130 lowers to two code points and U+03A3
# (capital sigma) depends on its context (final sigma). Texts containing them use str.lower().
_CONTEXT_LOWER = ("\u0130", "\u03a3")


def _build_tables() -> Tuple[np.ndarray, np.ndarray]:
    table = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    lower = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    category = unicodedata.category
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        low = ch.lower()
        if low != ch and len(low) == 1:
            lower[cp] = ord(low)
        cat = category(ch)
        first = cat[0]
        if ch.isspace() or first in "ZPS" or cat in ("Cc", "Cs"):
            table[cp] = SEP
        elif cat == "Nd":
            table[cp] = DIGIT
        elif cat == "Cf":
            table[cp] = DROP
        elif first == "M":
            table[cp] = MARK
    for lo, hi in _SOLO_RANGES:
        seg = table[lo : hi + 1]
        seg[seg == KEEP] = SOLO  # letters of these scripts; their digits/marks/punctuation keep their class
    return table, lower


def _cache_path() -> str:
    """Where the built tables are kept between runs (``$WEBREFINERY_CACHE``, else ``~/.cache/webrefinery``):
    the name holds the Unicode version and a digest of this module, so a change of either builds anew."""
    base = os.environ.get("WEBREFINERY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "webrefinery")
    with open(__file__, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    return os.path.join(base, f"dedup-normalize-{unicodedata.unidata_version}-{sys.maxunicode}-{digest}.npz")


def _load_or_build() -> Tuple[np.ndarray, np.ndarray]:
    """The tables from the cache file when it holds them whole, else built (~0.5 s) and saved there."""
    path = _cache_path()
    size = sys.maxunicode + 1
    try:
        with np.load(path) as saved:
            table, lower = saved["table"], saved["lower"]
        if table.shape == lower.shape == (size,) and table.dtype == np.uint8 and lower.dtype == np.uint32:
            return table, lower
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or damaged: build
    table, lower = _build_tables()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, table=table, lower=lower)
            os.replace(tmp, path)  # whole or not at all, also with several processes at once
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # no writable cache folder: build in every process, as before
    return table, lower


def tables() -> Tuple[np.ndarray, np.ndarray]:
    """(class of each code point, lower-case of each code point), once per process: from the cache file,
    or built (~0.5 s) and saved for the next run."""
    global _TABLES
    if _TABLES is None:
        with _TABLE_LOCK:
            if _TABLES is None:
                _TABLES = _load_or_build()
    return _TABLES


def class_table() -> np.ndarray:
    """The per-code-point class table."""
    return tables()[0]


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, computed faster on typical web text.

    Same result, cheaper path: ASCII is already NFKC; U+00A0 (no-break space) and U+2026 (ellipsis),
    the usual reasons a web page fails NFKC's quick check, map to " " and "..." under NFKC and
    compose with nothing, so they are replaced first; then only the lines that fail the quick check
    are normalized (a line feed is a starter that never composes or reorders, so NFKC never acts
    across it)."""
    if text.isascii():
        return text
    if "\u00a0" in text:
        text = text.replace("\u00a0", " ")
    if "\u2026" in text:  # the ellipsis: NFKC gives "...", which is inert
        text = text.replace("\u2026", "...")
    if unicodedata.is_normalized("NFKC", text):
        return text
    is_normalized, normalize = unicodedata.is_normalized, unicodedata.normalize
    return "\n".join(line if is_normalized("NFKC", line) else normalize("NFKC", line) for line in text.split("\n"))


def code_points(text: str) -> np.ndarray:
    """NFKC ``text`` as a uint32 array of code points (lower-casing happens in ``normalize_code_points``,
    by table, except for texts where ``str.lower`` depends on context: those are lowered here)."""
    folded = nfkc(text)
    if not folded.isascii() and any(ch in folded for ch in _CONTEXT_LOWER):
        folded = folded.lower()
    return np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@lazy_njit(cache=True, nogil=True)
def _append_utf8(buf, pos, c):
    if c < 0x80:
        buf[pos] = c
        return pos + 1
    if c < 0x800:
        buf[pos] = 0xC0 | (c >> 6)
        buf[pos + 1] = 0x80 | (c & 0x3F)
        return pos + 2
    if c < 0x10000:
        buf[pos] = 0xE0 | (c >> 12)
        buf[pos + 1] = 0x80 | ((c >> 6) & 0x3F)
        buf[pos + 2] = 0x80 | (c & 0x3F)
        return pos + 3
    buf[pos] = 0xF0 | (c >> 18)
    buf[pos + 1] = 0x80 | ((c >> 12) & 0x3F)
    buf[pos + 2] = 0x80 | ((c >> 6) & 0x3F)
    buf[pos + 3] = 0x80 | (c & 0x3F)
    return pos + 4


@lazy_njit(cache=True, nogil=True)
def normalize_code_points(cps, table, lower):
    """Lower-casing and steps 2-3 of the rule over code points: (utf8 buffer, n_bytes, word starts,
    word ends, n_words)."""
    n = cps.shape[0]
    buf = np.empty(4 * n + 1, dtype=np.uint8)
    starts = np.empty(n + 1, dtype=np.int64)
    ends = np.empty(n + 1, dtype=np.int64)
    pos = 0
    nwords = 0
    in_word = False
    after_solo = False
    for i in range(n):
        c = np.int64(cps[i])
        if c >= table.shape[0]:
            k = SEP
        else:
            c = np.int64(lower[c])
            k = table[c]
        if k == DROP:
            continue
        if k == SEP:
            if in_word:
                ends[nwords - 1] = pos
            in_word = False
            after_solo = False
            continue
        if k == DIGIT:
            c = 48  # "0"
        if (not in_word) or k == SOLO or (after_solo and k != MARK):
            if in_word:
                ends[nwords - 1] = pos
            if nwords > 0:
                buf[pos] = 32
                pos += 1
            starts[nwords] = pos
            nwords += 1
            in_word = True
        pos = _append_utf8(buf, pos, c)
        after_solo = (k == SOLO) or (after_solo and k == MARK)
    if in_word:
        ends[nwords - 1] = pos
    return buf, pos, starts, ends, nwords


def normalized_words(text: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(utf8 buffer of the normalized text, word start offsets, word end offsets)."""
    buf, nbytes, starts, ends, nwords = normalize_code_points(code_points(text), *tables())
    return buf[:nbytes], starts[:nwords], ends[:nwords]


def normalize_text(text: str) -> str:
    """The normalized text (the rule in this module's docstring)."""
    buf, _, _ = normalized_words(text)
    return buf.tobytes().decode("utf-8")


def normalized_bytes(text: str) -> bytes:
    """The normalized text as UTF-8 bytes (what exact dedup hashes)."""
    buf, _, _ = normalized_words(text)
    return buf.tobytes()


def word_shingles(text: str, ngram: int) -> List[bytes]:
    """The shingles of ``text`` as UTF-8 bytes, in order, repeats included (a reference, slow path).

    Shingle i is words i..i+ngram-1 of the normalized text joined by one space. A text with fewer
    than ``ngram`` words (but at least one) has exactly one shingle: all its words. An empty text
    has none.
    """
    words = normalize_text(text).split(" ") if text else []
    words = [w for w in words if w]
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)]
