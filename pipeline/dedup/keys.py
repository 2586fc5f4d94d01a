"""What every dedup stage uses to identify, order and check documents: node ids, keep rules, choices.

- ``node_id(doc_key)``: the 16-byte BLAKE2b id a document has in every dedup shuffle (MinHash graph,
  substring marks, batch shards), so a node is 16 bytes instead of a long key; collisions need ~2^64
  documents.
- ``priority_of(doc, keep)``: the sort key of "which copy stays" (smallest wins), shared by exact, URL
  and MinHash dedup; ``KEEP_RULES`` are its rules.
- ``check_choice``: the parameter check of the dedup stages' enumerated options.
- ``METRICS_NAMESPACE``: the Beam metrics namespace of every dedup diagnostic; ``SHARDS``: the default
  number of shards of the batches that travel through the dedup shuffles (``pipeline.dedup.packed``).

No Beam and no numba here: the stage registry imports this module when it loads pipelines.yaml.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Tuple

from pipeline.document import Document, doc_key
from pipeline.stages.base import ParamError

METRICS_NAMESPACE = "webrefinery.dedup"

KEEP_RULES = ("lowest_key", "earliest_date", "longest")

SHARDS = 256  # default shards of the dedup batches (how work is spread over workers, never a result)


def node_id(key: str) -> bytes:
    """The 16-byte node id of a document key (what the dedup shuffles store instead of the key)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def priority_of(doc: Document, keep: str) -> Tuple:
    """Sort key of a document for 'which copy to keep' (smallest wins; doc_key breaks ties, and is
    always the last item).

    keep = "lowest_key": the lowest doc_key; "earliest_date": the earliest ``warc_date`` (missing dates
    last); "longest": the longest text.
    """
    key = doc_key(doc)
    if keep == "lowest_key":
        return (key,)
    if keep == "earliest_date":
        date = doc.get("warc_date")
        return (date is None or date == "", date or "", key)
    if keep == "longest":
        return (-len(doc.get("text") or ""), key)
    raise ValueError(f"unknown keep rule {keep!r}; expected lowest_key, earliest_date or longest")


def check_choice(stage: str, key: str, value, choices: Iterable) -> None:
    """Raise ParamError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ParamError(f"stage '{stage}': '{key}' = {value!r} must be one of {', '.join(map(str, choices))}")
