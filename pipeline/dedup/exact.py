"""Exact document dedup and URL dedup as Beam transforms: keep one document per group key.

``GroupDedup`` is the shared shape: every document gets a group key (or None: not grouped, kept);
a GroupByKey collects each group (values: the document's priority and the document as compact bytes,
``packed.pack_document``: one shuffle of the documents, and no decoded dicts waiting in it); the
document with the smallest priority (``lsh.priority_of``: lowest ``doc_key``, or earliest
``warc_date`` then key, or longest text) is kept, every other one is
rejected with ``"<stage>:duplicate"``. Every grouped document (kept or rejected) records the group's
size in ``<stage>_group_size`` (int32).

- **exact_dedup**: key = 128-bit BLAKE2b of the text after ``normalization``:
  ``"full"`` = the MinHash rule of ``normalize.normalize_text`` (NFKC, lower case, punctuation and
  symbols removed, digits -> 0, whitespace collapsed; CCNet's paragraph normalization applied to the
  whole document), ``"whitespace"`` = runs of white space collapsed and ends stripped, ``"none"`` =
  the raw text.
- **url_dedup**: key = the URL, normalized when ``normalize_url``: surrounding white space removed,
  scheme and host lower-cased, the ``#fragment`` dropped (everything else, path case and query
  included, is kept: ``/A`` and ``/a`` are different pages on many servers). Documents without a URL
  are kept and not grouped.

The group is read twice (find the winner, then emit), which Beam's GroupByKey allows; one group's
documents go to one worker, so a single key holding millions of copies is slow but bounded by
memory only on runners that materialize groups (the in-process runner does).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import apache_beam as beam

from pipeline.dedup.lsh import priority_of
from pipeline.dedup.normalize import normalized_bytes
from pipeline.dedup.packed import pack_document, unpack_document
from pipeline.document import Document, text_of
from pipeline.stages.base import error_reason, reason

NORMALIZATIONS = ("full", "whitespace", "none")
_WS = re.compile(r"\s+")

REJECTED_TAG = "rejected"
UNGROUPED_TAG = "ungrouped"


def text_key(text: str, normalization: str = "full") -> bytes:
    """The exact-dedup group key of a text: 16-byte BLAKE2b of its normalized form."""
    if normalization == "full":
        data = normalized_bytes(text)
    elif normalization == "whitespace":
        data = _WS.sub(" ", text).strip().encode("utf-8", "surrogatepass")
    elif normalization == "none":
        data = text.encode("utf-8", "surrogatepass")
    else:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
    return hashlib.blake2b(data, digest_size=16).digest()


def normalize_url(url: str) -> str:
    """URL for dedup: stripped, scheme and host lower-case, no fragment (see the module docstring)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 literal: dedup on the raw string
        return url
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


class _KeyDoFn(beam.DoFn):
    """Doc -> (group key, (priority, packed doc)); ``ungrouped`` when the key is None; dead letters."""

    def __init__(self, stage: str, key_fn: Callable[[Document], Optional[bytes | str]], keep: str):
        self.stage, self.key_fn, self.keep = stage, key_fn, keep

    def process(self, doc):
        try:
            key = self.key_fn(doc)
            value = None if key is None else (priority_of(doc, self.keep), pack_document(doc))
        except Exception as exc:  # a dead letter, never a crashed run
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, error_reason(self.stage, exc)))
            return
        if key is None:
            yield beam.pvalue.TaggedOutput(UNGROUPED_TAG, doc)
        else:
            yield (key, value)


class _KeepOneDoFn(beam.DoFn):
    """(key, [(priority, packed doc)]) -> the smallest-priority doc (main output) and the others (rejected, duplicate)."""

    def __init__(self, stage: str, size_column: str):
        self.stage, self.size_column = stage, size_column
        self.why = reason(stage, "duplicate")

    def process(self, element):
        _, members = element
        best_index, best_priority, size = -1, None, 0
        for i, (priority, _) in enumerate(members):
            if best_priority is None or priority < best_priority:
                best_index, best_priority = i, priority
            size += 1
        for i, (_, blob) in enumerate(members):
            doc = unpack_document(blob)
            doc[self.size_column] = size
            if i == best_index:
                yield doc
            else:
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, self.why))


class GroupDedup(beam.PTransform):
    """Docs -> (kept, rejected): one document kept per group key (None key: kept, not grouped)."""

    def __init__(self, stage: str, key_fn: Callable[[Document], Optional[bytes | str]], keep: str, size_column: str):
        super().__init__()
        self.stage, self.key_fn, self.keep, self.size_column = stage, key_fn, keep, size_column

    def expand(self, docs):
        keyed = docs | "Key" >> beam.ParDo(_KeyDoFn(self.stage, self.key_fn, self.keep)).with_output_types(Tuple[Any, Any]).with_outputs(
            REJECTED_TAG, UNGROUPED_TAG, main="keyed"
        )
        picked = (
            keyed.keyed
            | "Group" >> beam.GroupByKey()
            | "KeepOne" >> beam.ParDo(_KeepOneDoFn(self.stage, self.size_column)).with_outputs(REJECTED_TAG, main="kept")
        )
        kept = (picked.kept, keyed[UNGROUPED_TAG]) | "FlattenKept" >> beam.Flatten()
        rejected = (picked[REJECTED_TAG], keyed[REJECTED_TAG]) | "FlattenRejected" >> beam.Flatten()
        return kept, rejected


class TextKey:
    """Picklable key function: exact-dedup key of a document's text."""

    def __init__(self, normalization: str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
        self.normalization = normalization

    def __call__(self, doc: Document) -> bytes:
        return text_key(text_of(doc), self.normalization)


class UrlKey:
    """Picklable key function: the (normalized) URL of a document, None when it has none."""

    def __init__(self, normalize: bool):
        self.normalize = normalize

    def __call__(self, doc: Document) -> Optional[str]:
        url = doc.get("url")
        if url is None or (isinstance(url, str) and not url.strip()):
            return None
        if not isinstance(url, str):
            raise TypeError(f"url is {type(url).__name__}, not str")
        return normalize_url(url) if self.normalize else url


def exact_dedup(stage: str = "exact_dedup", normalization: str = "full", keep: str = "lowest_key") -> GroupDedup:
    """The exact (normalized-text) dedup transform."""
    return GroupDedup(stage, TextKey(normalization), keep, f"{stage}_group_size")


def url_dedup(stage: str = "url_dedup", normalize: bool = True, keep: str = "earliest_date") -> GroupDedup:
    """The URL dedup transform."""
    return GroupDedup(stage, UrlKey(normalize), keep, f"{stage}_group_size")
