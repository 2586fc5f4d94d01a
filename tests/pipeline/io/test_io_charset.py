"""Tests of HTML decoding (pipeline/io/charset.py): BOM, declared charsets (HTTP then <meta>) checked against
the bytes, the UTF-8 probe, detection, and labels that lie or name nothing."""

from __future__ import annotations

import pytest

from pipeline.io.charset import _html5_encoding, decode_html

TEXT = "Grüße aus Köln, ça va très bien — ¡olé!"


def _page(charset_meta: str = "") -> str:
    meta = f'<meta charset="{charset_meta}">' if charset_meta else ""
    return f"<html><head>{meta}</head><body><p>{TEXT}</p></body></html>"


@pytest.mark.parametrize("data,declared,expected", [
    (_page().encode("utf-8-sig"), "windows-1252", _page()),  # a UTF-8 BOM wins and is dropped
    (_page().encode("utf-8"), "ISO-8859-1", _page()),  # valid UTF-8 is UTF-8 even when the server says latin-1
    (_page().encode("utf-8"), "no-such-charset", _page()),  # unknown labels never crash
    (_page("windows-1252").encode("cp1252"), None, _page("windows-1252")),  # <meta> when HTTP says nothing
    (_page("windows-1252").encode("cp1252"), "koi8-r", None),  # HTTP before <meta>: the label is used
    (_page().encode("utf-8"), "utf-16", _page()),  # a UTF-16 label on bytes with no NULs lies
])
def test_declared_and_probed(data, declared, expected):
    expected = expected if expected is not None else data.decode("koi8-r")
    assert decode_html(data, declared) == expected


def test_latin1_label_maps_to_windows_1252_as_browsers_do():
    data = ("<p>" + TEXT.replace("—", "-").replace("¡", "!") + " \u20ac</p>").encode("cp1252")
    assert decode_html(data, "iso-8859-1").endswith("\u20ac</p>")  # 0x80 is the euro sign in WHATWG latin1
    assert _html5_encoding("latin1") == "cp1252" and _html5_encoding("  'UTF8' ") == "utf-8"
    assert _html5_encoding("bogus") is None and _html5_encoding(None) is None


def test_utf16_with_bom_and_stateful_encodings():
    assert decode_html(_page().encode("utf-16"), None) == _page()
    jp = "<html><body><p>日本語のテキストです。</p></body></html>"
    assert decode_html(jp.encode("iso-2022-jp"), "ISO-2022-JP") == jp  # 7-bit: would also pass UTF-8
    assert decode_html(jp.encode("shift_jis"), "shift_jis") == jp


def test_undeclared_legacy_bytes_are_detected_and_never_raise():
    ru = "<html><body><p>" + "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 10 + "</p></body></html>"
    assert decode_html(ru.encode("cp1251"), None) == ru
    assert isinstance(decode_html(bytes(range(256)) * 4, "utf-8"), str)
