"""PII redaction: find e-mail addresses, public IP addresses, phone numbers and payment cards; replace them.

Pure Python, no Beam: the ``pii`` stage (``pipeline/quality/stages.py``) calls ``redact``; tests, the
fuzzer and the benchmark call it directly.

Kinds and their patterns (every quantifier is bounded, and each pattern starts with a fixed-width
look-behind, so the work per start position is bounded and a whole text is scanned in linear time;
``tests/pipeline/quality/test_quality_pii.py`` checks this on adversarial input):

- ``email``: ``local@domain.tld``; local part 1-64 of ``A-Za-z0-9._%+-`` starting with a letter, digit
  or ``_``, domain labels 1-63 of
  ``A-Za-z0-9-`` separated by dots, a final alphabetic TLD of 2-24 letters. Not preceded by a
  local-part character.
- ``ip``: dotted-quad IPv4 (each part 0-255, no leading zeros) and IPv6 (hex groups with ``::``),
  replaced only when the address is *public*: ``ipaddress``'s ``is_global`` and not multicast, like
  datatrove's ``PIIFormatter`` (private, loopback, link-local, documentation, reserved and shared
  ranges stay). IPv6 candidates must have at least three non-empty groups (so ``std::vector`` or
  ``12:30`` are never candidates).
- ``phone``: conservative, two shapes only, both requiring separators (a bare run of digits is never
  a phone number: those are ids, prices, years):
  (a) North American ``(NXX) NXX-XXXX`` / ``NXX-NXX-XXXX`` / ``NXX.NXX.XXXX`` with an optional ``+1``,
  the area code and exchange starting with 2-9, optionally ``1-`` / ``+1`` before; (b) international
  numbers written with a leading ``+`` country code: either 2-5 groups of 1-8 digits separated by
  single spaces, dots or dashes (an optional ``(0)``/``(area)`` group after the country code), or the
  digits run together; 8-15 digits in all (E.164's maximum). Not preceded or followed by a digit,
  letter or ``+``. Local formats without ``+`` outside North America (``021 685 027``) are not
  matched: they cannot be told from other digit groups without context.
- ``card``: 13-19 digits, optionally in groups separated by single spaces or dashes, that pass the
  Luhn check and start with a major network's prefix (Visa 4, Mastercard 51-55/2221-2720, Amex
  34/37, Discover 6011/65, JCB 35, Diners 36/38/300-305). Off by default.

Overlaps: matches are taken in text order; where two overlap, the one that starts first wins (the
longer one on a tie). Replacement: each match becomes its kind's placeholder (``<EMAIL>``, ``<IP>``,
``<PHONE>``, ``<CARD>`` by default); every character outside the matched spans is left exactly as
it was.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, Iterable, List, Mapping, NamedTuple, Sequence, Tuple

KINDS = ("email", "ip", "phone", "card")
DEFAULT_KINDS = ("email", "ip", "phone")
DEFAULT_PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>", "card": "<CARD>"}

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])"
    r"[A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(r"(?<![0-9.])" + _OCTET + r"(?:\." + _OCTET + r"){3}" + r"(?![0-9])(?!\.[0-9])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_PHONE_NA = re.compile(
    r"(?<![0-9A-Za-z+])"
    r"(?:\+1[ .-]?|1[ .-])?"
    r"(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[.-])"
    r"[2-9][0-9]{2}[ .-][0-9]{4}"
    r"(?![0-9A-Za-z])"
)
_PHONE_INTL = re.compile(
    r"(?<![0-9A-Za-z+])"
    r"\+[1-9][0-9]{0,2}"
    r"(?:(?:[ .-]?\([0-9]{1,4}\))?[ .-]?[0-9]{1,8}(?:[ .-][0-9]{1,8}){1,4}|[0-9]{5,14})"
    r"(?![0-9A-Za-z])"
)
_CARD = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


class Match(NamedTuple):
    start: int
    end: int
    kind: str


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(d: str) -> bool:
    n2, n4 = int(d[:2]), int(d[:4])
    return (d[0] == "4" or 51 <= n2 <= 55 or 2221 <= n4 <= 2720 or n2 in (34, 37, 35, 36, 38, 65)
            or d.startswith("6011") or 300 <= int(d[:3]) <= 305)


def _public_ip(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return addr.is_global and not addr.is_multicast


def _emails(text: str) -> Iterable[Match]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield Match(m.start(), m.end(), "email")


def _ips(text: str) -> Iterable[Match]:
    if "." in text:
        for m in _IPV4.finditer(text):
            if _public_ip(m.group()):
                yield Match(m.start(), m.end(), "ip")
    if "::" in text or text.count(":") >= 3:
        for m in _IPV6.finditer(text):
            s = m.group()
            if sum(1 for g in s.split(":") if g) >= 3 and _public_ip(s):
                yield Match(m.start(), m.end(), "ip")


def _phones(text: str) -> Iterable[Match]:
    for m in _PHONE_NA.finditer(text):
        yield Match(m.start(), m.end(), "phone")
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            digits = sum(ch.isdigit() for ch in m.group())
            if 8 <= digits <= 15:
                yield Match(m.start(), m.end(), "phone")


def _cards(text: str) -> Iterable[Match]:
    for m in _CARD.finditer(text):
        s = m.group()
        if "  " in s or "--" in s:
            continue
        d = s.replace(" ", "").replace("-", "")
        if 13 <= len(d) <= 19 and _card_prefix_ok(d) and luhn_ok(d):
            yield Match(m.start(), m.end(), "card")


_FINDERS = {"email": _emails, "ip": _ips, "phone": _phones, "card": _cards}


def find_pii(text: str, kinds: Sequence[str] = DEFAULT_KINDS) -> List[Match]:
    """Non-overlapping PII matches of the given kinds in ``text``, in text order (see module doc)."""
    found: List[Match] = []
    for kind in kinds:
        found.extend(_FINDERS[kind](text))
    found.sort(key=lambda m: (m.start, -(m.end - m.start), KINDS.index(m.kind)))
    out: List[Match] = []
    end = -1
    for m in found:
        if m.start >= end:
            out.append(m)
            end = m.end
    return out


def redact(text: str, kinds: Sequence[str] = DEFAULT_KINDS,
           placeholders: Mapping[str, str] = DEFAULT_PLACEHOLDERS) -> Tuple[str, Dict[str, int], List[Match]]:
    """(redacted text, count per kind, matches): each match replaced by its kind's placeholder."""
    matches = find_pii(text, kinds)
    counts = {k: 0 for k in kinds}
    if not matches:
        return text, counts, matches
    parts: List[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos:m.start])
        parts.append(placeholders[m.kind])
        counts[m.kind] += 1
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts), counts, matches
