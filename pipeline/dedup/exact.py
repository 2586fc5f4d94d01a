"""Exact document dedup and URL dedup as Beam transforms: keep one document per group key.

``GroupDedup`` is the shared shape: every document gets a group key (or None: not grouped, kept; it
travels through the shuffle all the same, so that all kept documents come out of one DoFn, and a
document that cannot go through a shuffle as JSON is a dead letter whether or not it has a key);
each document travels once, as one ``[group key, priority, document]`` record (``packed.pack_record``)
in a record batch of its key's shard (``packed.key_shard``), and a GroupByKey on the shard brings every
group's records together: one Beam element per shard and batch, not per document, and no decoded dicts
waiting in the shuffle. The document with the smallest priority (``keys.priority_of``: lowest ``doc_key``, or earliest
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

One shard's records are decoded together and grouped by key in a dict (a shard holds ~1/256 of the
documents); one group's documents go to one worker, so a single key holding millions of copies is slow
and bounded by that worker's memory.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from pipeline.dedup.keys import SHARDS, priority_of
from pipeline.dedup.normalize import normalized_bytes
from pipeline.dedup.packed import RecordBatches, key_shard, pack_record, records_of
from pipeline.dedup.stages import NORMALIZATIONS
from pipeline.document import Document, text_of
from pipeline.stages.base import error_reason, reason

_WS = re.compile(r"\s+")

REJECTED_TAG = "rejected"


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
    return key_of_bytes(data)


def key_of_bytes(data: bytes) -> bytes:
    """The exact-dedup group key of a text's (normalized) bytes: their 16-byte BLAKE2b."""
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
    """Doc -> (shard, record batch of [group key, priority, doc]); a document without a group key travels as
    [None, None, doc] (round robin over the shards), so that every kept document comes out of
    ``_KeepOneDoFn`` (a Flatten of two kept streams would make the in-process runner encode and decode
    every document once more); dead letters. Batches are emitted when full and at the end of the bundle."""

    def __init__(self, stage: str, key_fn: Callable[[Document], Optional[bytes | str]], keep: str, shards: int):
        self.stage, self.key_fn, self.keep, self.shards = stage, key_fn, keep, shards

    def start_bundle(self):
        self.out = RecordBatches()
        self.next_shard = 0

    def process(self, doc):
        try:
            key = self.key_fn(doc)
            if key is None:
                record = pack_record([None, None, doc])
                shard = self.next_shard = (self.next_shard + 1) % self.shards
            else:
                record = pack_record([key.hex() if isinstance(key, bytes) else key, priority_of(doc, self.keep), doc])
                shard = key_shard(key, self.shards)
        except Exception as exc:  # a dead letter, never a crashed run
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, error_reason(self.stage, exc)))
            return
        full = self.out.add(shard, record)
        if full:
            yield full

    def finish_bundle(self):
        for batch in self.out.flush():
            yield GlobalWindows.windowed_value(batch)


class _KeepOneDoFn(beam.DoFn):
    """(shard, record batches) -> per group key, the smallest-priority doc (main output; the first one on a
    tie) and the others (rejected, duplicate); documents without a group key as they are."""

    def __init__(self, stage: str, size_column: str):
        self.stage, self.size_column = stage, size_column
        self.why = reason(stage, "duplicate")

    def process(self, element):
        groups: Dict[str, List] = {}
        for key, priority, doc in records_of(element[1]):
            if key is None:
                yield doc
            else:
                groups.setdefault(key, []).append((priority, doc))
        for members in groups.values():
            best_index, best_priority = 0, members[0][0]
            for i, (priority, _) in enumerate(members):
                if priority < best_priority:
                    best_index, best_priority = i, priority
            for i, (_, doc) in enumerate(members):
                doc[self.size_column] = len(members)
                if i == best_index:
                    yield doc
                else:
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, (doc, self.why))


class GroupDedup(beam.PTransform):
    """Docs -> (kept, rejected): one document kept per group key (None key: kept, not grouped)."""

    def __init__(self, stage: str, key_fn: Callable[[Document], Optional[bytes | str]], keep: str, size_column: str,
                 shards: int = SHARDS):
        super().__init__()
        self.stage, self.key_fn, self.keep, self.size_column, self.shards = stage, key_fn, keep, size_column, shards

    def expand(self, docs):
        keyed = docs | "Key" >> beam.ParDo(_KeyDoFn(self.stage, self.key_fn, self.keep, self.shards)).with_output_types(Tuple[int, bytes]).with_outputs(
            REJECTED_TAG, main="keyed"
        )
        picked = (
            keyed.keyed
            | "Group" >> beam.GroupByKey()
            | "KeepOne" >> beam.ParDo(_KeepOneDoFn(self.stage, self.size_column)).with_outputs(REJECTED_TAG, main="kept")
        )
        rejected = (picked[REJECTED_TAG], keyed[REJECTED_TAG]) | "FlattenRejected" >> beam.Flatten()
        return picked.kept, rejected


class TextKey:
    """Picklable key function: exact-dedup key of a document's text."""

    def __init__(self, normalization: str):
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


def exact_dedup(stage: str, params) -> GroupDedup:
    """The exact (normalized-text) dedup transform of ``ExactDedupParams``."""
    params.validate()
    return GroupDedup(stage, TextKey(params.normalization), params.keep, f"{stage}_group_size")


def url_dedup(stage: str, params) -> GroupDedup:
    """The URL dedup transform of ``UrlDedupParams``."""
    params.validate()
    return GroupDedup(stage, UrlKey(params.normalize_url), params.keep, f"{stage}_group_size")
