"""Input files named on the command line: formats by file name, folders, globs, remote patterns, URLs and
Common Crawl path lists (``warc.paths.gz``) -> the sorted list of input files.

- ``expand_inputs(patterns)``: files, folders, globs, ``gs://``/``s3://`` patterns, ``https://`` URLs and
  path lists -> input files (duplicates dropped, first occurrence kept);
- ``detect_format(path)``: ``'warc'``, ``'arc'``, ``'wet'``, ``'jsonl'``, ``'parquet'`` or ``'arrow'``;
- ``read_path_list(path)``: the entries of a (gzipped) path list, prefixed with the Common Crawl base URL.
"""

from __future__ import annotations

import glob
import os
from typing import Iterable, List, Union

from pipeline.errors import UserValueError
from pipeline.io.contract import DEFAULT_COMMONCRAWL_BASE_URL, name_of
from pipeline.io.gzip_members import GZIP_MAGIC, inflate_all
from pipeline.io.remote import (
    is_filesystem_url,
    is_http_url,
    local_path,
    match_filesystem_pattern,
    open_input,
)

FORMATS = ("warc", "arc", "wet", "jsonl", "parquet", "arrow")

# Longest suffixes first where one ends another (".warc.gz" must win over ".arc.gz").
_SUFFIX_FORMATS = (
    (".warc.wet.gz", "wet"), (".wet.gz", "wet"), (".wet", "wet"),
    (".warc.wat.gz", "warc"), (".wat.gz", "warc"), (".wat", "warc"),  # metadata only: yields no pages
    (".warc.gz", "warc"), (".warc", "warc"),
    (".arc.gz", "arc"), (".arc", "arc"),
    (".jsonl.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson.gz", "jsonl"), (".ndjson", "jsonl"),
    (".json.gz", "jsonl"), (".json", "jsonl"),
    (".parquet", "parquet"), (".pq", "parquet"),
    (".arrow", "arrow"), (".arrows", "arrow"), (".feather", "arrow"), (".ipc", "arrow"),
)
_PATH_LIST_SUFFIXES = (".paths", ".paths.gz")
_STREAM_SUFFIXES = (".zst", ".zstd", ".bz2", ".xz")  # whole-file compression besides gzip
_STREAM_FORMATS = ("warc", "arc", "wet", "jsonl")

def detect_format(path: str) -> str:
    """The reader format for ``path`` from its name: 'warc', 'arc', 'wet', 'jsonl', 'parquet' or 'arrow'.

    WARC/ARC/WET/JSONL files may also be compressed whole with zstd, bzip2 or xz (``.warc.zst``,
    ``.jsonl.zst``, ``.jsonl.bz2``, ``.warc.xz``); the reader tells the compression by its magic bytes."""
    name = name_of(path)
    for suffix in _STREAM_SUFFIXES:
        if name.endswith(suffix):
            inner = name[: -len(suffix)]
            for plain, fmt in _SUFFIX_FORMATS:
                if inner.endswith(plain) and not plain.endswith(".gz") and fmt in _STREAM_FORMATS:
                    return fmt
            raise UserValueError(f"{path!r}: {suffix[1:]} compression is read for WARC, ARC, WET and JSONL files "
                             f"(e.g. .warc{suffix}, .jsonl{suffix}), not for this file type")
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in _SUFFIX_FORMATS)
    raise UserValueError(f"cannot tell the input format of {path!r} from its name (known endings: {known})")


def is_path_list(path: str) -> bool:
    """True for a Common Crawl style list of paths (``warc.paths.gz``, ``x.paths``)."""
    return name_of(path).endswith(_PATH_LIST_SUFFIXES)


def is_supported(path: str) -> bool:
    try:
        detect_format(path)
    except ValueError:
        return False
    return True


def _walk_folder(folder: str) -> List[str]:
    """Supported input files under ``folder`` (recursively, hidden entries skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if not name.startswith((".", "_")) and is_supported(name) and not is_path_list(name):
                found.append(os.path.join(root, name))
    return sorted(found)


def read_path_list(path: str, base_url: str = DEFAULT_COMMONCRAWL_BASE_URL) -> List[str]:
    """Entries of a Common Crawl path list, each prefixed with ``base_url`` unless it is a full URL."""
    with open_input(path) as fh:
        data = fh.read()
    if data[:2] == GZIP_MAGIC[:2]:
        data = inflate_all(data, path)
    base = base_url if base_url.endswith("/") else base_url + "/"
    entries = []
    for raw_line in data.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        entry = line if "://" in line else base + line.lstrip("/")
        if not is_supported(entry):
            raise UserValueError(f"path list {path!r} names {line!r}, which is not a supported input format")
        entries.append(entry)
    if not entries:
        raise UserValueError(f"path list {path!r} is empty")
    return entries


def _expand_matches(paths: Iterable[str], base_url: str) -> List[str]:
    out: List[str] = []
    for p in paths:
        if is_path_list(p):
            out.extend(read_path_list(p, base_url))
        elif not (is_http_url(p) or is_filesystem_url(p)) and os.path.isdir(p):
            out.extend(_walk_folder(p))
        elif is_supported(p):
            out.append(p)
    return out


def _expand_pattern(pattern: str, base_url: str) -> List[str]:
    if is_http_url(pattern):
        if is_path_list(pattern):
            return read_path_list(pattern, base_url)
        detect_format(pattern)  # an unsupported name is an error now, not deep inside the pipeline
        return [pattern]
    if is_filesystem_url(pattern):
        return _expand_matches(match_filesystem_pattern(pattern), base_url)
    local = local_path(pattern)
    if glob.has_magic(local):
        return _expand_matches(sorted(glob.glob(local, recursive=True)), base_url)
    if os.path.isdir(local):
        return _walk_folder(local)
    if os.path.isfile(local):
        if is_path_list(local):
            return read_path_list(local, base_url)
        detect_format(local)
        return [local]
    raise UserValueError(f"input {pattern!r} does not exist")


def expand_inputs(
    patterns: Union[str, List[str]], *, commoncrawl_base_url: str = DEFAULT_COMMONCRAWL_BASE_URL
) -> List[str]:
    """Input files named by ``patterns`` (files, folders, globs, remote patterns, URLs, path lists).

    Folders give every supported file inside (recursively, sorted); globs and remote patterns give their
    sorted matches; ``*.paths(.gz)`` lists give their entries prefixed with ``commoncrawl_base_url``.
    Duplicates are dropped (first occurrence kept). A pattern that yields no file is a ValueError.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out: List[str] = []
    seen = set()
    for pattern in patterns:
        found = _expand_pattern(str(pattern), commoncrawl_base_url)
        if not found:
            raise UserValueError(
                f"input {pattern!r} matches no supported input file "
                f"(supported: WARC/ARC/WET, JSONL, Parquet, Arrow; or a *.paths.gz list)"
            )
        for p in found:
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out
