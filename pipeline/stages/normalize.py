"""Text normalization: mojibake repair, Unicode NFC, control characters, whitespace.

Applied in this order to ``doc["text"]``:

1. Mojibake repair with ``ftfy`` (``fix_mojibake``, default on): only ftfy's encoding fixes
   ("doesnâ€™t" -> "doesn’t", C1 controls read as Windows-1252, surrogates); its cosmetic changes
   (straightening quotes, full-width -> half-width, ligatures, HTML entities) are switched off, so
   correct text is never rewritten. ftfy costs ~1 ms per 4 KB document, so it only runs on texts
   that contain a complete mojibake byte sequence (a UTF-8 lead byte U+00C2..U+00F4 followed by
   the continuation characters it needs, shown as Latin-1/Windows-1252), a C1 control character,
   or two UTF-8-as-Windows-1251 pairs in a row ("РёС‚"); pure-ASCII text never needs it. On the
   697 shared Common Crawl documents this pre-check selects 12, and misses none of the 8 that
   ftfy changes (``bench/bench_filters.py`` re-checks this).
2. Line breaks: ``\\r\\n``, ``\\r``, vertical tab, form feed, U+0085, U+2028, U+2029 -> ``\\n``.
3. Unicode NFC.
4. Control characters removed: every Unicode ``Cc`` character except ``\\n`` and ``\\t``; also
   the invisible U+FEFF (BOM), U+200B (zero-width space) and U+00AD (soft hyphen). Zero-width
   joiners (U+200C/U+200D) are kept: Persian, Indic scripts and emoji need them.
5. Whitespace: every Unicode space separator (``Zs``: no-break space, thin space, ideographic
   space, ...) becomes a plain space; runs of spaces/tabs collapse to one space (a tab alone stays
   a tab); lines are stripped at both ends; at most one blank line between paragraphs; no leading
   or trailing blank lines.

The stage repeats these steps (at most three times) while removing a character has brought a new
mojibake sequence or a new NFC composition together, so normalizing twice changes nothing.

A text that is empty after this is rejected as ``normalize:empty``. Columns:
``normalize_mojibake_fixed`` (bool: ftfy changed the text) and ``normalize_chars_removed``
(int32: characters before minus after).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

import pyarrow as pa

from pipeline.stages.base import DocumentStage, Param, register

# UTF-8 bytes decoded as Latin-1/Windows-1252 show a lead byte (U+00C2..U+00F4) followed by as
# many continuation bytes as the sequence needs, each shown as U+0080..U+00BF or one of
# Windows-1252's 0x80..0x9F glyphs. Requiring the full sequence keeps legitimate text ("à\xa0",
# "nášho") out. U+00A0 after a 2-byte lead only counts after "Â"/"Ã" (no-break space, "à").
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_CONT = f"[\u0080-\u00bf{_CP1252_HIGH}]"
_CONT_NO_NBSP = f"[\u0080-\u009f\u00a1-\u00bf{_CP1252_HIGH}]"
# UTF-8 Cyrillic decoded as Windows-1251: every letter becomes "Р" or "С" + a character of
# 0x80..0xBF of that code page; two such pairs in a row (a single "Рі" is Ukrainian).
_CONT_1251 = (
    "[\u0402\u0403\u201a\u0453\u201e\u2026\u2020\u2021\u20ac\u2030\u0409\u2039\u040a\u040c\u040b"
    "\u040f\u0452\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u2122\u0459\u203a\u045a\u045c\u045b"
    "\u045f\u00a0\u040e\u045e\u0408\u00a4\u0490\u00a6\u00a7\u0401\u00a9\u0404\u00ab\u00ac\u00ad"
    "\u00ae\u0407\u00b0\u00b1\u0406\u0456\u0491\u00b5\u00b6\u00b7\u0451\u2116\u0454\u00bb\u0458"
    "\u0405\u0455\u0457]"
)
# Written as one leading character class (which the regex engine scans for quickly) followed by
# look-behinds choosing the continuation rule for that lead character.
_MOJIBAKE_HINT_RE = re.compile(
    "[\x80-\x9f\u00c2-\u00f4\u0420\u0421](?:"
    "(?<=[\x80-\x9f])"
    f"|(?<=[\u00c2\u00c3]){_CONT}"
    f"|(?<=[\u00c4-\u00df]){_CONT_NO_NBSP}"
    f"|(?<=[\u00e0-\u00ef]){_CONT}{_CONT}"
    f"|(?<=[\u00f0-\u00f4]){_CONT}{_CONT}{_CONT}"
    f"|(?<=[\u0420\u0421]){_CONT_1251}[\u0420\u0421]{_CONT_1251})"
)

_ODD_LINE_BREAKS = ("\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029")
_LINE_BREAKS_RE = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Unicode category Zs, except the plain space itself
_SPACE_SEPARATORS = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_SPACE_SEPARATOR_RE = re.compile(f"[{_SPACE_SEPARATORS}]")
_CONTROLS = "".join(
    c for c in map(chr, range(0x00, 0xA0)) if unicodedata.category(c) == "Cc" and c not in "\n\t"
) + "\ufeff\u200b\u00ad"
_CONTROL_RE = re.compile(f"[{re.escape(_CONTROLS)}]")
_HSPACE_RUN_RE = re.compile(r"[ \t]{2,}")
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def _ftfy_config():
    import ftfy

    return ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_encoding=True,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        fix_surrogates=True,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )


def may_have_mojibake(text: str) -> bool:
    """Cheap test: can ``text`` contain UTF-8-read-as-another-encoding mojibake?"""
    return not text.isascii() and _MOJIBAKE_HINT_RE.search(text) is not None


def unify_line_breaks(text: str) -> str:
    """``\\r\\n``, ``\\r``, VT, FF, NEL, U+2028, U+2029 -> ``\\n``."""
    if any(c in text for c in _ODD_LINE_BREAKS):
        return _LINE_BREAKS_RE.sub("\n", text)
    return text


def remove_control_chars(text: str) -> str:
    """``text`` without control characters (except ``\\n``, ``\\t``) and invisible BOM/ZWSP/SHY."""
    return _CONTROL_RE.sub("", text)


def to_nfc(text: str) -> str:
    """Unicode NFC form of ``text`` (no copy when it already is)."""
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def clean_lines(text: str) -> str:
    """Per line: control characters removed, Unicode spaces -> " ", space runs collapsed, both
    ends stripped; then at most one blank line in a row and none at the start or end.
    ``text`` must already use ``\\n`` line breaks only."""
    out = []
    for line in text.split("\n"):
        if not line.isprintable():  # fast C check; false for tabs, controls, Zs, Cf, ...
            line = _CONTROL_RE.sub("", line)
            line = _SPACE_SEPARATOR_RE.sub(" ", line)
        line = line.strip()
        if "  " in line or "\t" in line:
            line = _HSPACE_RUN_RE.sub(" ", line)
        out.append(line)
    text = "\n".join(out)
    if "\n\n\n" in text:
        text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip("\n")


def normalize_text(text: str, fix_mojibake=None) -> str:
    """Steps 2-5 of the module docstring (``fix_mojibake``: optional callable run first)."""
    if fix_mojibake is not None:
        text = fix_mojibake(text)
    return clean_lines(to_nfc(unify_line_breaks(text)))


class _FixOnFirstUse:
    """``ftfy.fix_text`` with the config above; ftfy is imported for the first text that needs it (its import
    is ~0.07 s of a run's start-up, and many runs meet no mojibake at all)."""

    def __init__(self):
        self._fix = None

    def __call__(self, text: str) -> str:
        if self._fix is None:
            import ftfy

            config = _ftfy_config()
            self._fix = lambda t: ftfy.fix_text(t, config)
        return self._fix(text)


@register
class Normalize(DocumentStage):
    """Repair mojibake, NFC, strip control characters, normalize whitespace; reject empty texts."""

    name = "normalize"
    parameters = (Param("fix_mojibake", True, kind="bool"),)
    signal_columns = {"normalize_mojibake_fixed": pa.bool_(), "normalize_chars_removed": pa.int32()}

    def setup(self) -> None:
        self._ftfy = _FixOnFirstUse() if self.params.fix_mojibake else None

    def normalize_text(self, text: str):
        """(normalized text, whether mojibake repair changed it). Idempotent: removing a control
        character or composing to NFC can bring a new mojibake sequence or a new composable pair
        together ("Ã\\x00©", "e\\x00\\u0301"), so the pass is repeated (at most 3 times) while its
        output still needs one (only non-ASCII text with a mojibake hint or not in NFC)."""
        fixed = False
        for _ in range(3):
            before = text
            if self._ftfy is not None and may_have_mojibake(text):
                repaired = self._ftfy(text)
                fixed = fixed or repaired != text
                text = repaired
            text = normalize_text(text)
            if text == before or text.isascii() or not (
                (self._ftfy is not None and may_have_mojibake(text)) or not unicodedata.is_normalized("NFC", text)
            ):
                break
        return text, fixed

    def process(self, doc) -> Optional[str]:
        if not hasattr(self, "_ftfy"):
            self.setup()
        text = doc.get("text") or ""
        normalized, fixed = self.normalize_text(text)
        doc["normalize_mojibake_fixed"] = fixed
        doc["normalize_chars_removed"] = len(text) - len(normalized)
        doc["text"] = normalized
        if not normalized:
            return "empty"
        return None


NormalizeParams = Normalize.Params
