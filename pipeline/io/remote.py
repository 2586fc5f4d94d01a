"""Open an input file wherever it lives: local disk, a Beam filesystem (gs://, s3://, ...) or https://.

``open_input`` returns a binary file object positioned at the start of the raw bytes. It never
decompresses: the readers in ``pipeline/io/readers.py`` look at the bytes themselves (gzip members
are handled one by one there, so that one damaged member costs only its own record).

Object stores go through Apache Beam's ``FileSystems`` (so the same pipeline runs on Dataflow and
reads ``gs://`` without extra code; install ``apache-beam[gcp]`` or ``[aws]`` for those schemes).
``https://`` goes through ``urllib`` with a timeout; without network access a download fails with a
message that says how to pass local files instead.
"""

from __future__ import annotations

from pipeline.errors import UserError
import os
import re
import urllib.error
import urllib.request
from typing import BinaryIO, Optional

DEFAULT_HTTP_TIMEOUT_S = 60.0
USER_AGENT = "webrefinery/0.1 (+https://github.com/webrefinery)"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class RemoteInputError(UserError, OSError):
    """A remote input could not be listed or opened (the message says what to do instead)."""


def scheme_of(path: str) -> Optional[str]:
    """The lower-case URL scheme of ``path`` ('gs', 'https', 'file', ...), or None for a plain path."""
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def is_http_url(path: str) -> bool:
    """True for http:// and https:// addresses (read with urllib, never listed)."""
    return scheme_of(path) in ("http", "https")


def is_filesystem_url(path: str) -> bool:
    """True for paths that Beam's FileSystems handles (gs://, s3://, hdfs://, az://, ...)."""
    scheme = scheme_of(path)
    return scheme is not None and scheme not in ("file", "http", "https")


def local_path(path: str) -> str:
    """``path`` without a leading ``file://`` (local paths are returned unchanged)."""
    return path[len("file://"):] if path.lower().startswith("file://") else path


def offline_hint(path: str) -> str:
    """The advice appended to every download error."""
    return (
        f"could not download {path}. Without network access, fetch the file(s) beforehand and pass "
        "local paths instead (a file, a directory, or a glob such as 'data/*.warc.gz'); for a Common "
        "Crawl path list, download the listed files and pass their folder"
    )


def _beam_filesystems():
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError as exc:  # pragma: no cover - apache-beam is a core dependency
        raise RemoteInputError(f"apache-beam is needed to read remote paths: {exc}") from exc
    return FileSystems


def open_filesystem_url(path: str) -> BinaryIO:
    """Open gs:// s3:// ... through Beam's FileSystems, raw bytes (no decompression)."""
    from apache_beam.io.filesystem import CompressionTypes

    FileSystems = _beam_filesystems()
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # Beam raises ValueError for unknown schemes, BeamIOError/OSError otherwise
        raise RemoteInputError(
            f"cannot open {path}: {exc}. Object stores need Beam's extra for them "
            "(e.g. pip install 'apache-beam[gcp]' for gs://, 'apache-beam[aws]' for s3://) and credentials"
        ) from exc


def open_http_url(path: str, timeout_s: float = DEFAULT_HTTP_TIMEOUT_S) -> BinaryIO:
    """Open an http(s) URL as a streaming binary file object (not seekable)."""
    request = urllib.request.Request(path, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - scheme checked by caller
    except urllib.error.HTTPError as exc:
        raise RemoteInputError(f"{offline_hint(path)} (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteInputError(f"{offline_hint(path)} ({reason})") from exc


def open_input(path: str, *, timeout_s: float = DEFAULT_HTTP_TIMEOUT_S) -> BinaryIO:
    """A binary file object over the raw bytes of ``path`` (local, Beam filesystem, or http(s))."""
    if is_http_url(path):
        return open_http_url(path, timeout_s)
    if is_filesystem_url(path):
        return open_filesystem_url(path)
    local = local_path(path)
    if not os.path.exists(local):
        raise FileNotFoundError(f"input file {path} does not exist")
    return open(local, "rb")


def match_filesystem_pattern(pattern: str) -> list[str]:
    """Sorted paths matching a gs:// s3:// ... pattern (a path ending in '/' lists that folder)."""
    FileSystems = _beam_filesystems()
    query = pattern + "**" if pattern.endswith("/") else pattern
    try:
        result = FileSystems.match([query])[0]
    except Exception as exc:
        raise RemoteInputError(
            f"cannot list {pattern}: {exc}. Object stores need Beam's extra for them "
            "(e.g. pip install 'apache-beam[gcp]') and credentials"
        ) from exc
    return sorted(m.path for m in result.metadata_list)
