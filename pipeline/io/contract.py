"""What every input reader shares: the rejection reasons, the record type, the limits (ReaderParams).

A reader yields ``(document, None)`` for each page and ``(document, reason)`` for each counted rejection,
``reason`` one of ``READ_REASONS``. Records without an id of their own get ``synthetic_id`` (file name and
position in the file), so ids stay stable across runs.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from typing import Any, Optional, Tuple

from pipeline.document import Document
from pipeline.errors import UserValueError
from pipeline.io.remote import is_filesystem_url, is_http_url

Record = Tuple[Document, Optional[str]]

R_NON_HTML = "read:non_html"
R_HTTP_STATUS = "read:http_status"
R_TOO_LARGE = "read:too_large"
R_TRUNCATED = "read:truncated"
R_CORRUPT_GZIP = "read:corrupt_gzip"
R_CORRUPT_STREAM = "read:corrupt_stream"  # damaged zstd / bzip2 / xz data
R_BAD_HEADER = "read:bad_header"
R_BAD_HTTP = "read:bad_http"
R_BAD_JSON = "read:bad_json"
R_NO_TEXT = "read:no_text"
READ_REASONS = (
    R_NON_HTML, R_HTTP_STATUS, R_TOO_LARGE, R_TRUNCATED, R_CORRUPT_GZIP, R_CORRUPT_STREAM,
    R_BAD_HEADER, R_BAD_HTTP, R_BAD_JSON, R_NO_TEXT,
)

DEFAULT_COMMONCRAWL_BASE_URL = "https://data.commoncrawl.org/"
READ_CHUNK = 1 << 20  # bytes read from the input at a time
FILL = b"\r\n\t \x00"  # filler found between records (and after the last one)
LEADING_FILL = re.compile(rb"[\r\n\t \x00]*")


@dataclasses.dataclass
class ReaderParams:
    """Limits of the readers (the lead's pipelines.yaml may override them under ``read``)."""

    max_bytes: int = 10_000_000  # largest payload (after HTTP decoding) turned into a Document
    max_expansion: int = 10  # one record may inflate to at most max_expansion * max_bytes bytes
    commoncrawl_base_url: str = DEFAULT_COMMONCRAWL_BASE_URL  # prefix for entries of *.paths(.gz)

    def validate(self) -> None:
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise UserValueError(f"read: 'max_bytes' = {self.max_bytes!r} must be a positive integer")
        if not isinstance(self.max_expansion, int) or self.max_expansion < 1:
            raise UserValueError(f"read: 'max_expansion' = {self.max_expansion!r} must be a positive integer")

    @property
    def record_cap(self) -> int:
        return self.max_bytes * self.max_expansion


def name_of(path: str) -> str:
    """The file-name part of a path or URL (query and fragment removed), lower case."""
    if is_http_url(path) or is_filesystem_url(path):
        path = urllib.parse.urlsplit(path).path
    return path.rstrip("/").rsplit("/", 1)[-1].lower()


def synthetic_id(path: str, position: int) -> str:
    """A stable id for a record that has none: file name and position in the file."""
    return f"{name_of(path) or path}:{position}"


def first_str(*values: Any) -> Optional[str]:
    """The first value that is neither None nor empty, as a str (None when there is none)."""
    for v in values:
        if v is not None and v != "":
            return v if isinstance(v, str) else str(v)
    return None
