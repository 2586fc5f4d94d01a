"""Tests of HTTP response blocks (pipeline/io/http_response.py): status lines and headers of real crawls,
chunked bodies, Content-Encoding undone only when the body really is encoded, and the size cap."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from pipeline.io.http_response import (
    TooLarge,
    decode_content_encoding,
    dechunk,
    parse_http,
    split_content_type,
)

PAGE = b"<html><body>" + b"<p>hello world</p>" * 200 + b"</body></html>"


def test_status_lines_and_headers_of_real_crawls():
    status, fields, body = parse_http(b"HTTP/1.1 HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>x</p>")
    assert (status, fields) == (200, {"content-type": "text/html"})
    block = b"\r\nHTTP/1.0 404 Not Found\nServer: x\nX-Folded: a\n b\n\nbody"
    status, fields, body = parse_http(block)
    assert status == 404 and fields == {"server": "x", "x-folded": "a b"} and block[body:] == b"body"
    headers_only = b"HTTP/1.1 200 OK\r\nContent-Type: text/html"
    assert parse_http(headers_only) == (200, {"content-type": "text/html"}, len(headers_only))
    assert parse_http(b"HTTP/1.1 abc\r\n\r\n")[0] is None
    assert parse_http(b"<html>not http</html>") is None
    assert parse_http(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000) is None  # endless headers: not HTTP


def test_content_type_and_charset():
    assert split_content_type("text/HTML; charset=\"UTF-8\"") == ("text/html", "UTF-8")
    assert split_content_type("text/html, text/plain") == ("text/html", None)
    assert split_content_type(None) == ("", None)


def test_dechunk_only_undoes_real_chunking():
    assert dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n") == b"hello world"
    assert dechunk(b"4\nabcd\n0\n") == b"abcd"
    assert dechunk(PAGE) == PAGE


@pytest.mark.parametrize("coding,encode", [
    ("gzip", lambda b: gzip.compress(b, mtime=0)),
    ("x-gzip", lambda b: gzip.compress(b, mtime=0)),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ("br", brotli.compress),
    ("gzip, br", lambda b: brotli.compress(gzip.compress(b, mtime=0))),  # undone right to left
])
def test_encoded_bodies_are_decoded(coding, encode):
    assert decode_content_encoding(encode(PAGE), coding, 1 << 20) == PAGE


def test_bodies_stored_decoded_keep_their_bytes_and_the_cap_holds():
    assert decode_content_encoding(PAGE, "gzip", 1 << 20) == PAGE  # header left on a decoded body
    assert decode_content_encoding(b"\x00\x01 not deflate", "deflate", 1 << 20) == b"\x00\x01 not deflate"
    cut = gzip.compress(PAGE, mtime=0)[:-30]
    assert PAGE.startswith(decode_content_encoding(cut, "gzip", 1 << 20))  # a cut gzip keeps what inflated
    for coding, encode in (("gzip", gzip.compress), ("br", brotli.compress), ("deflate", zlib.compress)):
        with pytest.raises(TooLarge):
            decode_content_encoding(encode(bytes(1 << 22)), coding, 1 << 20)
