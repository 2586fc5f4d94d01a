"""HTML bytes -> str: BOM, declared charset (HTTP header, then ``<meta charset>``, mapped through the WHATWG
label table), with a UTF-8 probe first (a body that is valid UTF-8 is UTF-8 even when a server claims
ISO-8859-1), then uchardet detection; unknown charset names never crash.
"""

from __future__ import annotations

import codecs
import re
from typing import Optional

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_\-.:]{1,40})", re.I)
_META_SCAN = 4096
_STATEFUL_PREFIXES = ("utf-16", "utf_16", "iso2022", "iso-2022", "hz", "utf-7", "utf_7")


def _html5_encoding(label: Optional[str]) -> Optional[str]:
    """WHATWG-canonical Python codec name for a charset label, or None for unknown/bogus labels."""
    if not label:
        return None
    try:
        enc = map_encoding_to_html5(label.strip().strip("\"'"), fallback_utf8=False)
        if enc:
            codecs.lookup(enc)
        return enc or None
    except (LookupError, ValueError, TypeError):
        return None


def _decode_strict(payload: bytes, encoding: str) -> Optional[str]:
    try:
        return payload.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(payload: bytes, declared_charset: Optional[str] = None) -> str:
    """HTML bytes -> str: BOM, declared charset (HTTP, then <meta>), UTF-8 probe, detection; never raises."""
    if payload.startswith(codecs.BOM_UTF8):
        return payload[3:].decode("utf-8", "replace")
    if payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return payload.decode("utf-16", "replace")
    http_enc = _html5_encoding(declared_charset)
    if http_enc and http_enc.startswith("utf-16") and b"\x00" not in payload[:_META_SCAN]:
        http_enc = None  # markup in UTF-16 has a NUL byte in every ASCII character: the label lies
    m = _META_CHARSET.search(payload, 0, _META_SCAN)
    meta_enc = _html5_encoding(m.group(1).decode("ascii", "replace")) if m else None
    if meta_enc and meta_enc.startswith(("utf-16", "utf_16")):
        meta_enc = "utf-8"  # a <meta> readable as ASCII cannot be UTF-16 (WHATWG rule)
    candidates = [e for i, e in enumerate((http_enc, meta_enc)) if e and e not in (http_enc, meta_enc)[:i]]
    if candidates and candidates[0].lower().startswith(_STATEFUL_PREFIXES):
        text = _decode_strict(payload, candidates[0])  # 7-bit/16-bit encodings also pass a UTF-8 probe
        if text is not None:
            return text
    text = _decode_strict(payload, "utf-8")
    if text is not None:
        return text
    for enc in candidates:
        text = _decode_strict(payload, enc)
        if text is not None:
            return text
    try:
        detected = _html5_encoding(detect_encoding(payload))
    except Exception:  # detection is a best effort
        detected = None
    if detected and detected not in candidates:
        text = _decode_strict(payload, detected)
        if text is not None:
            return text
    fallback = candidates[0] if candidates else (detected or "utf-8")
    try:
        return payload.decode(fallback, "replace")
    except LookupError:  # pragma: no cover - _html5_encoding checked the codec
        return payload.decode("utf-8", "replace")
